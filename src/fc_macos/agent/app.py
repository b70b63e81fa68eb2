"""The fc-agent aiohttp application: routes and their handlers.

:func:`create_app` builds the app from :class:`AgentSettings`; the
:class:`MicroVMManager` starts with the app (reattaching to running microVMs)
and detaches on cleanup without stopping any microVM. Handlers only translate
HTTP to manager calls; errors become JSON in :mod:`fc_macos.agent.http_errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, TypeGuard

from aiohttp import WSCloseCode, WSMsgType, web

from fc_macos import __version__
from fc_macos.agent import firecracker_install, guest_routes, host_stats, image_routes, lifecycle_routes, logs, nat, network, openapi, relay, routing
from fc_macos.agent.auth import token_middleware
from fc_macos.agent.contract import Contract, contract_middleware, query_flag
from fc_macos.agent.console import ConsoleBroker, Viewer
from fc_macos.agent.http_errors import error_middleware, read_json
from fc_macos.agent.image_store import ImageStore
from fc_macos.agent.manager import MicroVMManager
from fc_macos import image_names
from fc_macos.agent.paths import find_default
from fc_macos.agent.routing import MANAGER
from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.wire import MicroVMSpec
from fc_macos.errors import FcMacosError

log = logging.getLogger("fc_agent.app")

SETTINGS: web.AppKey[AgentSettings] = web.AppKey("settings", AgentSettings)
RELAY_CLIENTS: web.AppKey[relay.RelayClients] = web.AppKey("relay_clients", relay.RelayClients)
CONTRACT: web.AppKey[Contract] = web.AppKey("contract", Contract)
WS_MAX_MESSAGE = 1024 * 1024


def _manager(request: web.Request) -> MicroVMManager:
    return request.app[MANAGER]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTRACT].doc)


async def info(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    dirs = settings.all_image_dirs

    def installed(name: str) -> str | None:
        found = find_default(name, dirs)
        return None if found is None else str(found)

    return web.json_response(
        {
            "version": __version__,
            "arch": settings.arch,
            "firecracker_bin": settings.firecracker,  # an installed one (PUT /v1/firecracker) wins
            "firecracker_source": settings.firecracker_source,
            "state_dir": str(settings.state_dir),
            "image_dirs": [str(d) for d in dirs],
            "snapshot_dir": str(settings.snapshots_dir),
            "network": {"subnet": str(network.SUBNET), "tap_prefix": network.TAP_PREFIX, **nat.status(settings.nat)},
            "images": {kind: installed(name) for kind, name in image_names.BY_KIND.items()},
        }
    )


async def list_microvms(request: web.Request) -> web.Response:
    return web.json_response({"microvms": [vm.to_dict() for vm in _manager(request).list()]})


async def create_microvm(request: web.Request) -> web.Response:
    body = await read_json(request)
    spec = MicroVMSpec.from_dict({} if body is None else body)
    created = await _manager(request).create(spec)
    return web.json_response(created.to_dict(), status=201)


async def get_microvm(request: web.Request) -> web.Response:
    return web.json_response(_manager(request).get(request.match_info["name"]).to_dict())


def _parse_stop(body: dict[str, Any] | None) -> tuple[bool, float]:
    """``(force, timeout_s)`` of a stop request the contract middleware has
    checked against the ``StopRequest`` schema (types, fields, range)."""
    body = body or {}
    return bool(body.get("force", False)), float(body.get("timeout_s", 10.0))


async def stop_microvm(request: web.Request) -> web.Response:
    force, timeout_s = _parse_stop(await read_json(request))
    stopped = await _manager(request).stop(request.match_info["name"], force=force, timeout_s=timeout_s)
    return web.json_response(stopped.to_dict())


async def delete_microvm(request: web.Request) -> web.Response:
    await _manager(request).delete(request.match_info["name"], force=query_flag(request, "force"))
    await request.app[RELAY_CLIENTS].forget(request.match_info["name"])  # its kept-alive client, if relayed to
    return web.Response(status=204)


async def firecracker_relay(request: web.Request) -> web.Response:
    return await relay.relay(request, _manager(request), request.app[RELAY_CLIENTS])


async def microvm_logs(request: web.Request) -> web.StreamResponse:
    return await logs.stream_logs(request, _manager(request), request.match_info["name"])


async def console(request: web.Request) -> web.WebSocketResponse:
    """Attach a WebSocket viewer to the microVM's serial console."""
    broker = _manager(request).console(request.match_info["name"])
    replay = request.query.get("scrollback", "1").lower() not in ("0", "false")
    viewer = broker.attach(replay=replay)  # before the handshake: refusals stay JSON answers
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=WS_MAX_MESSAGE)
    try:
        await ws.prepare(request)
    except BaseException:
        broker.detach(viewer)
        raise
    pump = asyncio.create_task(_pump_output(viewer, ws))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                try:
                    await broker.write(msg.data)
                except FcMacosError as exc:
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=_close_text(exc.message))
                    break
            elif msg.type == WSMsgType.TEXT:
                await _control(broker, ws, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        broker.detach(viewer)
        if not pump.done():
            pump.cancel()
        try:
            await pump
        except (asyncio.CancelledError, Exception):
            pass
    return ws


async def _pump_output(viewer: Viewer, ws: web.WebSocketResponse) -> None:
    while True:
        chunk = await viewer.queue.get()
        if chunk is None:
            await ws.close(code=WSCloseCode.OK, message=_close_text(viewer.close_reason))
            return
        await ws.send_bytes(chunk)


def _close_text(reason: str) -> bytes:
    return reason.encode()[:120]  # a close frame's reason is limited to 123 bytes


def _dimension(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10000


async def _control(broker: ConsoleBroker, ws: web.WebSocketResponse, text: str) -> None:
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    if isinstance(message, dict) and message.get("type") == "resize":
        rows, cols = message.get("rows"), message.get("cols")
        if _dimension(rows) and _dimension(cols):
            broker.resize(rows, cols)
            return
    await ws.send_str(
        json.dumps(
            {
                "type": "error",
                "message": f"unknown or malformed control message: {text[:100]}",
                "hint": 'send {"type": "resize", "rows": R, "cols": C}; keyboard input goes in binary frames',
            }
        )
    )


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/healthz", healthz),
    ("GET", "/openapi.json", openapi_document),
    ("GET", "/v1/info", info),
    ("GET", "/v1/host", host_stats.handler(SETTINGS)),
    ("GET", "/v1/microvms", list_microvms),
    ("POST", "/v1/microvms", create_microvm),
    ("GET", "/v1/microvms/{name}", get_microvm),
    ("DELETE", "/v1/microvms/{name}", delete_microvm),
    ("POST", "/v1/microvms/{name}/stop", stop_microvm),
    ("GET", "/v1/microvms/{name}/console", console),
    ("GET", "/v1/microvms/{name}/logs", microvm_logs),
    # The methods Firecracker's API has (others are 405, as for every route).
    *((m.upper(), "/v1/microvms/{name}/firecracker/{path:.*}", firecracker_relay) for m in openapi.RELAY_METHODS),
)


def create_app(settings: AgentSettings, *, manager: MicroVMManager | None = None) -> web.Application:
    """The fc-agent application. The manager starts on app startup and
    detaches (leaving microVMs running) on shutdown."""
    contract = Contract(openapi.document())  # requests are checked against what /openapi.json says
    app = web.Application(
        middlewares=[error_middleware, token_middleware(settings.token), contract_middleware(contract)],
        client_max_size=settings.max_body_bytes,
    )
    app[CONTRACT] = contract
    app[SETTINGS] = settings
    app[MANAGER] = manager or MicroVMManager(settings)
    app[RELAY_CLIENTS] = relay.RelayClients()
    for routes in (ROUTES, guest_routes.ROUTES, lifecycle_routes.ROUTES):
        routing.add_routes(app, routes)
    image_routes.add_routes(app, ImageStore(settings.all_image_dirs[0]))
    firecracker_install.add_routes(app, settings)

    async def start_manager(app: web.Application) -> None:
        await app[MANAGER].start()

    async def stop_manager(app: web.Application) -> None:
        # On shutdown (before handlers are waited for), so console viewers end at once.
        await app[MANAGER].close()
        await app[RELAY_CLIENTS].close()

    app.on_startup.append(start_manager)
    app.on_shutdown.append(stop_manager)
    return app
