"""A damaged or missing state.json, or a damaged record of one microVM, does
not stop the agent: every microVM whose record is readable comes back (a
running one reattached), the others are listed as ``damaged`` with the
reason and what to do, and their files stay until they are removed on
purpose. An agent upgraded from version 1 (every record in state.json)
keeps its microVMs, running ones included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.state import RECORD_NAME
from fc_macos.firecracker.launcher import proc_start_time
from tests.agent.test_app import error_of
from tests.helpers.agent import AUTH, kill_recorded_vmms, live_processes_mentioning, recorded_microvms, serve


class Agent:
    """The agent app over one state directory, restarted at will (its VMMs run on)."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.client: TestClient | None = None

    async def restart(self) -> TestClient:
        if self.client is not None:
            await self.client.close()
        self.client = await serve(self.settings)
        return self.client

    async def listed(self) -> dict[str, dict[str, object]]:
        assert self.client is not None
        resp = await self.client.get("/v1/microvms", headers=AUTH)
        assert resp.status == 200
        return {vm["name"]: vm for vm in (await resp.json())["microvms"]}


@pytest.fixture
async def agent(settings: AgentSettings) -> AsyncIterator[Agent]:
    agent = Agent(settings)
    try:
        yield agent
    finally:
        if agent.client is not None:
            await agent.client.close()
        kill_recorded_vmms(settings.state_dir)


async def live_and_parked(agent: Agent) -> int:
    """Create ``live`` (created: its VMM runs) and ``parked`` (stopped); live's VMM pid."""
    client = await agent.restart()
    for name in ("live", "parked"):
        resp = await client.post("/v1/microvms", json={"name": name, "start": False}, headers=AUTH)
        assert resp.status == 201, await resp.text()
    assert (await client.post("/v1/microvms/parked/stop", json={"force": True}, headers=AUTH)).status == 200
    pid = (await agent.listed())["live"]["pid"]
    assert isinstance(pid, int)
    return pid


async def test_damaged_index_and_record_cost_only_the_damaged_microvm(agent: Agent, settings: AgentSettings) -> None:
    pid = await live_and_parked(agent)
    start_time = proc_start_time(pid)
    settings.state_file.write_text("{torn")
    parked = settings.microvms_dir / "parked"
    (parked / RECORD_NAME).write_text('{"name": "parked", "sta')
    (parked / "rootfs.ext4").write_bytes(b"user data")

    client = await agent.restart()
    vms = await agent.listed()
    assert vms["live"]["state"] == "created" and vms["live"]["pid"] == pid and proc_start_time(pid) == start_time
    assert vms["parked"]["state"] == "damaged"
    error = str(vms["parked"]["error"])
    assert "not valid JSON" in error and str(parked) in error and "fc-macos microvm rm --name parked" in error
    assert (parked / "rootfs.ext4").read_bytes() == b"user data"
    assert settings.state_file.with_name("state.json.damaged").read_text() == "{torn"
    # the reattached microVM is controllable; the damaged one goes only when asked
    resp = await client.get("/v1/microvms/live/firecracker/", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["state"] == "Not started"
    await error_of(await client.post("/v1/microvms", json={"name": "parked"}, headers=AUTH), 409)
    assert (await client.delete("/v1/microvms/parked", headers=AUTH)).status == 204
    assert not parked.exists()
    assert set(await agent.listed()) == {"live"}


async def test_damaged_record_of_a_running_microvm_keeps_it_running_until_removed_with_force(
    agent: Agent, settings: AgentSettings
) -> None:
    pid = await live_and_parked(agent)
    (settings.microvms_dir / "live" / RECORD_NAME).unlink()
    settings.state_file.unlink()

    client = await agent.restart()
    vms = await agent.listed()
    assert vms["parked"]["state"] == "stopped"
    assert vms["live"]["state"] == "damaged" and "is missing" in str(vms["live"]["error"])
    assert "still runs" in str(vms["live"]["error"]) and str(pid) in str(vms["live"]["error"])
    assert proc_start_time(pid) is not None  # a guest that may be the user's is not killed on a guess
    body = await error_of(await client.delete("/v1/microvms/live", headers=AUTH), 409)
    assert body["error"] == "running" and "--force" in body["hint"]
    assert (await client.delete("/v1/microvms/live", params={"force": "true"}, headers=AUTH)).status == 204
    assert live_processes_mentioning(str(settings.microvms_dir / "live")) == []
    assert proc_start_time(pid) is None


async def test_an_agent_upgraded_from_one_state_json_keeps_its_microvms(agent: Agent, settings: AgentSettings) -> None:
    pid = await live_and_parked(agent)
    # what a version 1 agent leaves: every record in state.json, none beside the files
    records = recorded_microvms(settings.state_dir)
    old = {"version": 1, "next_index": 3, "microvms": records}
    for name in records:
        (settings.microvms_dir / name / RECORD_NAME).unlink()
    settings.state_file.write_text(json.dumps(old))

    client = await agent.restart()
    vms = await agent.listed()
    assert (vms["live"]["state"], vms["live"]["pid"]) == ("created", pid)
    assert vms["parked"]["state"] == "stopped"
    assert recorded_microvms(settings.state_dir) == records
    assert json.loads(settings.state_file.with_name("state.json.v1").read_text()) == old
    resp = await client.post("/v1/microvms", json={"start": False}, headers=AUTH)
    assert (await resp.json())["name"] == "microvm-3"  # the automatic names carry on
    stop = await client.post("/v1/microvms/live/stop", json={"force": True}, headers=AUTH)
    assert (await stop.json())["state"] == "stopped" and proc_start_time(pid) is None
