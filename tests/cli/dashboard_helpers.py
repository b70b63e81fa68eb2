"""Helpers for driving the dashboard headless (Textual's pilot) against a real
fc-agent served in-process with the test VMM: the agent, microVMs that are
created but not booted (cheap: no guest), waiting on the screen, and the
screen as text."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from rich.console import Console
from textual.pilot import Pilot

from fc_macos.agent.settings import AgentSettings
from fc_macos.cli.dashboard.app import DashboardApp, MicroVMTable
from fc_macos.cli.dashboard.source import DashboardSource
from fc_macos.config import AgentEndpoint
from fc_macos.providers.base import VMStatus
from tests.helpers.agent import AUTH, TEST_VMM, TOKEN

SIZE = (130, 36)
WAIT_S = 30.0  # generous: two shared cores, several helpers


def agent_settings(root: Path) -> AgentSettings:
    """Settings of an agent under ``root`` whose images only suit microVMs that are
    configured, not started (enough for the VMM; no guest boots)."""
    images = root / "img"
    images.mkdir()
    (images / "vmlinux").write_bytes(b"not an ELF kernel\n")
    (images / "rootfs.ext4").write_bytes(b"\0" * 4096)
    return AgentSettings(token=TOKEN, state_dir=root / "state", firecracker_bin=str(TEST_VMM),
                         image_dirs=(images,), nat=False)


def local_vm_status(url: str) -> Callable[[], VMStatus]:
    """What the local provider reports for an agent on this machine (its own
    tests cover it; here the agent is served in-process instead of by it)."""
    return lambda: VMStatus(name="local", provider="local", exists=True, running=True, state="running",
                            address="127.0.0.1", agent_url=url, agent_ok=True)


def agent_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def create(client: TestClient, name: str, **spec: Any) -> dict[str, Any]:
    """A microVM configured but not booted (``start: false``): a VMM process, no guest."""
    resp = await client.post("/v1/microvms", json={"name": name, "start": False, **spec}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 201, body
    return body


async def state_of(client: TestClient, name: str) -> str | None:
    resp = await client.get(f"/v1/microvms/{name}", headers=AUTH)
    return None if resp.status == 404 else (await resp.json())["state"]


def dashboard(url: str, *, source_cls: type[DashboardSource] = DashboardSource, **kwargs: Any) -> DashboardApp:
    source = source_cls(endpoint=lambda: AgentEndpoint(url, TOKEN), vm_status=local_vm_status(url), **kwargs)
    return DashboardApp(source, lambda name: ["true"])


def rows(app: DashboardApp) -> dict[str, list[str]]:
    """The table as {name: cells}."""
    table = app.query_one(MicroVMTable)
    return {str(key.value): [str(cell) for cell in table.get_row(key)] for key in table.rows}


def screen_text(app: DashboardApp) -> str:
    """The screen as plain text, as a terminal would show it (what
    ``App.export_screenshot`` renders, without the SVG)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


async def until(pilot: Pilot[Any], check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Let the app run until ``check()`` holds; fail naming ``what`` and showing the screen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            app = pilot.app
            raise AssertionError(f"{what} did not happen; the screen:\n{screen_text(app)}")  # type: ignore[arg-type]
        await pilot.pause(0.1)


async def select(pilot: Pilot[Any], name: str) -> None:
    app = pilot.app
    assert isinstance(app, DashboardApp)
    await until(pilot, lambda: name in rows(app), f"{name} listed")
    table = app.query_one(MicroVMTable)
    table.focus()
    table.move_cursor(row=list(rows(app)).index(name))
    await pilot.pause()
    assert app.selected_name() == name
