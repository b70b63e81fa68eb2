"""The raw Firecracker relay's kept-alive clients, through the real agent app and the test
VMM (microVMs created without starting, so no guest boots): a deleted microVM's client is
closed and dropped, not kept until its name comes back or the agent stops."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from fc_macos.agent.app import RELAY_CLIENTS
from tests.helpers.agent import AUTH


async def test_deleting_microvms_closes_and_drops_their_relay_clients(client: TestClient) -> None:
    relay_clients = client.app[RELAY_CLIENTS]
    names = ["r1", "r2", "r3"]
    for name in [*names, "kept"]:
        resp = await client.post("/v1/microvms", json={"name": name, "start": False}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        resp = await client.get(f"/v1/microvms/{name}/firecracker/machine-config", headers=AUTH)
        assert resp.status == 200, await resp.text()  # relayed: the microVM now has a kept-alive client
    assert relay_clients.names() == [*names, "kept"]
    for name in names:
        resp = await client.delete(f"/v1/microvms/{name}", params={"force": "true"}, headers=AUTH)
        assert resp.status == 204, await resp.text()
    assert relay_clients.names() == ["kept"]
    resp = await client.get("/v1/microvms/kept/firecracker/machine-config", headers=AUTH)
    assert resp.status == 200  # the others' clients are untouched
