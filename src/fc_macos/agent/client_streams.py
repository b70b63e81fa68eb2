"""The streams :class:`~fc_macos.agent.client.AgentClient` opens into a guest:
an exec session and a TCP tunnel, each over one WebSocket to fc-agent, and
the results they produce.

Exec WebSocket (see docs/design.md): binary frames carry one stream byte
(0 stdin, 1 stdout, 2 stderr) and then the data; a frame of just the stream
byte is that stream's EOF. Text frames are control JSON: the client sends
``resize`` and ``signal``, the agent ends with ``exit``. A tunnel's binary
frames are the raw TCP stream both ways.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from fc_macos.errors import EXEC_EXIT_CODES, AgentUnreachable, ExecError, FcMacosError

STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
LOST_HINT = "check the microVM with 'fc-macos microvm status --name NAME' and the agent with 'fc-macos vm status'"


def _lost(what: str, exc: BaseException | None = None) -> AgentUnreachable:
    detail = f": {exc}" if exc is not None and str(exc) else ""
    return AgentUnreachable(f"the {what} connection was lost{detail}", hint=LOST_HINT)


@dataclass(frozen=True)
class ExitStatus:
    """How a command ended. ``exit_code`` is 128+N when signal N killed it;
    ``timed_out``: its timeout ran out and it was killed."""

    exit_code: int
    signal: int | None = None
    timed_out: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitStatus:
        return cls(exit_code=int(data.get("exit_code", -1)),
                   signal=None if data.get("signal") is None else int(data["signal"]),
                   timed_out=bool(data.get("timed_out", False)))


@dataclass(frozen=True)
class ExecResult(ExitStatus):
    """A finished command: its exit status and everything it wrote.
    ``stdout``/``stderr`` are text (UTF-8, undecodable bytes replaced);
    ``stdout_bytes``/``stderr_bytes`` the bytes exactly."""

    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "signal": self.signal, "timed_out": self.timed_out,
                "stdout": self.stdout, "stderr": self.stderr}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ExecResult:
        """From ``POST /exec``'s answer (``encoding: base64``)."""
        status = ExitStatus.from_dict(data)
        return cls(status.exit_code, status.signal, status.timed_out,
                   base64.b64decode(data.get("stdout") or ""), base64.b64decode(data.get("stderr") or ""))


@dataclass(frozen=True)
class GuestStat:
    """``GET /files/stat``: what a guest path is (lstat: a symlink is not followed)."""

    path: str
    type: str  # "file" | "dir" | "symlink" | "other"
    mode: int
    size: int
    mtime: float
    target: str | None = None

    @classmethod
    def from_dict(cls, path: str, data: dict[str, Any]) -> GuestStat:
        return cls(path=path, type=str(data.get("type")), mode=int(data.get("mode") or 0),
                   size=int(data.get("size") or 0), mtime=float(data.get("mtime") or 0.0),
                   target=data.get("target"))


class ExecSession:
    """A running command in a guest. Use ``send``/``close_stdin`` for its
    stdin (when opened with ``stdin=True``), ``resize``/``signal`` to control
    it, and ``receive()`` (or ``async for stream, data in session``) for its
    output: ``("stdout" | "stderr", bytes)`` until it exits, then None;
    ``exit`` holds the ExitStatus from then on. With a tty everything is
    ``stdout``. The agent kills the command if the session is closed first."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Any], pid: int | None) -> None:
        self._ws = ws
        self.pid = pid
        self.exit: ExitStatus | None = None

    async def _send(self, send: Any, payload: Any) -> None:
        try:
            await send(payload)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise _lost("exec", exc) from exc

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the command's stdin (nothing for empty data)."""
        if data:
            await self._send(self._ws.send_bytes, bytes([STDIN]) + data)

    async def close_stdin(self) -> None:
        """End the command's stdin (EOF)."""
        await self._send(self._ws.send_bytes, bytes([STDIN]))

    async def resize(self, rows: int, cols: int) -> None:
        """Set the pty's window size (the command gets SIGWINCH)."""
        await self._send(self._ws.send_str, json.dumps({"type": "resize", "rows": rows, "cols": cols}))

    async def signal(self, signum: int) -> None:
        """Send signal ``signum`` to the command's process group."""
        await self._send(self._ws.send_str, json.dumps({"type": "signal", "signal": int(signum)}))

    async def receive(self) -> tuple[str, bytes] | None:
        """The next output chunk, or None once the command has exited (then
        ``exit`` is set). AgentUnreachable if the connection ends without an exit."""
        if self.exit is not None:
            return None
        while True:
            try:
                msg = await self._ws.receive()
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise _lost("exec", exc) from exc
            if msg.type == aiohttp.WSMsgType.BINARY:
                data = bytes(msg.data)
                if len(data) > 1 and data[0] in STREAM_NAMES:
                    return STREAM_NAMES[data[0]], data[1:]
                continue  # an EOF marker (the stream byte alone)
            if msg.type == aiohttp.WSMsgType.TEXT:
                control = json_object(msg.data)
                if control.get("type") == "exit":
                    self.exit = ExitStatus.from_dict(control)
                    return None
                if control.get("type") == "error":
                    raise error_of_exec(control)
                continue
            raise _lost("exec")

    async def wait(self) -> ExitStatus:
        """Discard the rest of the output and return the exit status."""
        while await self.receive() is not None:
            pass
        assert self.exit is not None
        return self.exit

    async def close(self) -> None:
        await self._ws.close()

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, bytes]]:
        while (item := await self.receive()) is not None:
            yield item


class TunnelStream:
    """A raw byte stream to a TCP port in a guest. ``receive()`` returns
    None once either end has closed it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        if data:
            try:
                await self._ws.send_bytes(data)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                raise _lost("tunnel", exc) from exc

    async def receive(self) -> bytes | None:
        while True:
            try:
                msg = await self._ws.receive()
            except (aiohttp.ClientError, ConnectionError):
                return None
            if msg.type == aiohttp.WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return None

    async def close(self) -> None:
        await self._ws.close()


def json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def error_of_exec(control: dict[str, Any]) -> FcMacosError:
    """The exec WebSocket's ``{"type": "error", ...}`` message as an error."""
    code = str(control.get("error") or "exec_failed")
    message = str(control.get("message") or "the command could not be started")
    hint = control.get("hint")
    if code in EXEC_EXIT_CODES and not hint:
        hint = "check the command's name and the guest's PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)"
    return ExecError(message, code=code, hint=hint)


__all__ = ["ExecResult", "ExecSession", "ExitStatus", "GuestStat", "TunnelStream"]
