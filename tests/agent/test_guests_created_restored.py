"""Real guests created without starting (``start: false``, then a relayed
InstanceStart) and restored from a snapshot (``snapshot``), through the agent
and the test VMM (QEMU underneath). Slow: marked ``guest``."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.app import MANAGER
from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, GUEST_BOOT_ARGS, SHELL_PROMPT, ConsoleReader, kill_recorded_vmms, serve

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]

START = {"action_type": "InstanceStart"}


def snapshot_loads(client: TestClient, name: str) -> list[str]:
    """The ``PUT /snapshot/load`` requests in the log of ``name``'s Firecracker (all its processes)."""
    log = client.app[MANAGER].paths(name).log.read_text()
    return [line for line in log.splitlines() if 'request on "/snapshot/load"' in line]


async def get(client: TestClient, name: str) -> dict:
    resp = await client.get(f"/v1/microvms/{name}", headers=AUTH)
    assert resp.status == 200
    return await resp.json()


async def test_created_microvm_takes_preboot_devices_then_starts(guest_settings: AgentSettings, short_tmp: Path) -> None:
    extra = short_tmp / "extra.img"
    extra.write_bytes(b"extra-disk\n" + b"\0" * (1024 * 1024))
    client = await serve(guest_settings)
    try:
        resp = await client.post("/v1/microvms", headers=AUTH, json={
            "name": "pre", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, "start": False})
        created = await resp.json()
        assert resp.status == 201, created
        assert created["state"] == "created" and created["started_at"] is None and created["pid"] > 0
        assert created["guest_agent"]["state"] == "starting"  # installed, waiting for the start

        # the console attaches before the start; the guest has printed nothing yet
        ws = await client.ws_connect("/v1/microvms/pre/console", headers=AUTH)
        reader = ConsoleReader(ws)

        relay = "/v1/microvms/pre/firecracker"
        resp = await client.put(f"{relay}/drives/extra", headers=AUTH, json={
            "drive_id": "extra", "path_on_host": str(extra), "is_root_device": False, "is_read_only": True})
        assert resp.status == 204, await resp.text()  # a pre-boot call: refused after the start
        resp = await client.patch(f"{relay}/machine-config", json={"vcpu_count": 2}, headers=AUTH)
        assert resp.status == 204, await resp.text()
        assert reader.seen == b""

        before = time.time()
        resp = await client.put(f"{relay}/actions", json=START, headers=AUTH)
        assert resp.status == 204, await resp.text()
        started = await get(client, "pre")
        assert started["state"] == "running" and started["started_at"] >= before
        # the record says what it started with, as Firecracker reports it
        assert started["vcpus"] == 2
        assert started["spec"]["drives"] == [{"id": "extra", "path": str(extra), "read_only": True}]
        # InstanceStart again: Firecracker's own 400 comes back unchanged, the state stays
        resp = await client.put(f"{relay}/actions", json=START, headers=AUTH)
        assert resp.status == 400
        assert (await resp.json())["fault_message"]
        assert (await get(client, "pre"))["state"] == "running"

        await reader.wait_for(SHELL_PROMPT, poke=b"\n")
        await ws.send_bytes(b"echo cpus-$(grep -c ^processor /proc/cpuinfo)-disks-$(ls /sys/block | tr '\\n' ,)\n")
        await reader.wait_for(rb"cpus-2-disks-[a-z0-9,]*vdb")  # the PATCHed vCPUs and the extra drive
        # the guest agent was polled from the relayed InstanceStart on: ready, and exec works
        for _ in range(240):
            if (await get(client, "pre"))["guest_agent"]["state"] == "ready":
                break
            await asyncio.sleep(0.5)
        ready = (await get(client, "pre"))["guest_agent"]
        assert ready["state"] == "ready" and ready["ready_s"] > 0, ready
        resp = await client.post("/v1/microvms/pre/exec", json={"argv": ["cat", "/sys/block/vdb/ro"]}, headers=AUTH)
        assert (await resp.json())["stdout"] == "1\n"

        # the agent goes away and comes back on the same state: the record (running,
        # started_at) was saved, and the microVM is reattached
        await client.close()
        client = await serve(guest_settings)
        again = await get(client, "pre")
        assert again["state"] == "running" and again["started_at"] == started["started_at"]
    finally:
        await client.close()
        kill_recorded_vmms(guest_settings.state_dir)


