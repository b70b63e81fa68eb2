"""HTTP handlers of the guest channel: exec, files, tunnel and published ports
(``/v1/microvms/{name}/...``). They check the microVM and its guest agent
before anything streams (so refusals are JSON answers with a 4xx, never a
broken stream) and leave the work to :mod:`guest_exec`, :mod:`guest_files`
and :mod:`ports`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from aiohttp import WSMsgType, web

from fc_macos.agent import guest_exec, guest_files
from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.agent.guest_errors import translate
from fc_macos.agent.http_errors import Handler, read_json
from fc_macos.agent.routing import MANAGER
from fc_macos.agent.ports import connect_guest_port
from fc_macos.agent.tasks import cancel_until_done
from fc_macos.agent.wire import PortSpec, parse_host_addr
from fc_macos.errors import FcMacosError, ValidationError
from fc_macos.guest.errors import GuestAgentError
from fc_macos.guest.protocol import GuestConnection

log = logging.getLogger("fc_agent.guest_routes")

WS_MAX_MESSAGE = 1024 * 1024 + 1  # a stream byte plus a full frame
TAR = "application/x-tar"


def _guest(request: web.Request) -> GuestAgent:
    return request.app[MANAGER].guest(request.match_info["name"])


def _path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if not path.startswith("/"):
        raise ValidationError(
            f"path must be an absolute path in the guest, got {path!r}", hint="e.g. ?path=/etc/hostname"
        )
    return path


def guest_operation(handler: Handler) -> Handler:
    """``handler`` with the guest protocol's errors translated into the agent's
    (:func:`guest_errors.translate`: 404 guest_path_not_found ...)."""

    async def translated(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GuestAgentError as exc:
            raise translate(exc, request.match_info.get("name", "?")) from exc

    translated.__name__ = handler.__name__
    translated.__doc__ = handler.__doc__
    return translated


# -- exec -----------------------------------------------------------------------------


async def exec_once(request: web.Request) -> web.Response:
    agent = _guest(request)
    return web.json_response(await guest_exec.run_once(agent, await read_json(request)))


async def exec_stream(request: web.Request) -> web.WebSocketResponse:
    agent = _guest(request)  # before the handshake: refusals stay JSON answers
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=WS_MAX_MESSAGE)
    await ws.prepare(request)
    await guest_exec.stream(agent, ws)
    return ws


# -- files ----------------------------------------------------------------------------


async def files_stat(request: web.Request) -> web.Response:
    async with await _guest(request).open() as conn:
        stat = await conn.stat(_path(request))
    return web.json_response(asdict(stat))


async def files_get(request: web.Request) -> web.StreamResponse:
    path = _path(request)
    async with await _guest(request).open() as conn:
        stream = await conn.get(path)  # refusals (not found ...) come before the response starts
        resp = web.StreamResponse(headers={
            "Content-Type": TAR, "Fc-Guest-Type": stream.stat.type, "Fc-Guest-Size": str(stream.stat.size),
        })  # fmt: skip
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            summary = await guest_files.tree_to_tar(stream, resp.write)
        except (FcMacosError, OSError) as exc:
            # The tar is incomplete: cut the connection so that no client takes it for whole.
            log.warning("%s: GET /files %s aborted: %s", agent_name(request), path, exc)
            if request.transport is not None:
                request.transport.abort()
            return resp
        log.info("%s: sent %s (%d entries, %d bytes)", agent_name(request), path, summary.entries, summary.bytes)
        await resp.write_eof()
    return resp


async def files_put(request: web.Request) -> web.Response:
    path = _path(request)
    guest = _guest(request)
    async with await guest.open() as conn:  # closed without END on any failure: nothing stays
        session = await conn.begin_put(path)
        try:
            result = await guest_files.tar_to_tree(
                guest_files.TarReader(request.content), session, guest_files.guest_has_dir(guest.open, path))
        except (FcMacosError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the body broke off (aiohttp's payload errors, a reset connection)
            log.info("%s: PUT /files %s cut off: %r", agent_name(request), path, exc)
            raise ValidationError(
                f"the request body was cut off ({type(exc).__name__}); nothing was written in the guest",
                hint="send the tar again", code="body_incomplete",
            ) from exc
    return web.json_response({"entries": result.entries, "bytes": result.bytes})


def agent_name(request: web.Request) -> str:
    return request.match_info.get("name", "?")


# -- tunnel ---------------------------------------------------------------------------


def _int_query(request: web.Request, key: str, lo: int, hi: int) -> int:
    raw = request.query.get(key, "")
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ValidationError(f"{key} must be an integer between {lo} and {hi}, got {raw!r}", hint=f"e.g. ?{key}=80")
    return int(raw)


async def tunnel(request: web.Request) -> web.WebSocketResponse:
    """A WebSocket whose binary frames are a TCP stream to ``port`` in the
    guest; refused before the handshake (409 ``guest_port_closed``) when
    nothing listens there."""
    port = _int_query(request, "port", 1, 65535)
    host = request.query.get("host", "127.0.0.1")
    conn = await connect_guest_port(_guest(request), port, host)
    async with conn:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=WS_MAX_MESSAGE)
        await ws.prepare(request)
        await _bridge_ws(ws, conn)
    return ws


async def _bridge_ws(ws: web.WebSocketResponse, conn: GuestConnection) -> None:
    async def guest_to_ws() -> None:
        while data := await conn.reader.read(guest_files.CHUNK):
            await ws.send_bytes(data)

    async def ws_to_guest() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                conn.writer.write(msg.data)
                await conn.writer.drain()
            elif msg.type == WSMsgType.TEXT:
                await ws.send_str(json.dumps({
                    "type": "error", "error": "bad_message", "message": "a tunnel carries binary frames only",
                    "hint": "send the TCP stream's bytes as binary frames",
                }))  # fmt: skip

    tasks = [asyncio.create_task(guest_to_ws()), asyncio.create_task(ws_to_guest())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_until_done(tasks)
        await conn.close()
        await ws.close()


# -- published ports ------------------------------------------------------------------


def _ports_body(ports: Sequence[PortSpec]) -> dict[str, Any]:
    return {"ports": [asdict(p) for p in ports]}


async def list_ports(request: web.Request) -> web.Response:
    return web.json_response(_ports_body(request.app[MANAGER].list_ports(request.match_info["name"])))


async def add_port(request: web.Request) -> web.Response:
    port = PortSpec.from_dict(await read_json(request))
    ports = await request.app[MANAGER].add_port(request.match_info["name"], port)
    return web.json_response(_ports_body(ports), status=201)


async def remove_port(request: web.Request) -> web.Response:
    raw = request.match_info["host_port"]
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ValidationError(f"host_port must be a port number, got {raw!r}")
    addr = request.query.get("host_addr")
    await request.app[MANAGER].remove_port(
        request.match_info["name"], int(raw), None if addr is None else parse_host_addr("query", addr)
    )
    return web.Response(status=204)


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("POST", "/v1/microvms/{name}/exec", guest_operation(exec_once)),
    ("GET", "/v1/microvms/{name}/exec", guest_operation(exec_stream)),
    ("GET", "/v1/microvms/{name}/files", guest_operation(files_get)),
    ("PUT", "/v1/microvms/{name}/files", guest_operation(files_put)),
    ("GET", "/v1/microvms/{name}/files/stat", guest_operation(files_stat)),
    ("GET", "/v1/microvms/{name}/tunnel", guest_operation(tunnel)),
    ("GET", "/v1/microvms/{name}/ports", list_ports),
    ("POST", "/v1/microvms/{name}/ports", add_port),
    ("DELETE", "/v1/microvms/{name}/ports/{host_port}", remove_port),
)


__all__ = ["ROUTES"]
