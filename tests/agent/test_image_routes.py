"""The agent's image directory over HTTP (the real app, in-process): uploads
streamed and checked (size, sha256), deduplicated by content, refused with a
4xx that says why (names outside the directory, short or corrupt bodies, a
disk too small: a 1 MiB tmpfs), listed and deleted; nothing half-written stays."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, served


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def visible_and_hidden(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


async def put(client: TestClient, name: str, data: bytes, *, size: int | None = None, digest: str | None = None,
              **params: str) -> tuple[int, dict[str, Any]]:
    query = {"size": str(len(data) if size is None else size), "sha256": digest or sha(data), **params}
    resp = await client.put(f"/v1/images/{name}", params=query, data=data, headers=AUTH)
    return resp.status, await resp.json()


async def test_upload_list_dedup_and_delete(client: TestClient, settings: AgentSettings) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, more than max_body_bytes
    assert len(data) > settings.max_body_bytes
    status, body = await put(client, "disk.ext4", data)
    assert status == 201, body
    images = settings.images_dir
    assert body == {"name": "disk.ext4", "path": str(images / "disk.ext4"), "size": len(data), "sha256": sha(data),
                    "outcome": "uploaded", "linked_from": None}
    assert (images / "disk.ext4").read_bytes() == data

    status, body = await put(client, "disk.ext4", data)  # again: nothing to do
    assert (status, body["outcome"]) == (200, "present")
    status, body = await put(client, "copy.ext4", data)  # the same content under another name: a hard link
    assert (status, body["outcome"], body["linked_from"]) == (200, "linked", "disk.ext4")
    assert (images / "copy.ext4").stat().st_ino == (images / "disk.ext4").stat().st_ino

    resp = await client.get("/v1/images", headers=AUTH)
    listing = await resp.json()
    assert [(i["name"], i["size"], i["sha256"]) for i in listing["images"]] == [
        ("copy.ext4", len(data), sha(data)), ("disk.ext4", len(data), sha(data))]
    assert listing["directory"] == str(images) and listing["free_bytes"] > 0

    resp = await client.get("/v1/images", params={"sha256": sha(data), "size": str(len(data))}, headers=AUTH)
    assert [i["name"] for i in (await resp.json())["images"]] == ["copy.ext4", "disk.ext4"]
    resp = await client.get("/v1/images", params={"sha256": sha(b"other"), "size": "5"}, headers=AUTH)
    assert (await resp.json())["images"] == []

    status, body = await put(client, "disk.ext4", b"other content")
    assert (status, body["error"]) == (409, "image_exists") and "--replace" in body["hint"]
    status, body = await put(client, "disk.ext4", b"other content", replace="true")
    assert (status, body["outcome"]) == (201, "uploaded")
    assert (images / "disk.ext4").read_bytes() == b"other content" and (images / "copy.ext4").read_bytes() == data

    resp = await client.delete("/v1/images/copy.ext4", headers=AUTH)
    assert resp.status == 204 and not (images / "copy.ext4").exists()
    resp = await client.delete("/v1/images/copy.ext4", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "image_not_found"


async def test_files_put_there_by_others_are_hashed_when_looked_up(client: TestClient, settings: AgentSettings) -> None:
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    (settings.images_dir / "vmlinux").write_bytes(b"kernel bytes")
    resp = await client.get("/v1/images", headers=AUTH)
    assert [(i["name"], i["sha256"]) for i in (await resp.json())["images"]] == [("vmlinux", None)]
    status, body = await put(client, "kernel-copy", b"kernel bytes")
    assert (status, body["outcome"], body["linked_from"]) == (200, "linked", "vmlinux")


@pytest.mark.parametrize("name", ["...", ".hidden", "-x", "a\\b", " x", "caf\u00e9"])
async def test_names_outside_the_directory_are_refused(client: TestClient, settings: AgentSettings, name: str) -> None:
    status, body = await put(client, name, b"data")  # by the pattern the document states
    assert status == 400 and body["error"] == "invalid", body
    assert "plain file name" in body["message"] + body["hint"], body


async def test_paths_do_not_reach_the_handler(client: TestClient, settings: AgentSettings) -> None:
    for path in ("/v1/images/a/b", "/v1/images/..%2Fstate.json", "/v1/images/%2E%2E"):
        resp = await client.put(path, params={"size": "1", "sha256": sha(b"x")}, data=b"x", headers=AUTH)
        assert resp.status in (400, 404, 405), (path, resp.status)
        assert "error" in await resp.json()
    assert not (settings.state_dir / "b").exists() and not (settings.images_dir / "b").exists()


async def test_short_long_and_corrupt_bodies_leave_nothing(client: TestClient, settings: AgentSettings) -> None:
    data = b"x" * 100_000
    cases: list[tuple[dict[str, Any], str]] = [({"size": len(data) + 1}, "body_incomplete"), ({"size": len(data) - 1}, "body_too_long"),
             ({"digest": sha(b"something else")}, "checksum_mismatch")]  # fmt: skip
    for kwargs, code in cases:
        status, body = await put(client, "part.img", data, **kwargs)
        assert (status, body["error"]) == (400, code), body
        assert "nothing" in body["message"] or code == "body_too_long"
        assert visible_and_hidden(settings.images_dir) == [], code


async def test_a_body_cut_off_midway_leaves_nothing(client: TestClient, settings: AgentSettings) -> None:
    async def half() -> AsyncIterator[bytes]:
        yield b"y" * 300_000
        raise ConnectionResetError("the client went away")

    with pytest.raises(Exception):
        await client.put("/v1/images/cut.img", params={"size": "600000", "sha256": sha(b"y" * 600_000)},
                         data=half(), headers=AUTH)
    for _ in range(50):  # the agent notices the broken body a moment later
        if not visible_and_hidden(settings.images_dir):
            break
        await asyncio.sleep(0.1)
    assert visible_and_hidden(settings.images_dir) == []


async def test_the_longest_name_uploads(client: TestClient, settings: AgentSettings) -> None:
    name = "n" * 251 + ".img"  # 255: the file system's limit (the temporary file's name is its own)
    status, body = await put(client, name, b"long")
    assert status == 201 and body["name"] == name, body
    assert (settings.images_dir / name).read_bytes() == b"long"
    status, body = await put(client, name + "x", b"long")
    assert status == 400, body


async def test_invalid_queries(client: TestClient) -> None:
    resp = await client.put("/v1/images/a.img", params={"size": "ten", "sha256": sha(b"")}, data=b"", headers=AUTH)
    answer = await resp.json()
    assert resp.status == 400 and "size must be an integer" in answer["message"], answer
    resp = await client.put("/v1/images/a.img", params={"size": "0", "sha256": "ABC"}, data=b"", headers=AUTH)
    answer = await resp.json()
    assert resp.status == 400 and "sha256 must match pattern" in answer["message"], answer
    resp = await client.get("/v1/images", params={"size": "-1"}, headers=AUTH)
    answer = await resp.json()
    assert resp.status == 400 and "size must be" in answer["message"], answer
    resp = await client.put("/v1/images/a.img", params={"size": "0", "sha256": sha(b"")}, data=b"")
    assert resp.status == 401


@pytest.fixture
def small_disk(settings: AgentSettings) -> Iterator[Path]:
    """The agent's image directory on a 1 MiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: run the tests as root")
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(settings.images_dir)], check=True)
    try:
        yield settings.images_dir
    finally:
        subprocess.run(["umount", "-l", str(settings.images_dir)], check=True)