async def test_snapshot_round_trip_into_a_new_microvm(guest_settings: AgentSettings) -> None:
    client = await serve(guest_settings)
    marker = f"marker-{secrets.token_hex(4)}"
    try:
        # vsock: false, because the test VMM cannot keep the memory of a guest with a vsock
        # device across a snapshot (QEMU cannot migrate it: such a load cold-boots, see
        # tests/doubles/firecracker_vmm.py), and this test checks the memory.
        resp = await client.post("/v1/microvms", headers=AUTH, json={
            "name": "orig", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, "vsock": False})
        assert resp.status == 201, await resp.text()
        ws = await client.ws_connect("/v1/microvms/orig/console", headers=AUTH)
        reader = ConsoleReader(ws)
        await reader.wait_for(SHELL_PROMPT, poke=b"\n")
        await reader.run(f"export M={marker}")

        relay = "/v1/microvms/orig/firecracker"
        resp = await client.patch(f"{relay}/vm", json={"state": "Paused"}, headers=AUTH)
        assert resp.status == 204
        snapshots = guest_settings.snapshots_dir
        resp = await client.put(f"{relay}/snapshot/create", headers=AUTH, json={
            "snapshot_path": str(snapshots / "orig.snap"), "mem_file_path": str(snapshots / "orig.mem")})
        assert resp.status == 204, await resp.text()
        # The snapshot names the original's rootfs copy: stop the original (its files stay),
        # so that two guests never write one disk.
        resp = await client.post("/v1/microvms/orig/stop", json={"force": True}, headers=AUTH)
        assert (await resp.json())["state"] == "stopped"

        resp = await client.post("/v1/microvms", headers=AUTH, json={
            "name": "restored", "snapshot": {"snapshot_path": "orig.snap", "mem_path": "orig.mem", "resume": False}})
        restored = await resp.json()
        assert resp.status == 201, restored
        assert restored["state"] == "paused"
        assert (restored["vcpus"], restored["memory_mib"]) == (1, 128)  # from the snapshot, not the defaults
        assert restored["spec"]["snapshot"]["snapshot_path"] == str(snapshots / "orig.snap")
        assert restored["spec"]["rootfs"].endswith("/orig/rootfs.ext4")
        assert restored["vsock"] is None  # the snapshot had none
        # The agent's record knew that: one load and no vsock_override, which Firecracker
        # refuses for a snapshot without a vsock device (and so does the test VMM).
        listing = await (await client.get("/v1/snapshots", headers=AUTH)).json()
        assert [s["vsock"] for s in listing["snapshots"] if s["microvm"] == "orig"] == [False]
        loads = snapshot_loads(client, "restored")
        assert len(loads) == 1 and "vsock_override" not in loads[0], loads

        resp = await client.patch("/v1/microvms/restored/firecracker/vm", json={"state": "Resumed"}, headers=AUTH)
        assert resp.status == 204
        assert (await get(client, "restored"))["state"] == "running"
        ws2 = await client.ws_connect("/v1/microvms/restored/console", headers=AUTH)
        second = ConsoleReader(ws2)
        await ws2.send_bytes(b"echo got-$M-$((1+1))\n")
        await second.wait_for(f"got-{marker}-2".encode(), poke=None)

        # InstanceStart on a restored microVM is Firecracker's 400, relayed as is
        resp = await client.put("/v1/microvms/restored/firecracker/actions", json=START, headers=AUTH)
        assert resp.status == 400
        assert (await get(client, "restored"))["state"] == "running"

        # The same files under names no record knows: the agent cannot tell whether the
        # snapshot has a vsock device, tries the override, and after the refusal loads it in
        # a new Firecracker without it.
        resp = await client.post("/v1/microvms/restored/stop", json={"force": True}, headers=AUTH)
        assert (await resp.json())["state"] == "stopped"
        shutil.copyfile(snapshots / "orig.snap", snapshots / "byhand.snap")
        shutil.copyfile(snapshots / "orig.mem", snapshots / "byhand.mem")
        resp = await client.post("/v1/microvms", headers=AUTH, json={
            "name": "byhand", "snapshot": {"snapshot_path": "byhand.snap", "mem_path": "byhand.mem", "resume": False}})
        byhand = await resp.json()
        assert resp.status == 201, byhand
        assert byhand["state"] == "paused" and byhand["vsock"] is None
        loads = snapshot_loads(client, "byhand")
        assert len(loads) == 2 and "vsock_override" in loads[0] and "vsock_override" not in loads[1], loads
    finally:
        await client.close()
        kill_recorded_vmms(guest_settings.state_dir)
