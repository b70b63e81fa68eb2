"""Raw Firecracker API passthrough.

Any method on ``/v1/microvms/{name}/firecracker/{path}`` is sent verbatim
(method, path, query string, body bytes, content type) to that microVM's API
socket, and Firecracker's status, content type and body come back unchanged.
Nothing is validated here: Firecracker answers for itself. The agent only
watches successful calls (``PATCH /vm``, ``PUT /actions`` InstanceStart) to
report ``paused``/``running`` (:meth:`MicroVMManager.observe`).
"""

from __future__ import annotations

from aiohttp import web

from fc_macos.agent.manager import MicroVMManager
from fc_macos.firecracker.client import FirecrackerClient

#: Headers worth passing through in each direction.
REQUEST_HEADERS = ("Content-Type", "Accept")
RESPONSE_HEADERS = ("Content-Type", "Deprecation")
RELAY_TIMEOUT_S = 120.0  # snapshots of large guests take a while


async def relay(request: web.Request, manager: MicroVMManager) -> web.Response:
    name = request.match_info["name"]
    vm = manager.running(name)
    assert vm.vmm is not None
    raw = request.rel_url.raw_path  # still percent-encoded: relayed as sent
    path = raw[raw.index("/firecracker/") + len("/firecracker") :]
    if request.query_string:
        path += "?" + request.query_string
    body = await request.read()
    headers = {h: request.headers[h] for h in REQUEST_HEADERS if h in request.headers}
    async with FirecrackerClient(vm.vmm.paths.api_sock, timeout=RELAY_TIMEOUT_S) as fc:
        answer = await fc.request(request.method, path, data=body if body else None, headers=headers)
    if answer.ok:
        await manager.observe(name, request.method, path.split("?")[0], body)  # the answer goes back unchanged
    out_headers = {h: answer.headers[h] for h in RESPONSE_HEADERS if h in answer.headers}
    return web.Response(status=answer.status, body=answer.body, headers=out_headers)
