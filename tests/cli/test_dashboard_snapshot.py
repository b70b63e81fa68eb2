"""A snapshot of the dashboard's screen, from the real agent and the test VMM,
compared with the stored one in ``tests/cli/snapshots/``.

Volatile figures (the agent's port, uptimes, pids, RSS, CPU %, the host's
memory, disk and load, the version) and the guest-side columns (address,
published ports, guest agent) are masked in the data, before drawing, so the
screen is the same on every run and machine. Two comparisons:

* the screen as text (``dashboard.txt``): always; robust to Textual's styling;
* the SVG screenshot (``dashboard.textual-X.Y.svg``): only under the Textual
  X.Y it was made with, since another Textual may draw the same screen with
  other colours or markup (the test says so and skips).

After a deliberate change of the screen, record it again with
``FC_MACOS_UPDATE_SNAPSHOTS=1 python3 -m pytest tests/cli/test_dashboard_snapshot.py``
and look at the SVG in a browser before committing it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path

import pytest
import textual

from fc_macos.agent.settings import AgentSettings
from fc_macos.cli.dashboard.model import Snapshot
from fc_macos.cli.dashboard.source import DashboardSource
from tests.cli.dashboard_helpers import SIZE, agent_settings, agent_url, create, dashboard, rows, screen_text, until
from tests.helpers.agent import AUTH, served

SNAPSHOTS = Path(__file__).parent / "snapshots"
TEXTUAL_MINOR = ".".join(textual.__version__.split(".")[:2])
SVG = SNAPSHOTS / f"dashboard.textual-{TEXTUAL_MINOR}.svg"
TEXT = SNAPSHOTS / "dashboard.txt"
UPDATE = os.environ.get("FC_MACOS_UPDATE_SNAPSHOTS") == "1"

pytestmark = pytest.mark.timeout(300)

MASKED_HOST = {
    "hostname": "fc-vm", "arch": "x86_64", "kernel": "6.1.0", "cpus": 4, "cpu_percent": 12.0,
    "load": [0.52, 0.41, 0.30], "uptime_s": 3600.0,
    "memory": {"total_mib": 4096.0, "used_mib": 1024.0, "available_mib": 3072.0},
    "disk": {"path": "/var/lib/fc-agent", "total_mib": 51200.0, "used_mib": 5120.0, "free_mib": 46080.0},
    "agent": {"version": "0.1.0", "pid": 4242, "started_at": 0.0, "uptime_s": 754.0},
}


#: What the web microVM shows in the columns that come from the guest side (network,
#: published ports, guest agent): set whether or not this agent reports them yet, so the
#: screen is the same before and after it does.
GUEST_SIDE = {
    "network": {"guest_ip": "172.16.0.2", "tap": "fc-tap-0"},
    "ports": [{"host_addr": "0.0.0.0", "host_port": 8080, "guest_port": 80}],
    "guest_agent": {"state": "ready", "version": "0.1.0", "ready_s": 1.5, "reason": None},
}


class MaskedSource(DashboardSource):
    """The real source, with every volatile figure replaced after each poll."""

    def _mask(self, snap: Snapshot) -> Snapshot:
        microvms = []
        for index, info in enumerate(snap.microvms):
            masked = dataclasses.replace(info, pid=1000 + index, memory_rss_mib=25.0 if info.pid else None,
                                         cpu_percent=0.5 if info.pid else None)
            for key, value in GUEST_SIDE.items():
                object.__setattr__(masked, key, value if info.name == "web" else None)
            microvms.append(masked)
        agent = dataclasses.replace(snap.agent, url="http://127.0.0.1:8642", version="0.1.0",
                                    uptime_s=754.0 if snap.agent.reachable else None)
        return dataclasses.replace(snap, agent=agent, host=MASKED_HOST if snap.host else None,
                                   microvms=tuple(microvms))

    async def poll_agent(self) -> Snapshot:
        self.snapshot = self._mask(await super().poll_agent())
        return self.snapshot


@pytest.fixture
def settings(short_tmp: Path) -> AgentSettings:
    return agent_settings(short_tmp)


async def _screen(settings: AgentSettings) -> tuple[str, str]:
    """(text, svg) of the dashboard showing two created microVMs and a stopped one."""
    async with served(settings) as client:
        await create(client, "web", vcpus=2, memory_mib=512)
        await create(client, "worker")
        await create(client, "old", memory_mib=128)
        resp = await client.post("/v1/microvms/old/stop", json={}, headers=AUTH)
        assert resp.status == 200
        app = dashboard(agent_url(client), source_cls=MaskedSource)
        async with app.run_test(size=SIZE) as pilot:
            def complete() -> bool:
                text = screen_text(app)
                drawn = all(re.search(rf"^│ {name} +{state} ", text, re.M)
                            for name, state in (("web", "created"), ("worker", "created"), ("old", "stopped")))
                return (len(rows(app)) == 3 and drawn and "CPUs     4" in text and "state    running" in text
                        and "Quit" in text.splitlines()[-1])

            await until(pilot, complete, "the full screen (VM, host, agent, microVMs, footer)")
            await pilot.pause(0.3)
            return screen_text(app), app.export_screenshot(title="fc-macos dashboard")


def _compare(path: Path, actual: str, tmp_path: Path) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"no stored snapshot {path}: record it with FC_MACOS_UPDATE_SNAPSHOTS=1")
    expected = path.read_text()
    if actual != expected:
        got = tmp_path / path.name
        got.write_text(actual)
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(), "stored", "now",
                                              lineterm=""))
        pytest.fail(f"the dashboard's screen differs from {path} (now: {got}); if the change is meant, "
                    f"record it with FC_MACOS_UPDATE_SNAPSHOTS=1\n{diff[:6000]}")


async def test_screen_matches_the_stored_text(settings: AgentSettings, tmp_path: Path) -> None:
    text, _ = await _screen(settings)
    _compare(TEXT, text + "\n", tmp_path)


async def test_screen_matches_the_stored_svg(settings: AgentSettings, tmp_path: Path) -> None:
    stored = sorted(SNAPSHOTS.glob("dashboard.textual-*.svg"))
    if not UPDATE and not SVG.exists() and stored:
        pytest.skip(f"the stored SVG was drawn by another Textual ({stored[-1].name}); this is {textual.__version__}: "
                    "the text snapshot still checks the screen; record a new SVG with FC_MACOS_UPDATE_SNAPSHOTS=1")
    _, svg = await _screen(settings)
    _compare(SVG, svg, tmp_path)
