"""``fc-macos dashboard`` driven headless with Textual's pilot against the real
fc-agent (served in-process) and the test VMM as Firecracker. The microVMs are
created with ``start: false``: real VMM processes, listed and controllable, no
guest to boot."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input, Log

from fc_macos.agent.settings import AgentSettings
from fc_macos.cli.dashboard.app import DashboardApp
from fc_macos.cli.dashboard.source import DashboardSource
from fc_macos.config import AgentEndpoint
from tests.cli.dashboard_helpers import (
    SIZE, agent_settings, agent_url, create, dashboard, local_vm_status, rows, screen_text, select, state_of,
    until)
from tests.helpers.agent import AUTH, served

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def settings(short_tmp: Path) -> AgentSettings:
    return agent_settings(short_tmp)


def column(app: DashboardApp, name: str, header: str) -> str:
    from fc_macos.cli.dashboard.model import COLUMNS

    return rows(app).get(name, [""] * len(COLUMNS))[COLUMNS.index(header)]


async def test_shows_the_vm_the_agent_and_each_microvm(settings: AgentSettings) -> None:
    async with served(settings) as client:
        await create(client, "web", vcpus=2, memory_mib=128)
        await create(client, "db")
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: set(rows(app)) == {"web", "db"}, "both microVMs listed")
            web = rows(app)["web"]
            assert web[:4] == ["web", "created", "2", "128 MiB"]
            assert web[5].endswith("MiB")  # the VMM's RSS
            await until(pilot, lambda: f"CPUs     {os.cpu_count()}" in screen_text(app), "the host's CPUs shown")
            await until(pilot, lambda: "Quit" in screen_text(app).splitlines()[-1], "the footer")
            text = screen_text(app)
            assert "status   reachable" in text and "version  0.1.0" in text
            assert "state    running" in text and "address  127.0.0.1" in text
            assert "GiB" in text.split("memory", 1)[1].split("\n", 1)[0]  # memory used / total
            assert "load     " in text
            for key in ("Attach", "Log", "Stop", "Pause", "Delete", "New", "Filter", "Help", "Quit"):
                assert key in text.splitlines()[-1], key  # the footer
            await pilot.press("q")
        assert app.return_code == 0


async def test_stop_pause_and_delete_keys_act_on_the_selected_microvm(settings: AgentSettings) -> None:
    async with served(settings) as client:
        await create(client, "web")
        await create(client, "db")
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await select(pilot, "db")
            await pilot.press("s")
            await until(pilot, lambda: column(app, "db", "STATE") == "stopped", "db shown stopped")
            assert await state_of(client, "db") == "stopped" and await state_of(client, "web") == "created"

            await select(pilot, "web")  # a created microVM does not pause: the error and its hint show
            await pilot.press("p")
            await until(pilot, lambda: "only a running microVM pauses" in screen_text(app), "the pause refusal")
            assert "fc-macos actions start --name web" in screen_text(app)

            await pilot.press("d")
            await until(pilot, lambda: "Delete microVM web and its files?" in screen_text(app), "the confirmation")
            await pilot.press("s", "q")  # the dashboard's keys are off while the dialog is open
            await pilot.press("n")  # no: keep it
            await pilot.pause(0.5)
            assert await state_of(client, "web") == "created"
            await pilot.press("d")
            await until(pilot, lambda: "Delete microVM web" in screen_text(app), "the confirmation again")
            await pilot.press("y")
            await until(pilot, lambda: "web" not in rows(app), "web gone from the table")
            assert await state_of(client, "web") is None and list(rows(app)) == ["db"]


async def test_the_new_form_creates_a_microvm(settings: AgentSettings) -> None:
    async with served(settings) as client:
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: "none: press n to create one" in screen_text(app), "the empty table's hint")
            await pilot.press("n")
            await until(pilot, lambda: "New microVM" in screen_text(app), "the form")
            await pilot.press(*"api", "tab", "ctrl+a", "ctrl+k", *"2", "tab")
            assert app.focused is not None and app.focused.id == "memory"
            await pilot.press("ctrl+a", "ctrl+k", *"64", "tab")
            assert app.focused is not None and app.focused.id == "start"
            await pilot.press("space")  # do not boot it: only configure it
            await pilot.press("enter")
            await until(pilot, lambda: column(app, "api", "STATE") == "created", "api listed, configured")
            assert rows(app)["api"][:4] == ["api", "created", "2", "64 MiB"]

            await pilot.press("n")  # a bad value is refused in the form, which stays open
            await until(pilot, lambda: "New microVM" in screen_text(app), "the form again")
            await pilot.press("tab", "tab", "ctrl+a", "ctrl+k", *"1", "enter")
            await until(pilot, lambda: "memory_mib" in screen_text(app), "the form's error")
            await pilot.press("escape")
            await until(pilot, lambda: "New microVM" not in screen_text(app), "the form closed")
            assert list(rows(app)) == ["api"]


async def test_filter_shows_matching_names_or_states(settings: AgentSettings) -> None:
    async with served(settings) as client:
        for name in ("web-1", "web-2", "db"):
            await create(client, name)
        await client.post("/v1/microvms/web-2/stop", json={}, headers=AUTH)
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(rows(app)) == 3, "three microVMs")
            await pilot.press("slash", *"web")
            assert set(rows(app)) == {"web-1", "web-2"}
            await pilot.press("enter")  # the filter stays; the table has the keys again
            assert isinstance(app.focused, type(app.query_one("#table")))
            await pilot.pause(1.5)  # refreshes keep the filter
            assert set(rows(app)) == {"web-1", "web-2"} and "filter: web" in screen_text(app)
            await pilot.press("slash", "ctrl+a", "ctrl+k", *"stopped", "enter")
            assert list(rows(app)) == ["web-2"]
            await pilot.press("escape")
            assert len(rows(app)) == 3 and not app.query_one("#filter", Input).value


async def test_help_opens_and_closes_and_ctrl_c_quits(settings: AgentSettings) -> None:
    async with served(settings) as client:
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            await until(pilot, lambda: "Ctrl+] comes back" in screen_text(app) and "follow its console log"
                        in screen_text(app), "the help")
            await pilot.press("x")
            await until(pilot, lambda: "follow its console log" not in screen_text(app), "the help closed")
            await pilot.press("ctrl+c")  # quits too, as people expect of a terminal program
            await until(pilot, lambda: app.return_code == 0, "the dashboard quit on Ctrl+C")


def _write_console(settings: AgentSettings, name: str, data: bytes) -> None:
    """Write as the VMM does: into the console output FIFO the agent reads."""
    fd = os.open(settings.microvms_dir / name / "console.out", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def test_l_follows_the_console_log_in_a_pane(settings: AgentSettings) -> None:
    async with served(settings) as client:
        await create(client, "web")
        _write_console(settings, "web", b"early line\r\n")
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE) as pilot:
            await select(pilot, "web")
            await pilot.press("l")
            pane = app.query_one("#log", Log)
            await until(pilot, lambda: "early line" in "\n".join(pane.lines), "the log's earlier lines")
            _write_console(settings, "web", b"\x1b[1mlive\x1b[0m line from the console\r\n")
            await until(pilot, lambda: "live line from the console" in "\n".join(pane.lines), "a new line followed")
            assert "\x1b" not in "".join(pane.lines) and "\r" not in "".join(pane.lines)
            assert "console log of web" in screen_text(app)
            await pilot.press("l")
            await until(pilot, lambda: "console log of web" not in screen_text(app), "the pane closed")


async def test_a_dead_agent_is_reported_and_the_screen_keeps_working(settings: AgentSettings) -> None:
    async with served(settings) as client:
        await create(client, "web")
        url = agent_url(client)
        app = dashboard(url)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "web" in rows(app), "web listed")
            await client.close()  # the agent goes away
            await until(pilot, lambda: "UNREACHABLE" in screen_text(app), "the agent reported unreachable")
            assert "cannot reach fc-agent" in screen_text(app)
            assert "web" in rows(app)  # the last figures stay ...
            await until(pilot, lambda: "(stale)" in screen_text(app), "... said to be stale")
            await pilot.press("question_mark")  # and the keys still work
            await until(pilot, lambda: "follow its console log" in screen_text(app), "the help")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung agent)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


async def test_a_hung_agent_does_not_freeze_the_screen(silent_server: str) -> None:
    app = dashboard(silent_server, timeout_s=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "no answer within 1s" in screen_text(app), "the hung agent reported")
        await pilot.press("slash", *"x")  # the screen answers meanwhile
        assert app.query_one("#filter", Input).value == "x"
        await pilot.press("escape", "q")


async def test_no_setup_says_what_to_do(short_tmp: Path) -> None:
    source = DashboardSource(endpoint=lambda: AgentEndpoint.load(short_tmp), vm_status=local_vm_status("-"))
    app = DashboardApp(source, lambda name: ["true"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "UNREACHABLE" in screen_text(app), "the missing setup reported")
        assert "fc-macos setup" in screen_text(app)


@pytest.mark.guest
@pytest.mark.timeout(900)
async def test_a_booted_guest_pauses_resumes_and_its_boot_log_follows(settings: AgentSettings) -> None:
    from dataclasses import replace

    from tests.agent.conftest import GUEST_BOOT_ARGS
    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    async with served(replace(settings, image_dirs=(images.kernel.parent,))) as client:
        await create(client, "guest", start=True, memory_mib=128, boot_args=GUEST_BOOT_ARGS)
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE) as pilot:
            await select(pilot, "guest")
            await until(pilot, lambda: column(app, "guest", "STATE") == "running"
                        and column(app, "guest", "UPTIME") != "-" and column(app, "guest", "CPU %") != "-",
                        "the running guest with its uptime and CPU %")
            await pilot.press("l")
            pane = app.query_one("#log", Log)
            await until(pilot, lambda: "Linux version" in "\n".join(pane.lines), "the guest's boot log", timeout=240)
            await pilot.press("p")  # PATCH /vm through the relay
            await until(pilot, lambda: column(app, "guest", "STATE") == "paused", "the guest paused")
            assert await state_of(client, "guest") == "paused"
            await pilot.press("p")
            await until(pilot, lambda: column(app, "guest", "STATE") == "running", "the guest resumed")
            await pilot.press("s")
            await until(pilot, lambda: column(app, "guest", "STATE") == "stopped", "the guest stopped", timeout=120)
            await until(pilot, lambda: "[end of log: guest is not running]" in "\n".join(pane.lines),
                        "the log pane saying the log ended")


async def test_enter_without_a_terminal_to_give_away_says_so(settings: AgentSettings) -> None:
    async with served(settings) as client:
        await create(client, "web")
        app = dashboard(agent_url(client))
        async with app.run_test(size=SIZE, notifications=True) as pilot:  # headless: nothing to suspend
            await select(pilot, "web")
            await pilot.press("enter")
            await until(pilot, lambda: "cannot attach the console here" in screen_text(app), "the refusal")
            assert "web" in rows(app)  # and the dashboard goes on