async def test_a_size_beyond_the_free_disk_is_refused(small_disk: Path, settings: AgentSettings) -> None:
    async with served(settings) as client:
        data = b"z" * (2 * 1024 * 1024)
        status, body = await put(client, "big.img", data)
        assert status == 413 and body["error"] == "no_space", body
        assert body["needed"] == len(data) and 0 < body["free"] <= 1024 * 1024
        assert "--disk-size" in body["hint"] and "images rm" in body["hint"]
        from tests.agent.test_openapi import response_schema, validator

        doc = await (await client.get("/openapi.json", headers=AUTH)).json()
        validator(doc, response_schema(doc, "/v1/images/{name}", "put", "413"))(body)
        assert visible_and_hidden(small_disk) == []
        status, body = await put(client, "small.img", b"s" * 1000)  # what fits still does
        assert status == 201, body


async def test_a_microvm_uses_its_own_copy_of_writable_drives(client: TestClient, settings: AgentSettings) -> None:
    data = os.urandom(200_000)
    assert (await put(client, "data.img", data))[0] == 201
    spec = {"name": "c1", "start": False, "vsock": False,
            "drives": [{"id": "data", "path": "data.img"}, {"id": "ro", "path": "data.img", "read_only": True}]}
    resp = await client.post("/v1/microvms", json=spec, headers=AUTH)
    assert resp.status == 201, await resp.text()
    workdir = settings.microvms_dir / "c1"
    drives = {d["id"]: d["path"] for d in (await resp.json())["spec"]["drives"]}
    assert drives == {"data": str(workdir / "drive-data.img"), "ro": str(settings.images_dir / "data.img")}
    assert (workdir / "drive-data.img").read_bytes() == data
    assert (workdir / "drive-data.img").stat().st_ino != (settings.images_dir / "data.img").stat().st_ino

    resp = await client.delete("/v1/images/data.img", headers=AUTH)
    body = await resp.json()
    assert resp.status == 409 and body["error"] == "image_in_use" and "c1" in body["message"]

    resp = await client.get("/v1/microvms/c1/drives/data", headers=AUTH)
    assert resp.status == 200 and await resp.read() == data
    assert resp.headers["Fc-Drive-Path"] == str(workdir / "drive-data.img")
    resp = await client.get("/v1/microvms/c1/drives/rootfs", headers=AUTH)
    assert await resp.read() == (settings.image_dirs[0] / "rootfs.ext4").read_bytes()
    resp = await client.get("/v1/microvms/c1/drives/nope", headers=AUTH)
    body = await resp.json()
    assert resp.status == 404 and body["error"] == "drive_not_found" and "rootfs, data, ro" in body["hint"]

    assert (await client.delete("/v1/microvms/c1", params={"force": "true"}, headers=AUTH)).status == 204
    assert (await client.delete("/v1/images/data.img", headers=AUTH)).status == 204


