"""Commands inside a guest: the guest agent's ``exec``, as fc-agent serves it.

Two forms over one operation (docs/guest-agent-protocol.md):

* :func:`run_once` (``POST /exec``): stdin from the request, stdout and stderr
  collected (at most :data:`MAX_OUTPUT` bytes each, else 413
  ``output_too_large``), the exit code or signal.
* :func:`stream` (``GET /exec`` WebSocket): the client's first text message is
  the request; binary frames carry the streams (first byte 0 stdin, 1 stdout,
  2 stderr; a frame of just that byte is the stream's EOF); text frames carry
  resize and signal controls and, at the end, the exit.

A command the guest cannot find exits 127 (126: not executable) with the
guest agent's message on stderr (one-shot) or in the ``error`` message (with
``exit_code``) on the WebSocket, as a shell would have it. Closing the
connection to the guest agent kills the command's process group.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiohttp import WSMsgType, web

from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.agent.guest_errors import GuestChannelError, translate
from fc_macos.agent.tasks import cancel_until_done
from fc_macos.errors import FcMacosError, ValidationError
from fc_macos.guest.errors import GuestAgentError, GuestCommandNotFound, GuestNotExecutable
from fc_macos.guest.protocol import ExecExit, ExecOutput, GuestConnection

log = logging.getLogger("fc_agent.exec")

#: Most a one-shot exec collects per stream.
MAX_OUTPUT = 16 * 1024 * 1024
#: How long the WebSocket client has to send its request.
FIRST_MESSAGE_S = 30.0
MAX_TIMEOUT_S = 7 * 24 * 3600.0
#: What a shell makes of a command it cannot find (127) or execute (126).
CANNOT_RUN = (GuestCommandNotFound, GuestNotExecutable)
STREAM_BYTE = {"stdout": b"\x01", "stderr": b"\x02"}


@dataclass(frozen=True)
class ExecRequest:
    """What the guest agent's ``exec`` takes (``env`` as ``K=V`` strings)."""

    argv: list[str]
    env: list[str]
    cwd: str | None = None
    tty: bool = False
    rows: int = 24
    cols: int = 80
    stdin: bool = False
    timeout_s: float = 0.0

    def fields(self) -> dict[str, Any]:
        out = asdict(self)
        if self.cwd is None:
            del out["cwd"]
        return out


def _fail(message: str, hint: str | None = None) -> ValidationError:
    return ValidationError(message, hint=hint or 'e.g. {"argv": ["uname", "-a"], "env": {"K": "V"}, "cwd": "/"}')


