"""Client mistakes get a 4xx JSON answer {"error", "message", "hint"}, never HTML or 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, recorded_microvms, serve

JSON = {**AUTH, "Content-Type": "application/json"}


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) >= {"error", "message", "hint"}, body
    assert body["message"] and body["hint"]
    return body


async def test_malformed_json_is_400(client: TestClient) -> None:
    resp = await client.post("/v1/microvms", data=b'{"vcpus": 2,', headers=JSON)
    body = await error_of(resp, 400)
    assert body["error"] == "malformed_json"


async def test_non_object_body_is_400(client: TestClient) -> None:
    body = await error_of(await client.post("/v1/microvms", json=[1, 2], headers=AUTH), 400)
    assert "JSON object" in body["message"]


async def test_unknown_field_is_400_and_names_it(client: TestClient) -> None:
    body = await error_of(await client.post("/v1/microvms", json={"vcpus": 1, "cpus": 2}, headers=AUTH), 400)
    assert body["error"] == "unknown_field"
    assert "cpus" in body["message"]


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"vcpus": -1}, "vcpus"),
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": 1000}, "vcpus"),
        ({"memory_mib": -5}, "memory_mib"),
        ({"memory_mib": 10**12}, "memory_mib"),
        ({"memory_mib": "lots"}, "memory_mib"),
        ({"name": "Not A Name"}, "name"),
        ({"drives": [{"id": "rootfs", "path": "x"}]}, "drives[0].id"),
    ],
)
async def test_bad_sizes_and_names_are_400(client: TestClient, spec: dict[str, Any], words: str) -> None:
    body = await error_of(await client.post("/v1/microvms", json=spec, headers=AUTH), 400)
    assert words in body["message"]


async def test_missing_kernel_file_is_404_naming_it(client: TestClient) -> None:
    body = await error_of(await client.post("/v1/microvms", json={"kernel": "no-such-vmlinux"}, headers=AUTH), 404)
    assert "no-such-vmlinux" in body["message"]
    assert body["error"] == "file_not_found"


async def test_missing_drive_file_is_404_naming_it(client: TestClient) -> None:
    spec = {"drives": [{"id": "data", "path": "data.img"}]}
    body = await error_of(await client.post("/v1/microvms", json=spec, headers=AUTH), 404)
    assert "data.img" in body["message"]


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../etc/passwd", "sub/../../vmlinux"])
async def test_path_outside_image_dirs_is_400_with_the_dirs_in_the_hint(
    client: TestClient, settings: AgentSettings, path: str
) -> None:
    body = await error_of(await client.post("/v1/microvms", json={"rootfs": path}, headers=AUTH), 400)
    assert "outside the directories the agent serves images from" in body["message"]
    for d in settings.all_image_dirs:
        assert str(d) in body["hint"]


async def test_nothing_is_left_after_refused_creates(client: TestClient, settings: AgentSettings) -> None:
    await client.post("/v1/microvms", json={"kernel": "missing"}, headers=AUTH)
    await client.post("/v1/microvms", json={"rootfs": "/etc/passwd"}, headers=AUTH)
    assert (await (await client.get("/v1/microvms", headers=AUTH)).json()) == {"microvms": []}
    assert list(settings.microvms_dir.iterdir()) == []


async def test_body_too_large_is_413(client: TestClient, settings: AgentSettings) -> None:
    big = json.dumps({"boot_args": "x" * (settings.max_body_bytes + 10)})
    body = await error_of(await client.post("/v1/microvms", data=big, headers=JSON), 413)
    assert body["error"] == "too_large"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/microvms/ghost"),
        ("DELETE", "/v1/microvms/ghost"),
        ("POST", "/v1/microvms/ghost/stop"),
        ("GET", "/v1/microvms/ghost/logs"),
        ("GET", "/v1/microvms/ghost/console"),
        ("GET", "/v1/microvms/ghost/firecracker/machine-config"),
        ("PUT", "/v1/microvms/ghost/firecracker/actions"),
    ],
)
async def test_unknown_microvm_is_404(client: TestClient, method: str, path: str) -> None:
    body = await error_of(await client.request(method, path, headers=AUTH), 404)
    assert body["error"] == "not_found"
    assert "ghost" in body["message"]


async def test_unknown_route_is_json_404(client: TestClient) -> None:
    body = await error_of(await client.get("/v2/anything", headers=AUTH), 404)
    assert body["error"] == "not_found"


async def test_wrong_method_is_json_405(client: TestClient) -> None:
    resp = await client.put("/v1/microvms", headers=AUTH)
    body = await error_of(resp, 405)
    assert body["error"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def seed_stopped(settings: AgentSettings, name: str) -> None:
    """state.json as a version 1 agent left it (every record inside it): one
    stopped microVM. The agent moves the record into its work directory."""
    record = {
        "name": name, "state": "stopped", "spec": {"name": name, "vcpus": 1, "memory_mib": 128},
        "created_at": 1.0, "started_at": 2.0, "stopped_at": 3.0, "pid": None, "start_time": None,
        "pgid": None, "exit_status": 0, "error": None,
    }  # fmt: skip
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.microvms_dir / name).mkdir(parents=True)
    (settings.microvms_dir / name / "serial.log").write_text("line 1\nline 2\nline 3\n")
    settings.state_file.write_text(json.dumps({"version": 1, "next_index": 1, "microvms": {name: record}}))


async def test_duplicate_name_is_409(settings: AgentSettings) -> None:
    seed_stopped(settings, "web")
    client = await serve(settings)
    try:
        body = await error_of(await client.post("/v1/microvms", json={"name": "web"}, headers=AUTH), 409)
        assert "web" in body["message"]
    finally:
        await client.close()


async def test_unreadable_records_in_a_version_1_state_are_skipped_or_named(settings: AgentSettings) -> None:
    seed_stopped(settings, "good")
    state = json.loads(settings.state_file.read_text())
    state["microvms"]["junk"] = ["not", "a", "record"]
    state["microvms"]["half"] = {"name": "half"}
    settings.state_file.write_text(json.dumps(state))
    client = await serve(settings)
    try:
        listed = {vm["name"]: vm for vm in (await (await client.get("/v1/microvms", headers=AUTH)).json())["microvms"]}
        assert set(listed) == {"good", "half"}  # junk is no record at all: skipped (and logged)
        assert listed["good"]["state"] == "stopped"
        assert listed["half"]["state"] == "damaged" and "incomplete" in listed["half"]["error"]
    finally:
        await client.close()


@pytest.fixture
async def old_client(settings: AgentSettings) -> AsyncIterator[TestClient]:
    """The agent over a state where microVM 'old' stopped with status 0."""
    seed_stopped(settings, "old")
    client = await serve(settings)
    try:
        yield client
    finally:
        await client.close()


async def test_stopped_microvm_is_listed_logged_and_deleted(old_client: TestClient, settings: AgentSettings) -> None:
    listed = (await (await old_client.get("/v1/microvms", headers=AUTH)).json())["microvms"]
    assert [(vm["name"], vm["state"], vm["exit_status"], vm["pid"]) for vm in listed] == [("old", "stopped", 0, None)]
    logs = await old_client.get("/v1/microvms/old/logs", params={"tail": "2"}, headers=AUTH)
    assert await logs.text() == "line 2\nline 3\n"
    # stop is idempotent on a stopped microVM
    stop = await old_client.post("/v1/microvms/old/stop", json={}, headers=AUTH)
    assert stop.status == 200 and (await stop.json())["state"] == "stopped"
    # the console and the raw API need a running microVM
    assert (await error_of(await old_client.get("/v1/microvms/old/console", headers=AUTH), 409))
    assert (await error_of(await old_client.get("/v1/microvms/old/firecracker/", headers=AUTH), 409))
    resp = await old_client.delete("/v1/microvms/old", headers=AUTH)
    assert resp.status == 204
    assert not (settings.microvms_dir / "old").exists()
    assert recorded_microvms(settings.state_dir) == {}
    await error_of(await old_client.get("/v1/microvms/old", headers=AUTH), 404)


@pytest.mark.parametrize(
    "body",
    [{"force": "yes"}, {"timeout_s": -1}, {"timeout_s": 10**9}, {"timeout_s": "soon"}, {"graceful": True}, [1]],
)
async def test_bad_stop_request_is_400(old_client: TestClient, body: Any) -> None:
    await error_of(await old_client.post("/v1/microvms/old/stop", json=body, headers=AUTH), 400)


@pytest.mark.parametrize("query", [{"source": "kernel"}, {"tail": "-3"}, {"tail": "many"}, {"follow": "maybe"}])
async def test_bad_logs_query_is_400(old_client: TestClient, query: dict[str, str]) -> None:
    await error_of(await old_client.get("/v1/microvms/old/logs", params=query, headers=AUTH), 400)


async def test_delete_with_bad_force_is_400(old_client: TestClient) -> None:
    await error_of(await old_client.delete("/v1/microvms/old", params={"force": "perhaps"}, headers=AUTH), 400)


async def test_info_lists_image_dirs_and_installed_images(client: TestClient, settings: AgentSettings, image_dir: Path) -> None:
    info = await (await client.get("/v1/info", headers=AUTH)).json()
    assert info["image_dirs"] == [str(settings.images_dir), str(image_dir)]
    assert info["snapshot_dir"] == str(settings.state_dir.resolve() / "snapshots")
    assert info["images"] == {"kernel": str(image_dir / "vmlinux"), "initrd": None, "rootfs": str(image_dir / "rootfs.ext4")}
    assert info["firecracker_bin"] == settings.firecracker_bin