async def test_drives_attached_by_name_are_resolved_and_writable_ones_copied(client: TestClient,
                                                                            settings: AgentSettings) -> None:
    data = os.urandom(50_000)
    assert (await put(client, "extra.img", data))[0] == 201
    resp = await client.post("/v1/microvms", json={"name": "c2", "start": False, "vsock": False}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    workdir = settings.microvms_dir / "c2"

    resp = await client.put("/v1/microvms/c2/drives/extra", json={"path": "extra.img"}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"id": "extra", "path": str(workdir / "drive-extra.img"),
                                 "source": str(settings.images_dir / "extra.img"), "read_only": False, "root": False}
    resp = await client.put("/v1/microvms/c2/drives/ro", json={"path": "extra.img", "read_only": True}, headers=AUTH)
    assert (await resp.json())["path"] == str(settings.images_dir / "extra.img")
    config = await (await client.get("/v1/microvms/c2/firecracker/vm/config", headers=AUTH)).json()
    attached = {d["drive_id"]: d["path_on_host"] for d in config["drives"]}
    assert attached["extra"] == str(workdir / "drive-extra.img") and attached["ro"] == str(settings.images_dir / "extra.img")
    assert (workdir / "drive-extra.img").read_bytes() == data
    resp = await client.get("/v1/microvms/c2/drives/extra", headers=AUTH)
    assert await resp.read() == data

    for body, status, code in (({"path": "../state.json"}, 400, "path_outside_image_dirs"),
                               ({"path": "nope.img"}, 404, "file_not_found"),
                               ({"path": "extra.img", "ro": True}, 400, "unknown_field"),
                               ({"read_only": True}, 400, "invalid")):  # fmt: skip
        resp = await client.put("/v1/microvms/c2/drives/more", json=body, headers=AUTH)
        answer = await resp.json()
        assert (resp.status, answer["error"]) == (status, code), answer
    assert not (workdir / "drive-more.img").exists()
    resp = await client.put("/v1/microvms/none/drives/x", json={"path": "extra.img"}, headers=AUTH)
    assert resp.status == 404
    assert (await client.delete("/v1/microvms/c2", params={"force": "true"}, headers=AUTH)).status == 204


async def test_leftovers_of_a_crashed_upload_are_removed_at_startup(settings: AgentSettings) -> None:
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    (settings.images_dir / ".upload-big.img.0a1b2c3d").write_bytes(b"half")
    (settings.images_dir / "kept.img").write_bytes(b"whole")
    async with served(settings):
        assert visible_and_hidden(settings.images_dir) == ["kept.img"]


async def test_answers_match_the_published_schemas(client: TestClient, settings: AgentSettings) -> None:
    from tests.agent.test_openapi import response_schema, validator

    doc = await (await client.get("/openapi.json", headers=AUTH)).json()
    data = b"schema check"
    query = {"size": str(len(data)), "sha256": sha(data)}
    checks = [
        ("/v1/images/{name}", "put", "201", await client.put("/v1/images/s.img", params=query, data=data, headers=AUTH)),
        ("/v1/images/{name}", "put", "200", await client.put("/v1/images/t.img", params=query, data=data, headers=AUTH)),
        ("/v1/images", "get", "200", await client.get("/v1/images", headers=AUTH)),
        ("/v1/images/{name}", "put", "400", await client.put("/v1/images/.x", params=query, data=data, headers=AUTH)),
        ("/v1/images/{name}", "put", "409", await client.put("/v1/images/s.img", params={**query, "sha256": sha(b"o")},
                                                            data=data, headers=AUTH)),
        ("/v1/images/{name}", "delete", "404", await client.delete("/v1/images/none", headers=AUTH)),
        ("/v1/microvms/{name}/drives/{drive_id}", "get", "404", await client.get("/v1/microvms/no/drives/rootfs",
                                                                                 headers=AUTH)),
        ("/v1/microvms/{name}/drives/{drive_id}", "put", "400", await client.put("/v1/microvms/no/drives/d", json=[],
                                                                                 headers=AUTH)),
    ]  # fmt: skip
    for path, method, status, resp in checks:
        assert str(resp.status) == status, (path, method, await resp.text())
        validator(doc, response_schema(doc, path, method, status))(await resp.json())