def parse_request(data: Any, *, allowed: set[str]) -> tuple[ExecRequest, dict[str, Any]]:
    """The exec request in ``data`` (a JSON object with ``allowed`` fields) and
    the fields ExecRequest does not cover. ValidationError when malformed."""
    if not isinstance(data, dict):
        raise _fail("the exec request must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) in the exec request: {', '.join(unknown)}",
            hint=f"allowed fields: {', '.join(sorted(allowed))}", code="unknown_field",
        )  # fmt: skip
    argv = data.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
        raise _fail(f"argv must be a non-empty list of strings, got {argv!r}")
    env = data.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in env.items()):
        raise _fail("env must be an object of names (without '=') to string values", hint='e.g. {"env": {"LANG": "C"}}')
    cwd = data.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise _fail(f"cwd must be a path in the guest, got {cwd!r}")
    timeout_s = data.get("timeout_s") or 0
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 <= timeout_s <= MAX_TIMEOUT_S:
        raise _fail(f"timeout_s must be a number of seconds >= 0 (0: none), got {timeout_s!r}")
    sizes = {}
    for key, default in (("rows", 24), ("cols", 80)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10000:
            raise _fail(f"{key} must be an integer between 1 and 9999, got {value!r}")
        sizes[key] = value
    for key in ("tty",):
        if not isinstance(data.get(key, False), bool):
            raise _fail(f"{key} must be true or false")
    request = ExecRequest(
        argv=list(argv), env=[f"{k}={v}" for k, v in env.items()], cwd=cwd, tty=bool(data.get("tty", False)),
        rows=sizes["rows"], cols=sizes["cols"], timeout_s=float(timeout_s),
    )  # fmt: skip
    rest = {k: v for k, v in data.items() if k not in ("argv", "env", "cwd", "tty", "rows", "cols", "timeout_s")}
    return request, rest


async def start(agent: GuestAgent, request: ExecRequest) -> tuple[GuestConnection, int]:
    """Open a connection and start ``request``: the connection and the
    command's pid. Raises GuestAgentNotReady, or the guest's error
    (GuestCommandNotFound ...) when it cannot start."""
    conn = await agent.open()
    try:
        pid = await conn.start_exec(
            request.argv, env=request.env, cwd=request.cwd, tty=request.tty, rows=request.rows,
            cols=request.cols, stdin=request.stdin, timeout_s=request.timeout_s,
        )  # fmt: skip
    except BaseException:
        await conn.close()
        raise
    return conn, pid


def exit_fields(end: ExecExit) -> dict[str, Any]:
    return {"exit_code": end.exit_code, "signal": end.signal, "timed_out": end.timed_out}


# -- one-shot -------------------------------------------------------------------------

ONCE_FIELDS = {"argv", "env", "cwd", "stdin", "stdin_b64", "timeout_s", "encoding"}


async def run_once(agent: GuestAgent, body: Any) -> dict[str, Any]:
    """Run the one-shot request ``body`` (``POST /exec``) to its end and return
    ``{exit_code, signal, timed_out, stdout, stderr}``."""
    request, rest = parse_request(body, allowed=ONCE_FIELDS)
    stdin = _stdin_bytes(rest.get("stdin"), rest.get("stdin_b64"))
    encoding = rest.get("encoding") or "utf-8"
    if encoding not in ("utf-8", "base64"):
        raise _fail(f"encoding must be 'utf-8' or 'base64', got {encoding!r}")
    request = replace(request, stdin=stdin is not None)
    try:
        conn, _ = await start(agent, request)
    except CANNOT_RUN as exc:
        out: dict[str, Any] = {"exit_code": exc.exit_code, "signal": None, "timed_out": False}
        return out | _encode(b"", f"{exc.message}\n".encode(), encoding)
    async with conn:
        feeder = asyncio.create_task(_feed(conn, stdin)) if stdin is not None else None
        try:
            end, stdout, stderr = await _collect(conn)
        finally:
            if feeder is not None:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
    return exit_fields(end) | _encode(bytes(stdout), bytes(stderr), encoding)


def _stdin_bytes(text: Any, b64: Any) -> bytes | None:
    if text is not None and b64 is not None:
        raise _fail("give stdin or stdin_b64, not both")
    if text is not None:
        if not isinstance(text, str):
            raise _fail("stdin must be a string (stdin_b64 for bytes)")
        return text.encode()
    if b64 is not None:
        try:
            return base64.b64decode(b64, validate=True) if isinstance(b64, str) else _invalid_b64()
        except binascii.Error:
            return _invalid_b64()
    return None


def _invalid_b64() -> bytes:
    raise _fail("stdin_b64 must be base64 text")


async def _feed(conn: GuestConnection, data: bytes) -> None:
    try:
        await conn.write_stdin(data)
        await conn.close_stdin()
    except GuestAgentError:
        pass  # the command ended without reading it all


async def _collect(conn: GuestConnection) -> tuple[ExecExit, bytearray, bytearray]:
    outputs = {"stdout": bytearray(), "stderr": bytearray()}
    async for event in conn.exec_events():
        if isinstance(event, ExecExit):
            return event, outputs["stdout"], outputs["stderr"]
        buf = outputs[event.stream]
        buf += event.data
        if len(buf) > MAX_OUTPUT:
            raise GuestChannelError(
                f"the command wrote more than {MAX_OUTPUT // (1024 * 1024)} MiB to {event.stream}; it was killed",
                code="output_too_large", status=413,
                hint="stream it instead: the WebSocket form GET /v1/microvms/NAME/exec ('fc-macos exec' does), "
                "or redirect it to a file in the guest and copy that out",
            )  # fmt: skip
    raise GuestChannelError("the command's output ended without its exit status", code="guest_agent_disconnected")


def _encode(stdout: bytes, stderr: bytes, encoding: str) -> dict[str, str]:
    if encoding == "base64":
        return {"stdout": base64.b64encode(stdout).decode(), "stderr": base64.b64encode(stderr).decode()}
    return {"stdout": stdout.decode("utf-8", "replace"), "stderr": stderr.decode("utf-8", "replace")}


# -- WebSocket ------------------------------------------------------------------------

STREAM_FIELDS = {"argv", "env", "cwd", "tty", "rows", "cols", "stdin", "timeout_s"}


async def stream(agent: GuestAgent, ws: web.WebSocketResponse) -> None:
    """Serve one exec over the prepared WebSocket ``ws`` (see the module
    docstring); returns when the command has exited or the client left."""
    try:
        request = await _first_message(ws)
        conn, pid = await start(agent, request)
    except (FcMacosError, GuestAgentError) as exc:
        error = _error_message(exc, agent.name)
        if isinstance(exc, CANNOT_RUN):
            error["exit_code"] = exc.exit_code
        await ws.send_str(json.dumps(error))
        await ws.close()
        return
    async with conn:
        await ws.send_str(json.dumps({"type": "started", "pid": pid}))
        to_client = asyncio.create_task(_guest_to_client(conn, ws))
        from_client = asyncio.create_task(_client_to_guest(ws, conn))
        await asyncio.wait((to_client, from_client), return_when=asyncio.FIRST_COMPLETED)
        # the command exited, or the client left: then closing the connection kills the command
        await cancel_until_done((to_client, from_client))
        for task in (to_client, from_client):
            failure = None if task.cancelled() else task.exception()
            if isinstance(failure, (FcMacosError, GuestAgentError)):
                log.info("%s: exec ended: %s", agent.name, failure.message)
                if not ws.closed:
                    await ws.send_str(json.dumps(_error_message(failure, agent.name)))
            elif failure is not None:
                log.error("%s: exec failed", agent.name, exc_info=failure)
    await ws.close()


def _error_message(exc: FcMacosError, name: str) -> dict[str, Any]:
    if isinstance(exc, GuestAgentError):
        exc = translate(exc, name)
    return {"type": "error", "error": exc.code, "message": exc.message, "hint": exc.hint}


async def _first_message(ws: web.WebSocketResponse) -> ExecRequest:
    try:
        msg = await ws.receive(timeout=FIRST_MESSAGE_S)
    except asyncio.TimeoutError:
        raise _fail(f"no exec request within {FIRST_MESSAGE_S:g}s: send it as the first text message") from None
    if msg.type != WSMsgType.TEXT:
        raise _fail("the first message must be the exec request as JSON text")
    try:
        data = json.loads(msg.data)
    except ValueError:
        raise _fail(f"the exec request is not JSON: {msg.data[:100]!r}") from None
    request, rest = parse_request(data, allowed=STREAM_FIELDS)
    stdin = rest.get("stdin", False)
    if not isinstance(stdin, bool):
        raise _fail("stdin must be true or false in the WebSocket form (then send binary frames starting with 0)")
    return replace(request, stdin=stdin)


async def _guest_to_client(conn: GuestConnection, ws: web.WebSocketResponse) -> None:
    async for event in conn.exec_events():
        if isinstance(event, ExecOutput):
            await ws.send_bytes(STREAM_BYTE[event.stream] + event.data)
        else:
            await ws.send_str(json.dumps({"type": "exit", **exit_fields(event)}))


async def _client_to_guest(ws: web.WebSocketResponse, conn: GuestConnection) -> None:
    try:
        await _forward_client(ws, conn)
    except GuestAgentError:
        pass  # the guest agent closed the connection: the command has ended


async def _forward_client(ws: web.WebSocketResponse, conn: GuestConnection) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            data = msg.data
            if data[:1] != b"\x00":
                await _complain(ws, "binary frames from the client carry stdin: their first byte must be 0")
            elif len(data) == 1:
                await conn.close_stdin()
            else:
                await conn.write_stdin(data[1:])
        elif msg.type == WSMsgType.TEXT:
            control = _control(msg.data)
            if control is None:
                await _complain(ws, f"unknown or malformed control message: {msg.data[:100]}")
            elif control["type"] == "resize":
                await conn.resize(control["rows"], control["cols"])
            else:
                await conn.send_signal(control["signal"])
        elif msg.type == WSMsgType.ERROR:
            return


def _control(text: str) -> dict[str, Any] | None:
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None

    def number(key: str, lo: int, hi: int) -> bool:
        value = message.get(key)
        return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi

    if message.get("type") == "resize" and number("rows", 1, 9999) and number("cols", 1, 9999):
        return {"type": "resize", "rows": message["rows"], "cols": message["cols"]}
    if message.get("type") == "signal" and number("signal", 1, 64):
        return {"type": "signal", "signal": message["signal"]}
    return None


async def _complain(ws: web.WebSocketResponse, message: str) -> None:
    await ws.send_str(json.dumps({
        "type": "error", "error": "bad_message", "message": message,
        "hint": 'send {"type": "resize", "rows": R, "cols": C} or {"type": "signal", "signal": N}; stdin goes in binary frames',
    }))  # fmt: skip


__all__ = ["ExecRequest", "parse_request", "run_once", "stream"]
