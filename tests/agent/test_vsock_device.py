"""The vsock device and published ports of microVMs, without booting a guest
(``start: false``: the test VMM runs configured; its vsock socket is bound):
CIDs unique and kept across an agent restart, the socket in the work
directory, ``vsock: false``, the socket path limit, the guest agent's
``absent`` state for a rootfs it cannot go into, and published ports (taken
port, list, remove, freed on stop) with their error answers."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from tests.agent.conftest import AUTH, kill_recorded_vmms, serve
from tests.helpers.agent import recorded_microvms
from tests.agent.test_app import error_of


async def create(client: TestClient, name: str, **spec: Any) -> dict[str, Any]:
    resp = await client.post("/v1/microvms", json={"name": name, "start": False, **spec}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 201, body
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cids_are_unique_kept_and_reused_after_delete(settings: AgentSettings) -> None:
    client = await serve(settings)
    try:
        a, b = await create(client, "a"), await create(client, "b")
        assert (a["vsock"]["guest_cid"], b["vsock"]["guest_cid"]) == (3, 4)
        assert a["vsock"]["uds_path"] == str(settings.microvms_dir / "a" / "vsock.sock")
        assert Path(a["vsock"]["uds_path"]).is_socket()  # Firecracker bound it at PUT /vsock
        config = await (await client.get("/v1/microvms/a/firecracker/vm/config", headers=AUTH)).json()
        assert config["vsock"]["guest_cid"] == 3 and config["vsock"]["uds_path"] == a["vsock"]["uds_path"]
        # the image dir's rootfs is not ext4: the guest agent cannot go in, and the state says why
        assert a["guest_agent"]["state"] == "absent" and "ext4" in a["guest_agent"]["reason"]
        plain = await create(client, "plain", vsock=False)
        assert plain["vsock"] is None and plain["guest_agent"]["state"] == "absent"
        assert (await (await client.get("/v1/microvms/plain/firecracker/vm/config", headers=AUTH)).json())["vsock"] is None
        assert recorded_microvms(settings.state_dir)["b"]["vsock"]["guest_cid"] == 4

        await client.close()
        client = await serve(settings)  # an agent restart keeps every CID
        listed = {vm["name"]: vm for vm in (await (await client.get("/v1/microvms", headers=AUTH)).json())["microvms"]}
        assert {n: (vm["vsock"] or {}).get("guest_cid") for n, vm in listed.items()} == {"a": 3, "b": 4, "plain": None}
        assert (await client.delete("/v1/microvms/a?force=true", headers=AUTH)).status == 204
        assert (await create(client, "c"))["vsock"]["guest_cid"] == 3  # the lowest free one again
        for name in ("b", "c", "plain"):
            assert (await client.delete(f"/v1/microvms/{name}?force=true", headers=AUTH)).status == 204
    finally:
        await client.close()
        kill_recorded_vmms(settings.state_dir)


async def test_a_vsock_socket_path_over_the_limit_is_refused_before_anything_starts(
    settings: AgentSettings, short_tmp: Path
) -> None:
    # a state directory and name for which api.sock still fits in 107 bytes but vsock.sock does not
    name = "n" * 20
    room = 107 - len("/microvms/") - len(name) - len("/api.sock")  # what the state directory may take
    state_dir = short_tmp / ("s" * (room - len(str(short_tmp)) - 1))
    assert len(str(state_dir / "microvms" / name / "api.sock")) == 107
    client = await serve(replace(settings, state_dir=state_dir))
    try:
        body = await error_of(await client.post("/v1/microvms", json={"name": name, "start": False}, headers=AUTH), 400)
        assert "vsock socket path" in body["message"] and "107" in body["message"] and "shorter" in body["hint"]
        assert not (state_dir / "microvms" / name).exists()
        resp = await client.post("/v1/microvms", json={"name": name, "start": False, "vsock": False}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        assert (await client.delete(f"/v1/microvms/{name}?force=true", headers=AUTH)).status == 204
    finally:
        await client.close()
        kill_recorded_vmms(state_dir)


async def test_published_ports_of_a_microvm(client: TestClient, settings: AgentSettings) -> None:
    port, other = free_port(), free_port()
    spec = {"host_port": port, "guest_port": 80, "host_addr": "127.0.0.1"}
    vm = await create(client, "web", ports=[spec])
    assert vm["ports"] == [spec]
    with socket.create_connection(("127.0.0.1", port), timeout=5):  # the agent listens
        pass
    # the same address for another microVM: 409 naming it, and nothing of that microVM remains
    body = await error_of(await client.post("/v1/microvms", json={"name": "web2", "start": False, "ports": [spec]},
                                            headers=AUTH), 409)  # fmt: skip
    assert body["error"] == "port_in_use" and f"127.0.0.1:{port}" in body["message"] and "'web'" in body["message"]
    assert (await client.get("/v1/microvms/web2", headers=AUTH)).status == 404
    assert not (settings.microvms_dir / "web2").exists()

    resp = await client.post("/v1/microvms/web/ports", json={"host_port": other, "guest_port": 81, "host_addr": "127.0.0.1"}, headers=AUTH)
    assert resp.status == 201 and [p["host_port"] for p in (await resp.json())["ports"]] == [port, other]
    for bad, status, code in (
        ({"host_port": 0, "guest_port": 80}, 400, "invalid"),
        ({"host_port": other, "guest_port": 80, "host_addr": "not-an-ip"}, 400, "invalid"),
        ({"host_port": other, "guest_port": 80, "host_addr": "192.0.2.1"}, 409, "bad_host_addr"),
        ({"guest_port": 80}, 400, "invalid"),
    ):
        body = await error_of(await client.post("/v1/microvms/web/ports", json=bad, headers=AUTH), status)
        assert body["error"] == code, (bad, body)
    assert recorded_microvms(settings.state_dir)["web"]["ports"][1]["host_port"] == other
    assert (await client.delete(f"/v1/microvms/web/ports/{other}", headers=AUTH)).status == 204
    body = await error_of(await client.delete(f"/v1/microvms/web/ports/{other}", headers=AUTH), 404)
    assert body["error"] == "port_not_published"
    await error_of(await client.get("/v1/microvms/ghost/ports", headers=AUTH), 404)

    # exec into a microVM that is configured but not started: not running, and how to start it
    body = await error_of(await client.post("/v1/microvms/web/exec", json={"argv": ["true"]}, headers=AUTH), 409)
    assert body["error"] == "not_running" and "InstanceStart" in body["hint"]
    assert "'fc-macos actions start --name web'" in body["hint"]  # the CLI's way first
    for path in ("exec", "tunnel?port=80", "files?path=/", "files/stat?path=/"):  # refused before any upgrade
        body = await error_of(await client.get(f"/v1/microvms/web/{path}", headers=AUTH), 409)
        assert body["error"] == "not_running", (path, body)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/microvms/ghost/exec", headers=AUTH)
    assert info.value.status == 404

    # stopping frees the ports; a stopped microVM publishes none and takes no new ones
    resp = await client.post("/v1/microvms/web/stop", json={"force": True}, headers=AUTH)
    assert (await resp.json())["ports"] == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again
    body = await error_of(await client.post("/v1/microvms/web/ports", json=spec, headers=AUTH), 409)
    assert "stopped" in body["message"]
    assert "'fc-macos microvm start --name web'" in body["hint"]  # it boots again on its own disk
    body = await error_of(await client.post("/v1/microvms/web/exec", json={"argv": ["true"]}, headers=AUTH), 409)
    assert body["error"] == "not_running" and "'fc-macos microvm start --name web'" in body["hint"], body
    assert (await client.delete("/v1/microvms/web", headers=AUTH)).status == 204


async def test_ports_need_the_vsock_device(client: TestClient, settings: AgentSettings) -> None:
    """Every published connection goes through the guest agent over vsock: a
    microVM without a vsock device cannot publish a port, at create or later."""
    spec = {"host_port": free_port(), "guest_port": 80, "host_addr": "127.0.0.1"}
    body = await error_of(await client.post("/v1/microvms", json={"name": "nov", "start": False, "vsock": False,
                                                                  "ports": [spec]}, headers=AUTH), 400)
    # refused by the contract (the OpenAPI document says it too): vsock must be true with ports
    assert "vsock" in body["message"] and "ports" in body["hint"] and "vsock" in body["hint"], body
    assert (await client.get("/v1/microvms/nov", headers=AUTH)).status == 404
    await create(client, "nov", vsock=False)
    body = await error_of(await client.post("/v1/microvms/nov/ports", json=spec, headers=AUTH), 409)
    assert body["error"] == "guest_agent_absent" and "vsock" in body["message"], body
    with socket.socket() as s:
        s.bind(("127.0.0.1", spec["host_port"]))  # nothing listens for it
    assert (await (await client.get("/v1/microvms/nov/ports", headers=AUTH)).json())["ports"] == []
    assert (await client.delete("/v1/microvms/nov?force=true", headers=AUTH)).status == 204
