"""No VMM outlives its record: the agent (a real process) is killed with -9 at
many points of several creates in flight, again and again, and started
again each time. Afterwards every VMM process on the machine that names one
of the agent's work directories belongs to a listed microVM, no microVM is
left ``starting``, and deleting every microVM leaves no VMM process at all.

The microVMs are created with ``start: false`` (the test VMM configured,
no guest booted), so a create takes a fraction of a second and the kill
lands anywhere in it: before the record, between the record and the VMM,
between the VMM and its pid in the record, during its configuration.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, RestartableAgent, kill_recorded_vmms, live_processes_mentioning

pytestmark = pytest.mark.timeout(300)

#: Seconds from the first create request to the kill, one round each.
KILL_DELAYS_S = (0.0, 0.02, 0.05, 0.08, 0.12, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6, 0.9, 1.5, 3.0)
CREATES_IN_FLIGHT = 6


@pytest.fixture
def agent(settings: AgentSettings, short_tmp: Path) -> Iterator[RestartableAgent]:
    token_file = short_tmp / "token"
    token_file.write_text(AUTH["Authorization"].split()[1] + "\n")
    proc = RestartableAgent(settings, token_file, short_tmp / "agent.log")
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill(signal.SIGKILL)
    kill_recorded_vmms(settings.state_dir)


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


async def listed(session: aiohttp.ClientSession, agent: RestartableAgent) -> list[dict[str, object]]:
    async with session.get(agent.url + "/v1/microvms") as resp:
        assert resp.status == 200
        return list((await resp.json())["microvms"])


def unaccounted(settings: AgentSettings, microvms: list[dict[str, object]]) -> list[str]:
    """Command lines of live processes naming a work directory that no listed
    microVM accounts for (its VMM, or the wrapper that is the VMM's parent)."""
    accounted: set[int] = set()
    for vm in microvms:
        pid = vm["pid"]
        if isinstance(pid, int):
            accounted.add(pid)
            wrapper = parent_of(pid)
            if wrapper is not None:
                accounted.add(wrapper)
    left = []
    for pid in live_processes_mentioning(str(settings.microvms_dir)):
        if pid not in accounted:
            try:
                left.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[-160:])
            except OSError:
                continue
    return left


async def create(session: aiohttp.ClientSession, agent: RestartableAgent, name: str) -> None:
    try:
        async with session.post(agent.url + "/v1/microvms", json={"name": name, "start": False, "memory_mib": 64}) as resp:
            await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass  # the agent was killed under it


async def test_agent_killed_at_any_point_of_creates_leaves_no_vmm_unaccounted(
    agent: RestartableAgent, settings: AgentSettings
) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=AUTH, timeout=timeout) as session:
        await agent.start()
        for round_no, delay in enumerate(KILL_DELAYS_S):
            creates = [
                asyncio.ensure_future(create(session, agent, f"r{round_no}-{i}")) for i in range(CREATES_IN_FLIGHT)
            ]
            await asyncio.sleep(delay)
            agent.kill(signal.SIGKILL)
            await asyncio.gather(*creates)
            await agent.start()
            microvms = await listed(session, agent)
            assert unaccounted(settings, microvms) == [], f"after a kill {delay}s into round {round_no}"
            assert [vm["name"] for vm in microvms if vm["state"] == "starting"] == []
            assert [vm["name"] for vm in microvms if vm["state"] == "damaged"] == []

        names = [str(vm["name"]) for vm in await listed(session, agent)]
        assert names, "no create ever got as far as its record: the kills came too early to test anything"
        for name in names:
            async with session.delete(f"{agent.url}/v1/microvms/{name}", params={"force": "true"}) as resp:
                assert resp.status == 204, await resp.text()
        assert await listed(session, agent) == []
    assert live_processes_mentioning(str(settings.microvms_dir)) == []
    assert list(settings.microvms_dir.iterdir()) == []
