"""Real guests through the agent and the test VMM (QEMU underneath): boot,
console, logs, raw API, stop and delete. Slow: marked ``guest``."""

from __future__ import annotations

import asyncio
import json
import secrets

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, GUEST_BOOT_ARGS, SHELL_PROMPT, ConsoleReader, kill_recorded_vmms, live_processes_mentioning, serve

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]


async def create(client: TestClient, **spec: object) -> dict:
    resp = await client.post("/v1/microvms", json={"memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, **spec}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 201, body
    return body


async def test_three_concurrent_guests_console_stop_delete(guest_settings: AgentSettings) -> None:
    client = await serve(guest_settings)
    try:
        created = await asyncio.gather(*(create(client) for _ in range(3)))
        names = sorted(vm["name"] for vm in created)
        assert names == ["microvm-1", "microvm-2", "microvm-3"]
        for vm in created:
            assert vm["state"] == "running" and vm["pid"] > 0
            assert vm["spec"]["kernel"].endswith("/vmlinux") and vm["spec"]["rootfs"].endswith("/rootfs.ext4")

        async def reach_prompt(name: str) -> ConsoleReader:
            ws = await client.ws_connect(f"/v1/microvms/{name}/console", headers=AUTH)
            reader = ConsoleReader(ws)
            await reader.wait_for(SHELL_PROMPT, poke=b"\n")
            return reader

        readers = await asyncio.gather(*(reach_prompt(n) for n in names))

        # uname and a random token come back over the console
        token = secrets.token_hex(8)
        first = readers[0]
        await first.ws.send_bytes(f"uname -a; echo {token}-$((1+1))\n".encode())
        await first.wait_for(rb"Linux fc-microvm \d+\.\d+")
        await first.wait_for(f"{token}-2".encode())

        # a second viewer of the same console sees the same output; resize is recorded, not typed
        second_ws = await client.ws_connect(f"/v1/microvms/{names[0]}/console?scrollback=0", headers=AUTH)
        second = ConsoleReader(second_ws)
        await second_ws.send_str(json.dumps({"type": "resize", "rows": 40, "cols": 120}))
        await second_ws.send_str("not json")
        control = await second_ws.receive()
        while control.type == aiohttp.WSMsgType.BINARY:  # live output may come first
            second.seen += control.data
            control = await second_ws.receive()
        assert control.type == aiohttp.WSMsgType.TEXT and json.loads(control.data)["type"] == "error"
        await first.ws.send_bytes(b"echo both-$((20+3))\n")
        await first.wait_for(b"both-23")
        await second.wait_for(b"both-23")
        assert token.encode() not in second.seen  # no scrollback replayed
        # detaching one viewer does not stop anything
        await second_ws.close()

        # status: pid, uptime, CPU and memory figures
        info = await (await client.get(f"/v1/microvms/{names[0]}", headers=AUTH)).json()
        assert info["state"] == "running"
        assert info["uptime_s"] > 0 and info["memory_rss_mib"] > 0 and info["cpu_percent"] is not None

        # the raw Firecracker API, relayed verbatim (status and body unchanged)
        resp = await client.get(f"/v1/microvms/{names[0]}/firecracker/machine-config", headers=AUTH)
        assert resp.status == 200
        assert (await resp.json())["mem_size_mib"] == 128
        resp = await client.put(f"/v1/microvms/{names[0]}/firecracker/boot-source", data=b'{"kernel_image_path": "x"}', headers=AUTH)
        assert resp.status == 400
        assert "not supported after starting" in (await resp.json())["fault_message"]

        # pausing through the raw API shows in the microVM's state
        resp = await client.patch(f"/v1/microvms/{names[0]}/firecracker/vm", json={"state": "Paused"}, headers=AUTH)
        assert resp.status == 204, await resp.text()
        assert (await (await client.get(f"/v1/microvms/{names[0]}", headers=AUTH)).json())["state"] == "paused"
        resp = await client.patch(f"/v1/microvms/{names[0]}/firecracker/vm", json={"state": "Resumed"}, headers=AUTH)
        assert resp.status == 204
        assert (await (await client.get(f"/v1/microvms/{names[0]}", headers=AUTH)).json())["state"] == "running"

        # logs: the serial log has what the guest printed
        logs = await (await client.get(f"/v1/microvms/{names[0]}/logs", headers=AUTH)).text()
        assert token in logs
        fc_log = await (await client.get(f"/v1/microvms/{names[0]}/logs?source=firecracker&tail=5", headers=AUTH)).text()
        assert 0 < fc_log.count("\n") <= 5

        # deleting a running microVM needs force
        resp = await client.delete(f"/v1/microvms/{names[2]}", headers=AUTH)
        assert resp.status == 409
        assert "force" in (await resp.json())["hint"]

        # follow ends when the microVM stops; a graceful stop (Ctrl+Alt+Del) exits 0
        follow = asyncio.create_task(client.get(f"/v1/microvms/{names[0]}/logs?follow=1&tail=0", headers=AUTH))
        await asyncio.sleep(0.5)
        resp = await client.post(f"/v1/microvms/{names[0]}/stop", json={"timeout_s": 60}, headers=AUTH)
        stopped = await resp.json()
        assert resp.status == 200, stopped
        assert stopped["state"] == "stopped" and stopped["exit_status"] == 0 and stopped["pid"] is None
        followed = await asyncio.wait_for(follow, 60)
        await asyncio.wait_for(followed.text(), 60)
        # viewers are told why the console closed
        closing = await first.ws.receive()
        while closing.type == aiohttp.WSMsgType.BINARY:  # output still queued before the close
            closing = await first.ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert "stopped" in str(closing.extra)

        # force stop kills at once; delete ?force=true stops and deletes
        resp = await client.post(f"/v1/microvms/{names[1]}/stop", json={"force": True}, headers=AUTH)
        assert (await resp.json())["exit_status"] == 137
        assert (await client.delete(f"/v1/microvms/{names[2]}?force=true", headers=AUTH)).status == 204
        for name in names[:2]:
            assert (await client.delete(f"/v1/microvms/{name}", headers=AUTH)).status == 204

        # nothing left: no processes, no files, no records
        assert live_processes_mentioning(str(guest_settings.state_dir)) == []
        assert list(guest_settings.microvms_dir.iterdir()) == []
        assert (await (await client.get("/v1/microvms", headers=AUTH)).json()) == {"microvms": []}
    finally:
        await client.close()
        kill_recorded_vmms(guest_settings.state_dir)


async def test_stop_without_ctrl_alt_del_sends_sigterm(guest_settings: AgentSettings) -> None:
    """On aarch64 there is no SendCtrlAltDel: stop goes straight to SIGTERM."""
    from dataclasses import replace

    client = await serve(replace(guest_settings, arch="aarch64"))
    try:
        vm = await create(client, name="arm-like")
        resp = await client.post("/v1/microvms/arm-like/stop", json={"timeout_s": 60}, headers=AUTH)
        stopped = await resp.json()
        assert stopped["state"] == "stopped"
        assert stopped["exit_status"] == 128 + 15  # the VMM died of SIGTERM (it installs no handler)
        assert live_processes_mentioning(str(guest_settings.microvms_dir)) == []
        assert vm["pid"] > 0
    finally:
        await client.close()
        kill_recorded_vmms(guest_settings.state_dir)
