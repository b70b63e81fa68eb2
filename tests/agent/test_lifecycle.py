"""The lifecycle routes against the real agent app and the test VMM, without
booting a guest: start refusals (unknown name with "did you mean", a missing
disk, bad bodies), the snapshot index's list and remove, a failed boot whose
error keeps the VMM's last lines with a hint that fits (too much memory), and
the documented schemas of these answers. The rest, with guests:
test_lifecycle_guest.py."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient

from fc_macos.agent.app import MANAGER
from fc_macos.agent.settings import AgentSettings
from tests.agent.test_app import seed_stopped
from tests.helpers.agent import AUTH, served


async def error_of(resp: object, status: int) -> dict:
    body = await resp.json()  # type: ignore[attr-defined]
    assert resp.status == status, body  # type: ignore[attr-defined]
    assert body["message"] and body["hint"], body
    return body


async def test_a_mistyped_name_gets_did_you_mean(settings: AgentSettings) -> None:
    seed_stopped(settings, "web")
    state = json.loads(settings.state_file.read_text())
    state["microvms"]["vm-2"] = state["microvms"]["web"] | {"name": "vm-2", "spec": {"name": "vm-2"}}
    settings.state_file.write_text(json.dumps(state))
    async with served(settings) as client:
        for method, path in (("POST", "/v1/microvms/wbe/start"), ("GET", "/v1/microvms/wbe"),
                             ("POST", "/v1/microvms/wbe/stop"), ("DELETE", "/v1/microvms/wbe")):  # fmt: skip
            body = await error_of(await client.request(method, path, headers=AUTH), 404)
            assert body["error"] == "not_found"
            assert body["hint"].startswith("did you mean 'web'?"), body
        for far in ("zzzzzz", "vm-1"):  # nothing close; 'vm-2' is another of a series, not a typo of 'vm-1'
            body = await error_of(await client.post(f"/v1/microvms/{far}/start", headers=AUTH), 404)
            assert "did you mean" not in body["hint"], body


async def test_start_of_a_microvm_whose_disk_is_gone_is_409_with_the_reason(settings: AgentSettings) -> None:
    seed_stopped(settings, "web")  # its work directory has no rootfs copy
    async with served(settings) as client:
        body = await error_of(await client.post("/v1/microvms/web/start", headers=AUTH), 409)
        assert body["error"] == "disk_missing"
        assert "rootfs copy" in body["message"] and str(settings.microvms_dir / "web" / "rootfs.ext4") in body["message"]
        assert "fc-macos microvm rm --name web" in body["hint"]
        info = await (await client.get("/v1/microvms/web", headers=AUTH)).json()
        assert info["state"] == "stopped" and "rootfs copy" in info["error"]  # as it was, saying why


async def test_a_snapshot_restore_cannot_be_started_again(settings: AgentSettings) -> None:
    seed_stopped(settings, "copy")
    state = json.loads(settings.state_file.read_text())
    state["microvms"]["copy"]["spec"] |= {"vcpus": 2, "snapshot": {"snapshot_path": "/s", "mem_path": "/m"}}
    settings.state_file.write_text(json.dumps(state))
    async with served(settings) as client:
        for path in ("start", "restart"):
            body = await error_of(await client.post(f"/v1/microvms/copy/{path}", headers=AUTH), 409)
            assert body["error"] == "restored_microvm" and "no disk of its own" in body["message"]
            assert "fc-macos snapshots load --name copy" in body["hint"]


async def test_start_and_restart_bodies_are_checked(settings: AgentSettings) -> None:
    seed_stopped(settings, "web")
    async with served(settings) as client:
        for path, body in (("start", {"force": True}), ("start", {"wait": "forever"}), ("start", []),
                           ("restart", {"timeout_s": -1}), ("restart", {"wait_timeout_s": 0})):  # fmt: skip
            answer = await error_of(await client.post(f"/v1/microvms/web/{path}", json=body, headers=AUTH), 400)
            assert answer["error"] in ("invalid", "unknown_field"), answer


async def test_snapshots_list_and_rm(client: TestClient, settings: AgentSettings) -> None:
    snaps = settings.snapshots_dir
    # a snapshot the agent recorded (as the relay does after PUT /snapshot/create) and a stray file
    (snaps / "web.snap").write_text("state")
    (snaps / "web.mem").write_bytes(b"\0" * 10)
    (snaps / "stray.bin").write_text("x")
    client.app[MANAGER].snapshots.record(
        snapshot_path="web.snap", mem_path="web.mem", microvm="web", disk="/nowhere/rootfs.ext4")
    listing = await (await client.get("/v1/snapshots", headers=AUTH)).json()
    assert listing["directory"] == str(snaps)
    made, stray = listing["snapshots"]
    assert made["snapshot_path"] == str(snaps / "web.snap") and made["mem_path"] == str(snaps / "web.mem")
    assert made["microvm"] == "web" and made["snapshot_bytes"] == 5 and made["mem_bytes"] == 10
    assert made["disk"] == "/nowhere/rootfs.ext4" and made["disk_exists"] is False
    assert stray["snapshot_path"] == str(snaps / "stray.bin") and stray["microvm"] is None

    removed = await (await client.delete("/v1/snapshots", params={"path": "web.snap"}, headers=AUTH)).json()
    assert removed == {"removed": [str(snaps / "web.snap"), str(snaps / "web.mem")]}
    assert sorted(p.name for p in snaps.iterdir()) == ["stray.bin"]
    body = await error_of(await client.delete("/v1/snapshots", params={"path": "web.snap"}, headers=AUTH), 404)
    assert body["error"] == "snapshot_not_found"
    body = await error_of(await client.delete("/v1/snapshots", params={"path": "/etc/passwd"}, headers=AUTH), 404)
    assert body["error"] == "not_a_snapshot"
    await error_of(await client.delete("/v1/snapshots", headers=AUTH), 400)
    assert (await (await client.delete("/v1/snapshots", params={"path": "stray.bin"}, headers=AUTH)).json())["removed"]
    assert (await (await client.get("/v1/snapshots", headers=AUTH)).json())["snapshots"] == []


async def test_too_much_memory_keeps_the_vmm_lines_and_says_so(guest_settings: AgentSettings) -> None:
    async with served(guest_settings) as client:
        resp = await client.post("/v1/microvms", headers=AUTH,
                                 json={"name": "big", "memory_mib": 1024 * 1024, "vsock": False})  # fmt: skip
        body = await error_of(resp, 422)
        assert body["error"] == "boot_failed" and body["step"] == "start_instance"
        # the VMM's own last lines are in the message, though its work directory is gone
        assert "Last VMM lines:" in body["message"] and "Cannot allocate memory" in body["message"]
        assert not (guest_settings.microvms_dir / "big").exists()
        assert "1048576 MiB of memory" in body["hint"] and "--memory" in body["hint"]
        assert "suit each other" not in body["hint"]


async def test_lifecycle_answers_match_their_documented_schemas(settings: AgentSettings) -> None:
    from tests.agent.test_openapi import response_schema, validator

    seed_stopped(settings, "web")
    async with served(settings) as client:
        (settings.snapshots_dir / "a.snap").write_text("x")
        doc = await (await client.get("/openapi.json", headers=AUTH)).json()
        checks = [
            ("/v1/microvms/{name}/start", "post", "409", await client.post("/v1/microvms/web/start", headers=AUTH)),
            ("/v1/microvms/{name}/start", "post", "404", await client.post("/v1/microvms/ghost/start", headers=AUTH)),
            ("/v1/microvms/{name}/start", "post", "400",
             await client.post("/v1/microvms/web/start", json={"wait": 1}, headers=AUTH)),
            ("/v1/microvms/{name}/restart", "post", "409", await client.post("/v1/microvms/web/restart", headers=AUTH)),
            ("/v1/snapshots", "get", "200", await client.get("/v1/snapshots", headers=AUTH)),
            ("/v1/snapshots", "delete", "404",
             await client.delete("/v1/snapshots", params={"path": "nope"}, headers=AUTH)),
            ("/v1/snapshots", "delete", "200",
             await client.delete("/v1/snapshots", params={"path": "a.snap"}, headers=AUTH)),
        ]  # fmt: skip
        for path, method, status, resp in checks:
            assert str(resp.status) == status, (path, method, await resp.text())
            validator(doc, response_schema(doc, path, method, status))(await resp.json())
        # the spec schema takes balloon_mib as the agent does
        validator(doc, {"$ref": "#/components/schemas/MicroVMSpec"})({"memory_mib": 256, "balloon_mib": 64})
