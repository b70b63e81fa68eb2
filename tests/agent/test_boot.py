"""Boot steps against the test VMM (no guest needed): a failing step is named,
carries Firecracker's fault_message, and everything acquired is undone."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp.test_utils import TestClient

from fc_macos.agent.boot import DEFAULT_STEPS, describe
from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, kill_recorded_vmms, live_processes_mentioning, recorded_microvms, serve


def test_default_steps_are_the_documented_list() -> None:
    design = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    names = describe(DEFAULT_STEPS)
    assert names[0] == "validate_spec" and names[-1] == "start_instance"
    for name in names:
        assert f"`{name}`" in design, name


async def test_kernel_firecracker_refuses_fails_in_start_instance(client: TestClient, settings: AgentSettings) -> None:
    resp = await client.post("/v1/microvms", json={"name": "bad-kernel", "memory_mib": 64}, headers=AUTH)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["error"] == "boot_failed"
    assert body["step"] == "start_instance"
    assert "start_instance" in body["message"]
    assert "Kernel Loader" in body["fault_message"]
    assert body["fault_message"] in body["message"]
    # cleanup ran in reverse: no process, no work directory, no record
    assert live_processes_mentioning(str(settings.state_dir)) == []
    assert not (settings.microvms_dir / "bad-kernel").exists()
    assert recorded_microvms(settings.state_dir) == {}
    assert (await (await client.get("/v1/microvms", headers=AUTH)).json()) == {"microvms": []}


async def test_failed_boot_does_not_use_up_the_automatic_name(client: TestClient, settings: AgentSettings) -> None:
    for _ in range(2):
        resp = await client.post("/v1/microvms", json={"memory_mib": 64}, headers=AUTH)
        assert resp.status == 422
    # the next automatic name is still microvm-1
    assert json.loads(settings.state_file.read_text())["next_index"] == 1


async def test_missing_firecracker_binary_fails_in_validate_spec(settings: AgentSettings, short_tmp: Path) -> None:
    from dataclasses import replace

    client = await serve(replace(settings, firecracker_bin=str(short_tmp / "no-firecracker")))
    try:
        resp = await client.post("/v1/microvms", json={}, headers=AUTH)
        body = await resp.json()
        assert resp.status == 422
        assert body["step"] == "validate_spec"
        assert "--firecracker-bin" in body["hint"]
    finally:
        await client.close()


async def test_firecracker_that_exits_at_once_fails_in_start_vmm(settings: AgentSettings, short_tmp: Path) -> None:
    from dataclasses import replace

    fake = short_tmp / "broken-firecracker"
    fake.write_text("#!/bin/sh\necho 'cannot open /dev/kvm' >&2\nexit 1\n")
    fake.chmod(0o755)
    client = await serve(replace(settings, firecracker_bin=str(fake)))
    try:
        resp = await client.post("/v1/microvms", json={"name": "quick-exit"}, headers=AUTH)
        body = await resp.json()
        assert resp.status == 422, body
        assert body["step"] in ("start_vmm", "wait_api_socket")
        assert "cannot open /dev/kvm" in body["message"] or "status 1" in body["message"]
        assert not (settings.microvms_dir / "quick-exit").exists()
    finally:
        await client.close()


def test_plan_edits_the_step_list() -> None:
    from fc_macos.agent.boot import plan
    from fc_macos.agent.wire import MicroVMSpec, SnapshotSpec

    boot = describe(DEFAULT_STEPS)
    assert describe(plan(MicroVMSpec(vsock=False))) == boot
    assert describe(plan(MicroVMSpec(vsock=False, start=False))) == boot[:-1]
    # the default: the guest agent goes into the rootfs copy, the vsock device in before the start
    with_vsock = describe(plan(MicroVMSpec()))
    assert with_vsock == [*boot[:3], "install_guest_agent", *boot[3:-1], "attach_vsock", boot[-1]]
    assert describe(plan(MicroVMSpec(start=False))) == with_vsock[:-1]
    networked = describe(plan(MicroVMSpec(network=True)))
    assert networked.index("attach_network") < networked.index("configure_boot_source") < networked.index("attach_vsock")
    restore = describe(plan(MicroVMSpec(snapshot=SnapshotSpec("a.snap", "a.mem"))))
    assert restore == ["validate_spec", "resolve_snapshot", "prepare_workdir", "start_vmm", "wait_api_socket",
                       "load_snapshot"]
    design = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    for name in [*restore, *networked]:
        assert f"`{name}`" in design, name


async def test_created_microvm_takes_preboot_calls_then_stops_without_a_guest(
    client: TestClient, settings: AgentSettings, image_dir: Path
) -> None:
    (image_dir / "extra.img").write_bytes(b"\0" * 4096)
    resp = await client.post("/v1/microvms", json={"name": "pre", "start": False}, headers=AUTH)
    created = await resp.json()
    assert resp.status == 201, created
    assert created["state"] == "created" and created["pid"] > 0 and created["started_at"] is None
    assert recorded_microvms(settings.state_dir)["pre"]["state"] == "created"
    relay = "/v1/microvms/pre/firecracker"
    resp = await client.put(f"{relay}/drives/extra", headers=AUTH, json={
        "drive_id": "extra", "path_on_host": str(image_dir / "extra.img"), "is_root_device": False, "is_read_only": True})
    assert resp.status == 204, await resp.text()
    resp = await client.patch(f"{relay}/machine-config", json={"vcpu_count": 2}, headers=AUTH)
    assert resp.status == 204, await resp.text()
    # this image dir's 'vmlinux' is no kernel: Firecracker refuses the start, and the state stays
    resp = await client.put(f"{relay}/actions", json={"action_type": "InstanceStart"}, headers=AUTH)
    assert resp.status == 400 and "Kernel Loader" in (await resp.json())["fault_message"]
    assert (await (await client.get("/v1/microvms/pre", headers=AUTH)).json())["state"] == "created"
    # a created microVM needs --force to be deleted like a running one; stop kills it (no guest to ask)
    assert (await client.delete("/v1/microvms/pre", headers=AUTH)).status == 409
    resp = await client.post("/v1/microvms/pre/stop", json={"timeout_s": 60}, headers=AUTH)
    stopped = await resp.json()
    assert stopped["state"] == "stopped" and stopped["exit_status"] == 137, stopped
    assert (await client.delete("/v1/microvms/pre", headers=AUTH)).status == 204


async def test_snapshot_spec_refusals(client: TestClient, settings: AgentSettings, short_tmp: Path) -> None:
    (short_tmp / "elsewhere.snap").write_text("{}")
    snapshots = settings.snapshots_dir
    cases = [
        ({"snapshot": {"snapshot_path": "a.snap", "mem_path": "a.mem"}, "kernel": "vmlinux"}, 400, "invalid"),
        ({"snapshot": {"snapshot_path": str(short_tmp / "elsewhere.snap"), "mem_path": "a.mem"}}, 400,
         "path_outside_image_dirs"),
        ({"snapshot": {"snapshot_path": "../elsewhere.snap", "mem_path": "a.mem"}}, 400, "path_outside_image_dirs"),
        ({"snapshot": {"snapshot_path": "missing.snap", "mem_path": "a.mem"}}, 404, "file_not_found"),
    ]
    for spec, status, code in cases:
        resp = await client.post("/v1/microvms", json={"name": "restored", **spec}, headers=AUTH)
        body = await resp.json()
        assert (resp.status, body["error"]) == (status, code), (spec, body)
        assert body["hint"]
    assert snapshots.is_dir()  # made by the agent at start
    # a file Firecracker cannot load fails in load_snapshot with its own message; nothing remains
    (snapshots / "junk.snap").write_text("not a snapshot")
    (snapshots / "junk.mem").write_bytes(b"\0" * 16)
    resp = await client.post("/v1/microvms", json={"name": "restored", "snapshot": {
        "snapshot_path": "junk.snap", "mem_path": str(snapshots / "junk.mem")}}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 422 and body["step"] == "load_snapshot", body
    assert "Cannot open the snapshot files" in body["fault_message"] and body["fault_message"] in body["message"]
    assert "same Firecracker version" in body["hint"]
    assert live_processes_mentioning(str(settings.state_dir)) == []
    assert not (settings.microvms_dir / "restored").exists()


async def test_created_microvm_survives_an_agent_restart(settings: AgentSettings) -> None:
    client = await serve(settings)
    try:
        resp = await client.post("/v1/microvms", json={"name": "waiting", "start": False}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        pid = (await resp.json())["pid"]
        await client.close()
        client = await serve(settings)  # the same state directory: reattached, still created
        again = await (await client.get("/v1/microvms/waiting", headers=AUTH)).json()
        assert (again["state"], again["pid"]) == ("created", pid)
        resp = await client.get("/v1/microvms/waiting/firecracker/machine-config", headers=AUTH)
        assert resp.status == 200
        ws = await client.ws_connect("/v1/microvms/waiting/console", headers=AUTH)  # attaches, silent
        await ws.close()
        assert (await client.delete("/v1/microvms/waiting?force=true", headers=AUTH)).status == 204
        assert live_processes_mentioning(str(settings.state_dir)) == []
    finally:
        await client.close()
        kill_recorded_vmms(settings.state_dir)
