"""A microVM's lifecycle with real guests (the test VMM, QEMU underneath): a
stopped microVM starts again on its own disk and its writable drive's copy
(what it wrote is still there),
a running one is refused a start and restarts; a snapshot of it is listed
with its maker and its restore refused while the maker runs; and a guest whose
kernel cannot mount its root panics and is reported failed with the console's
last lines; a microVM with a network starts again on the same address.
Slow: marked ``guest``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.network import tap_exists
from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, GUEST_BOOT_ARGS, needs_net_admin, served
from tests.helpers.guest_images import images_without_initrd

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]

WAIT = {"wait": "guest_agent", "wait_timeout_s": 300}


async def exec_out(client: TestClient, name: str, command: str) -> str:
    resp = await client.post(f"/v1/microvms/{name}/exec", json={"argv": ["sh", "-c", command]}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 200 and body["exit_code"] == 0, body
    return str(body["stdout"])


async def test_stop_start_restart_on_its_own_disk(guest_settings: AgentSettings, short_tmp: Path) -> None:
    extra = short_tmp / "extra"
    extra.mkdir()
    (extra / "data.img").write_bytes(b"\0" * (1024 * 1024))
    settings = replace(guest_settings, image_dirs=(*guest_settings.image_dirs, extra))
    async with served(settings) as client:
        resp = await client.post("/v1/microvms", headers=AUTH, json={
            "name": "life", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS,
            "drives": [{"id": "data", "path": "data.img"}], **WAIT})  # fmt: skip
        first = await resp.json()
        assert resp.status == 201, first
        await exec_out(client, "life", "echo kept > /root/mark && printf drive-kept > /dev/vdb && sync")
        copy = guest_settings.microvms_dir / "life" / "drive-data.img"
        assert first["spec"]["drives"] == [{"id": "data", "path": str(copy), "read_only": False}]

        # a snapshot of the paused guest: listed with its maker; its restore refused while the maker runs
        relay = "/v1/microvms/life/firecracker"
        assert (await client.patch(f"{relay}/vm", json={"state": "Paused"}, headers=AUTH)).status == 204
        snaps = guest_settings.snapshots_dir
        resp = await client.put(f"{relay}/snapshot/create", headers=AUTH, json={
            "snapshot_path": str(snaps / "l.snap"), "mem_file_path": str(snaps / "l.mem")})
        assert resp.status == 204, await resp.text()
        listed = (await (await client.get("/v1/snapshots", headers=AUTH)).json())["snapshots"]
        assert [(s["snapshot_path"], s["mem_path"], s["microvm"], s["disk_exists"]) for s in listed] == [
            (str(snaps / "l.snap"), str(snaps / "l.mem"), "life", True)]
        resp = await client.post("/v1/microvms", headers=AUTH,
                                 json={"name": "copy", "snapshot": {"snapshot_path": "l.snap", "mem_path": "l.mem"}})
        refused = await resp.json()
        assert resp.status == 409 and refused["error"] == "disk_in_use", refused
        assert "fc-macos microvm stop --name life" in refused["hint"]
        assert (await client.patch(f"{relay}/vm", json={"state": "Resumed"}, headers=AUTH)).status == 204

        # a running microVM cannot be started
        resp = await client.post("/v1/microvms/life/start", headers=AUTH)
        body = await resp.json()
        assert resp.status == 409 and body["error"] == "running" and "microvm restart --name life" in body["hint"]

        stopped = await (await client.post("/v1/microvms/life/stop", json={"force": True}, headers=AUTH)).json()
        assert stopped["state"] == "stopped"
        rootfs = guest_settings.microvms_dir / "life" / "rootfs.ext4"
        assert rootfs.is_file()  # stop keeps the disk

        resp = await client.post("/v1/microvms/life/start", json={"wait_timeout_s": 300}, headers=AUTH)
        again = await resp.json()
        assert resp.status == 200, again
        assert again["state"] == "running" and again["guest_agent"]["state"] == "ready"
        assert again["pid"] != first["pid"] and again["started_at"] > first["started_at"]
        assert again["vsock"] == first["vsock"] and again["spec"]["boot_args"] == first["spec"]["boot_args"]
        assert await exec_out(client, "life", "cat /root/mark") == "kept\n"  # its own disk, kept
        assert await exec_out(client, "life", "head -c 10 /dev/vdb") == "drive-kept"  # and its drive's copy
        assert (extra / "data.img").read_bytes() == b"\0" * (1024 * 1024)  # the user's image untouched
        assert (guest_settings.microvms_dir / "life" / "serial.log.1").stat().st_size > 0  # the first boot's console

        resp = await client.post("/v1/microvms/life/restart", json={"force": True, "wait_timeout_s": 300}, headers=AUTH)
        restarted = await resp.json()
        assert resp.status == 200, restarted
        assert restarted["state"] == "running" and restarted["pid"] != again["pid"]
        assert await exec_out(client, "life", "cat /root/mark") == "kept\n"


async def test_a_guest_that_panics_at_boot_is_failed_with_the_console_tail(
    guest_settings: AgentSettings, short_tmp: Path
) -> None:
    async with served(replace(guest_settings, image_dirs=(images_without_initrd(short_tmp / "bare"),))) as client:
        resp = await client.post("/v1/microvms", headers=AUTH,
                                 json={"name": "nope", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, **WAIT})
        body = await resp.json()
        assert resp.status == 422, body
        assert body["error"] == "boot_failed" and body["step"] == "wait_guest_agent"
        assert "Kernel panic" in body["message"] and "VFS: Unable to mount root fs" in body["message"]
        assert "Last console lines:" in body["message"]
        assert "--initrd" in body["hint"] and "root=" in body["hint"]
        info = await (await client.get("/v1/microvms/nope", headers=AUTH)).json()
        assert info["state"] == "failed" and info["pid"] is None
        assert "VFS: Unable to mount root fs" in info["error"]

        # started again without waiting: the panic is seen when the VMM ends (panic=1 reboots, the VMM exits)
        resp = await client.post("/v1/microvms/nope/start", json={"wait": None}, headers=AUTH)
        assert resp.status == 200 and (await resp.json())["state"] == "running"
        for _ in range(600):
            info = await (await client.get("/v1/microvms/nope", headers=AUTH)).json()
            if info["state"] != "running":
                break
            await asyncio.sleep(0.5)
        assert info["state"] == "failed" and "Kernel panic" in info["error"], info


@needs_net_admin
async def test_start_again_keeps_its_network_address(guest_settings: AgentSettings) -> None:
    async with served(guest_settings) as client:
        resp = await client.post("/v1/microvms", headers=AUTH, json={
            "name": "netlife", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, "network": True, **WAIT})
        first = await resp.json()
        assert resp.status == 201, first
        net = first["network"]
        assert (await client.post("/v1/microvms/netlife/stop", json={"force": True}, headers=AUTH)).status == 200
        resp = await client.post("/v1/microvms/netlife/start", json={"wait_timeout_s": 300}, headers=AUTH)
        again = await resp.json()
        assert resp.status == 200, again
        assert {k: again["network"][k] for k in ("tap", "guest_ip", "mac")} == {k: net[k] for k in ("tap", "guest_ip", "mac")}
        assert tap_exists(net["tap"])  # made again for this boot
        assert net["guest_ip"] in await exec_out(client, "netlife", "ip -4 addr show eth0")
        assert (await client.delete("/v1/microvms/netlife?force=true", headers=AUTH)).status == 204
        assert not tap_exists(net["tap"])
