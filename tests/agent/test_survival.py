"""The agent as a real process: ``kill -9`` it while microVMs run, start it
again on the same state directory, and carry on (listed, attachable,
controllable); a microVM that died meanwhile shows as stopped with its exit
status. A published port and the guest agent state come back with the agent.
Also: SIGTERM shuts the agent down without stopping microVMs."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from fc_macos.agent.settings import AgentSettings
from fc_macos.firecracker.launcher import proc_start_time
from tests.helpers.agent import (
    AUTH,
    GUEST_BOOT_ARGS,
    SHELL_PROMPT,
    ConsoleReader,
    RestartableAgent,
    free_port,
    kill_recorded_vmms,
    live_processes_mentioning,
)

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]


async def fetch(url: str) -> bytes:
    async with aiohttp.ClientSession() as plain, plain.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


@pytest.fixture
def token_file(short_tmp: Path) -> Path:
    path = short_tmp / "token"
    path.write_text(AUTH["Authorization"].split()[1] + "\n")
    return path


@pytest.fixture
def agent(guest_settings: AgentSettings, token_file: Path, short_tmp: Path) -> Iterator[RestartableAgent]:
    proc = RestartableAgent(guest_settings, token_file, short_tmp / "agent.log")
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill(signal.SIGKILL)
    kill_recorded_vmms(guest_settings.state_dir)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def console_answers(session: aiohttp.ClientSession, agent: RestartableAgent, name: str) -> None:
    async with session.ws_connect(f"{agent.url}/v1/microvms/{name}/console?scrollback=0") as ws:
        reader = ConsoleReader(ws)
        await reader.run(f"echo hello from {name}")
        await ws.close()


async def test_agent_killed_with_9_and_restarted_keeps_microvms(
    agent: RestartableAgent, session: aiohttp.ClientSession, guest_settings: AgentSettings
) -> None:
    await agent.start()
    created = []
    port = free_port()
    for name in ("keep-a", "keep-b", "doomed"):
        spec: dict[str, object] = {"name": name, "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS}
        if name == "keep-a":  # a published port to a web server in the guest, and its guest agent
            spec |= {"ports": [{"host_port": port, "guest_port": 8080, "host_addr": "127.0.0.1"}],
                     "wait": "guest_agent", "wait_timeout_s": 300}
        resp = await session.post(agent.url + "/v1/microvms", json=spec)
        assert resp.status == 201, await resp.text()
        created.append(await resp.json())
    pids = {vm["name"]: vm["pid"] for vm in created}
    for name in ("keep-a", "keep-b"):
        async with session.ws_connect(f"{agent.url}/v1/microvms/{name}/console") as ws:
            await ConsoleReader(ws).wait_for(SHELL_PROMPT, poke=b"\n")
    served = "mkdir -p /tmp/w && echo served > /tmp/w/x && busybox httpd -p 8080 -h /tmp/w"
    resp = await session.post(f"{agent.url}/v1/microvms/keep-a/exec", json={"argv": ["sh", "-c", served]})
    assert (await resp.json())["exit_code"] == 0
    assert await fetch(f"http://127.0.0.1:{port}/x") == b"served\n"

    assert agent.kill(signal.SIGKILL) == -signal.SIGKILL
    # While the agent is away: the guests keep running, one VMM dies.
    os.kill(pids["doomed"], signal.SIGKILL)
    for name in ("keep-a", "keep-b"):
        assert proc_start_time(pids[name]) is not None

    await agent.start()
    listed = {vm["name"]: vm for vm in (await (await session.get(agent.url + "/v1/microvms")).json())["microvms"]}
    assert set(listed) == {"keep-a", "keep-b", "doomed"}
    for name in ("keep-a", "keep-b"):
        assert listed[name]["state"] == "running" and listed[name]["pid"] == pids[name]
    assert listed["doomed"]["state"] == "stopped"
    assert listed["doomed"]["exit_status"] == 128 + signal.SIGKILL

    # attachable: the console still answers
    for name in ("keep-a", "keep-b"):
        await console_answers(session, agent, name)
    # the published port is back, and the guest agent state is found again by polling
    assert listed["keep-a"]["ports"] == [{"host_port": port, "guest_port": 8080, "host_addr": "127.0.0.1"}]
    assert await fetch(f"http://127.0.0.1:{port}/x") == b"served\n"
    for _ in range(120):
        keep_a = await (await session.get(f"{agent.url}/v1/microvms/keep-a")).json()
        if keep_a["guest_agent"]["state"] == "ready":
            break
        await asyncio.sleep(0.5)
    assert keep_a["guest_agent"]["state"] == "ready" and keep_a["guest_agent"]["ready_s"] > 0, keep_a
    resp = await session.post(f"{agent.url}/v1/microvms/keep-a/exec", json={"argv": ["echo", "still here"]})
    assert (await resp.json())["stdout"] == "still here\n"
    # controllable: the raw API and stop
    resp = await session.get(f"{agent.url}/v1/microvms/keep-a/firecracker/")
    assert resp.status == 200 and (await resp.json())["state"] == "Running"
    resp = await session.post(f"{agent.url}/v1/microvms/keep-a/stop", json={"timeout_s": 60})
    assert (await resp.json())["state"] == "stopped"
    with pytest.raises(OSError):  # its port is freed with the stop
        await asyncio.open_connection("127.0.0.1", port)

    # SIGTERM: the agent exits cleanly and leaves the running microVM alone
    assert agent.kill(signal.SIGTERM) == 0
    assert proc_start_time(pids["keep-b"]) is not None
    await agent.start()
    await console_answers(session, agent, "keep-b")
    resp = await session.post(f"{agent.url}/v1/microvms/keep-b/stop", json={"force": True})
    assert (await resp.json())["exit_status"] == 128 + signal.SIGKILL

    for name in ("keep-a", "keep-b", "doomed"):
        assert (await session.delete(f"{agent.url}/v1/microvms/{name}")).status == 204
    assert live_processes_mentioning(str(guest_settings.microvms_dir)) == []
    assert list(guest_settings.microvms_dir.iterdir()) == []
