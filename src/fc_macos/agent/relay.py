"""Raw Firecracker API passthrough.

Any method on ``/v1/microvms/{name}/firecracker/{path}`` is sent verbatim
(method, path, query string, body bytes, content type) to that microVM's API
socket, and Firecracker's status, content type and body come back unchanged.
Nothing is validated here: Firecracker answers for itself. The agent only
watches successful calls (``PATCH /vm``, ``PUT /actions`` InstanceStart) to
report ``paused``/``running`` (:meth:`MicroVMManager.observe`).

Each microVM's API socket is reached through one kept-alive client
(:class:`RelayClients`), so a relayed call costs one request on an open
connection rather than a new session and connection.
"""

from __future__ import annotations

from aiohttp import web

from fc_macos.agent.manager import MicroVMManager
from fc_macos.firecracker.client import FirecrackerClient

#: Headers worth passing through in each direction.
REQUEST_HEADERS = ("Content-Type", "Accept")
RESPONSE_HEADERS = ("Content-Type", "Deprecation")
RELAY_TIMEOUT_S = 120.0  # snapshots of large guests take a while


class RelayClients:
    """One kept-alive FirecrackerClient per running VMM (keyed by its API socket
    and pid, so a new VMM behind the same name gets a new client). A deleted
    microVM's is closed by :meth:`forget`; the rest in one go by :meth:`close`
    when the agent shuts down."""

    def __init__(self) -> None:
        self._clients: dict[str, tuple[int, FirecrackerClient]] = {}

    async def get(self, name: str, api_sock: str, pid: int) -> FirecrackerClient:
        cached = self._clients.get(name)
        if cached is not None and cached[0] == pid and cached[1].socket_path == api_sock:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        client = FirecrackerClient(api_sock, timeout=RELAY_TIMEOUT_S)
        self._clients[name] = (pid, client)
        return client

    def names(self) -> list[str]:
        """The microVMs that have a client now, in the order they got one."""
        return list(self._clients)

    async def forget(self, name: str) -> None:
        """Close and drop ``name``'s client, if it has one (idempotent)."""
        cached = self._clients.pop(name, None)
        if cached is not None:
            await cached[1].close()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            await client.close()


async def relay(request: web.Request, manager: MicroVMManager, clients: RelayClients) -> web.Response:
    name = request.match_info["name"]
    vm = manager.running(name)
    assert vm.vmm is not None
    raw = request.rel_url.raw_path  # still percent-encoded: relayed as sent
    path = raw[raw.index("/firecracker/") + len("/firecracker") :]
    if request.query_string:
        path += "?" + request.query_string
    body = await request.read()
    headers = {h: request.headers[h] for h in REQUEST_HEADERS if h in request.headers}
    fc = await clients.get(name, str(vm.vmm.paths.api_sock), vm.vmm.pid)
    answer = await fc.request(request.method, path, data=body if body else None, headers=headers)
    if answer.ok:
        await manager.observe(name, request.method, path.split("?")[0], body)  # the answer goes back unchanged
    out_headers = {h: answer.headers[h] for h in RESPONSE_HEADERS if h in answer.headers}
    return web.Response(status=answer.status, body=answer.body, headers=out_headers)
