"""The Python (asyncio) side of the guest agent protocol, version 1.

One :class:`GuestConnection` carries one operation (the guest agent closes the connection
after it). Open one with :func:`open_unix`, :func:`open_tcp` or
:func:`open_hybrid_vsock` (Firecracker's vsock Unix socket, ``CONNECT <port>``), then::

    async with await open_hybrid_vsock(uds_path) as conn:
        info = await conn.info()

    async with await open_hybrid_vsock(uds_path) as conn:
        result = await conn.run(["uname", "-a"])          # ExecResult(exit_code, stdout, stderr ...)

    async with await open_hybrid_vsock(uds_path) as conn:  # streaming exec
        pid = await conn.start_exec(["sh"], tty=True, rows=40, cols=120)
        await conn.write_stdin(b"ls\\n")
        async for event in conn.exec_events():           # ExecOutput ... then one ExecExit
            ...

Files (:meth:`GuestConnection.put_tree`, :meth:`GuestConnection.get_tree`, and the
streaming :meth:`GuestConnection.begin_put` / :meth:`GuestConnection.get` for relays such
as a tar bridge) and TCP tunnels (:meth:`GuestConnection.connect`) work the same way.

Every refusal of the guest agent (``ok: false``) raises the matching
:class:`~fc_macos.guest.errors.GuestAgentError` subclass with a hint; broken framing raises
:class:`~fc_macos.guest.errors.GuestProtocolError`; OS-level connection failures are
converted to :class:`~fc_macos.guest.errors.GuestConnectionClosed`.
The wire format is documented in ``docs/guest-agent-protocol.md``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Literal, Mapping, Sequence, Union

from . import GUEST_AGENT_PORT, PROTOCOL_VERSION
from .checksum import CHECKSUMS, DEFAULT_CHECKSUM, answered, require_known
from .errors import (
    GuestAgentError,
    GuestBadRequest,
    GuestChecksumMismatch,
    GuestCommandNotFound,
    GuestConnectionClosed,
    GuestConnectionRefused,
    GuestExists,
    GuestIOError,
    GuestNotADirectory,
    GuestNotExecutable,
    GuestNotFound,
    GuestPermissionDenied,
    GuestProtocolError,
    OutputTooLarge,
    error_from_response,
)
from .frames import MAX_FRAME, Frame, FrameDecoder, FrameType, encode_frame, encode_json, read_frame
from .hybrid_vsock import VsockDialError, dial
from .transfer import GetItem, GetStream, PutSession
from .tree import GuestStat, LocalTreeWriter, TransferResult, TreeEntry, iter_local_tree

# ---- exec types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecOutput:
    """A piece of the command's output; empty ``data`` is the end of that stream."""

    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True)
class ExecExit:
    """How the command ended: ``exit_code`` is 128+N when signal N killed it."""

    exit_code: int
    signal: int | None
    timed_out: bool


ExecEvent = Union[ExecOutput, ExecExit]


@dataclass(frozen=True)
class ExecResult:
    """The outcome of :meth:`GuestConnection.run`: exit status and the collected output."""

    exit_code: int
    signal: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes


# ---- the connection --------------------------------------------------------------------------

#: How long :meth:`GuestConnection.close` lets buffered bytes drain before it aborts the socket.
CLOSE_GRACE_S = 5.0


class GuestConnection:
    """One connection to a guest agent: one operation, then it is finished.

    The operation methods (:meth:`info`, :meth:`stat`, :meth:`start_exec` / :meth:`run`,
    :meth:`get` / :meth:`get_tree`, :meth:`begin_put` / :meth:`put_tree`, :meth:`connect`)
    may be called once per connection; a second call raises GuestProtocolError. Closing is
    idempotent. Closing the connection in the middle of an exec kills the command's session
    in the guest; in the middle of a put it leaves nothing new behind.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._used = False
        self._closed = False

    # -- plumbing

    async def __aenter__(self) -> GuestConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection (idempotent, bounded, cancellation-safe).

        Bytes still buffered get :data:`CLOSE_GRACE_S` to reach a peer; a peer that stopped
        reading (a frozen guest) gets its transport aborted after that, so close() returns
        and the socket is gone either way. A cancellation arriving while close() waits
        aborts the transport too, then propagates.
        """
        if self._closed:
            return
        self._closed = True
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_GRACE_S)
        except asyncio.TimeoutError:
            self.writer.transport.abort()
        except asyncio.CancelledError:
            self.writer.transport.abort()
            raise
        except OSError:
            pass  # already reset by the other side: closed all the same

    async def send(self, type_: int, payload: bytes = b"") -> None:
        """Sends one raw frame and waits until the transport takes it."""
        await self._write(encode_frame(type_, payload))

    async def send_json(self, type_: int, obj: dict[str, Any]) -> None:
        """Sends one JSON frame."""
        await self._write(encode_json(type_, obj))

    async def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise GuestConnectionClosed(f"the connection to the guest agent broke: {exc}",
                                        hint="check that the guest agent still runs in the microVM") from exc

    async def receive(self) -> Frame:
        """The next frame; raises GuestConnectionClosed if the connection ends instead."""
        try:
            frame = await read_frame(self.reader)
        except (ConnectionError, OSError) as exc:
            raise GuestConnectionClosed(f"the connection to the guest agent broke: {exc}") from exc
        if frame is None:
            raise GuestConnectionClosed(
                "the guest agent closed the connection in the middle of an operation",
                hint="the guest agent may have crashed or been killed: it restarts by itself; try again",
            )
        return frame

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Sends ``REQ {"v": 1, "op": op, **fields}``, returns the RES body (``ok`` true).

        Raises the typed GuestAgentError for ``ok: false``. ``None`` fields are left out.
        """
        if self._used:
            raise GuestProtocolError("one operation per guest agent connection: open a new one")
        self._used = True
        body = {"v": PROTOCOL_VERSION, "op": op, **{k: v for k, v in fields.items() if v is not None}}
        await self.send_json(FrameType.REQ, body)
        frame = await self.receive()
        if frame.type != FrameType.RES:
            raise GuestProtocolError(f"expected RES, the guest agent sent frame type {frame.type!r}")
        res = frame.json()
        if res.get("ok") is not True:
            raise error_from_response(res)
        return res

    # -- info

    async def info(self) -> dict[str, Any]:
        """``{"version", "arch", "kernel", "hostname", "uptime_s", "pid", "ops", "checksums", "addresses": [...]}``
        (``checksums``, the transfer checksums it accepts, is missing from older guest agents)."""
        res = await self.request("info")
        res.pop("ok", None)
        return res

    # -- exec

    async def start_exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | Sequence[str] | None = None,
        cwd: str | None = None,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        stdin: bool = True,
        timeout_s: float = 0,
    ) -> int:
        """Starts a command; returns its pid in the guest.

        ``env`` (a mapping or ``"K=V"`` strings) is added to the guest's default
        environment. With ``tty`` the command gets a pty of ``rows`` x ``cols`` and all its
        output arrives as stdout. With ``stdin`` false its stdin is /dev/null; otherwise
        call :meth:`close_stdin` when the input is complete. ``timeout_s`` > 0 kills it
        (SIGKILL to its whole session) after that many seconds.
        Raises GuestCommandNotFound, GuestNotExecutable, GuestNotFound (cwd) ...
        """
        if not argv:
            raise GuestBadRequest("exec needs a command", hint="give at least the program name")
        env_list = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env or [])
        res = await self.request(
            "exec", argv=list(argv), env=env_list, cwd=cwd, tty=tty, rows=rows, cols=cols,
            stdin=stdin, timeout_s=timeout_s,
        )
        return int(res["pid"])

    async def write_stdin(self, data: bytes) -> None:
        """Sends bytes to the command's stdin (split into frames as needed; empty: nothing)."""
        for i in range(0, len(data), MAX_FRAME):
            await self.send(FrameType.STDIN, data[i:i + MAX_FRAME])

    async def close_stdin(self) -> None:
        """Ends the command's stdin (with a tty: types the terminal's EOF character, ^D)."""
        await self.send(FrameType.STDIN, b"")

    async def resize(self, rows: int, cols: int) -> None:
        """Sets the pty's window size (the command gets SIGWINCH); ignored without a tty."""
        await self.send_json(FrameType.CTRL, {"type": "resize", "rows": rows, "cols": cols})

    async def send_signal(self, signal: int) -> None:
        """Sends signal number ``signal`` to the command's process group."""
        await self.send_json(FrameType.CTRL, {"type": "signal", "signal": int(signal)})

    async def exec_events(self) -> AsyncIterator[ExecEvent]:
        """The command's output as :class:`ExecOutput` (an empty one ends that stream), then
        exactly one :class:`ExecExit`, after which the iteration stops.
        """
        while True:
            frame = await self.receive()
            if frame.type == FrameType.STDOUT:
                yield ExecOutput("stdout", frame.payload)
            elif frame.type == FrameType.STDERR:
                yield ExecOutput("stderr", frame.payload)
            elif frame.type == FrameType.EXIT:
                body = frame.json()
                sig = body.get("signal")
                yield ExecExit(int(body["exit_code"]), int(sig) if sig is not None else None,
                               bool(body.get("timed_out")))
                return
            else:
                raise GuestProtocolError(f"unexpected frame type {frame.type!r} during exec")

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | Sequence[str] | None = None,
        cwd: str | None = None,
        timeout_s: float = 0,
        max_output: int | None = None,
    ) -> ExecResult:
        """Runs a command to completion and collects its output (no tty).

        ``stdin`` bytes are piped in and closed (None: stdin is /dev/null). Raises
        :class:`OutputTooLarge` once a stream exceeds ``max_output`` bytes (the connection
        is then closed, which kills the command).
        """
        await self.start_exec(argv, env=env, cwd=cwd, stdin=stdin is not None, timeout_s=timeout_s)
        feeder = asyncio.ensure_future(self._feed(stdin)) if stdin is not None else None
        out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        try:
            async for event in self.exec_events():
                if isinstance(event, ExecOutput):
                    buf = out[event.stream]
                    buf += event.data
                    if max_output is not None and len(buf) > max_output:
                        raise OutputTooLarge(
                            f"the command's {event.stream} exceeded {max_output} bytes",
                            hint="stream the output instead (the exec WebSocket)",
                        )
                else:
                    return ExecResult(event.exit_code, event.signal, event.timed_out,
                                      bytes(out["stdout"]), bytes(out["stderr"]))
        finally:
            if feeder is not None:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
            await self.close()
        raise GuestProtocolError("exec ended without EXIT")  # pragma: no cover (exec_events returns)

    async def _feed(self, data: bytes) -> None:
        try:
            await self.write_stdin(data)
            await self.close_stdin()
        except GuestConnectionClosed:
            pass  # the command may exit without reading its input; EXIT still arrives

    # -- files

    async def stat(self, path: str) -> GuestStat:
        """``lstat`` of an absolute guest path; raises GuestNotFound if it does not exist."""
        return GuestStat.from_json(await self.request("stat", path=path))

    async def get(self, path: str, *, checksum: str = DEFAULT_CHECKSUM) -> GetStream:
        """Starts sending the tree at the absolute guest ``path`` (a file, directory or
        symlink, not followed); iterate the returned :class:`GetStream` to receive it.

        ``checksum`` (one of :data:`CHECKSUMS`) is what each file's FILE_END should
        carry; the stream checks whatever the guest's answer names (sha256 from a guest
        agent that predates the choice). Raises ValidationError for an unknown
        ``checksum``, GuestNotFound (and the like) before anything is sent.
        """
        res = await self.request("get", path=path, checksum=require_known(checksum))
        return GetStream(self, GuestStat.from_json(res), answered(res))

    async def get_tree(self, path: str, local_dir: str | os.PathLike[str], *,
                       checksum: str = DEFAULT_CHECKSUM) -> TransferResult:
        """Copies the guest's ``path`` into the existing local directory ``local_dir``
        (as ``local_dir/<basename>``), keeping modes, mtimes and symlinks, every file
        checked by size and ``checksum`` (as :meth:`get`). On any failure nothing new is
        left in ``local_dir``. Raises NotFoundError when ``local_dir`` is not a directory
        (before asking the guest).
        """
        try:
            writer = LocalTreeWriter(Path(local_dir))
            stream = await self.get(path, checksum=checksum)
        except BaseException:
            await self.close()
            raise
        try:
            async for item in stream:
                if isinstance(item, TreeEntry):
                    writer.begin(item)
                else:
                    writer.write(item)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        finally:
            await self.close()
        assert stream.result is not None
        return stream.result

    async def begin_put(self, remote_dir: str, *, checksum: str = DEFAULT_CHECKSUM) -> PutSession:
        """Starts a put into the existing absolute guest directory ``remote_dir``.

        ``checksum`` (one of :data:`CHECKSUMS`) is what the session's FILE_ENDs should
        carry; it uses whatever the guest's answer names (sha256 from a guest agent that
        predates the choice). Raises ValidationError for an unknown ``checksum``,
        GuestNotFound / GuestNotADirectory before anything is sent.
        """
        res = await self.request("put", path=remote_dir, checksum=require_known(checksum))
        return PutSession(self, answered(res))

    async def put_tree(self, local_path: str | os.PathLike[str], remote_dir: str,
                       *, chunk_size: int = 512 * 1024, checksum: str = DEFAULT_CHECKSUM) -> TransferResult:
        """Copies a local file, directory or symlink into the existing guest directory
        ``remote_dir`` (as ``remote_dir/<basename>``), keeping modes, mtimes and symlinks,
        every file checked by size and ``checksum`` in the guest (as :meth:`begin_put`).

        All or nothing: the guest moves the tree into place only after END, and a failure
        or a cut connection leaves nothing new there.
        """
        try:
            session = await self.begin_put(remote_dir, checksum=checksum)
            for entry, path in iter_local_tree(Path(local_path)):
                await session.entry(entry)
                if entry.type == "file":
                    with open(path, "rb") as f:
                        while chunk := f.read(min(chunk_size, MAX_FRAME)):
                            await session.data(chunk)
                    await session.file_end()
            return await session.finish()
        finally:
            await self.close()

    # -- connect

    async def connect(self, port: int, host: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Opens a TCP connection to ``host:port`` inside the guest; afterwards this
        connection's ``(reader, writer)`` is that raw byte stream (returned for convenience).

        Raises GuestConnectionRefused when nothing listens there.
        """
        await self.request("connect", port=int(port), host=host)
        return self.reader, self.writer


# ---- opening connections ---------------------------------------------------------------------


async def _opened(opener: Any, what: str, timeout: float) -> GuestConnection:
    try:
        reader, writer = await asyncio.wait_for(opener, timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise GuestConnectionClosed(
            f"cannot reach the guest agent at {what}: {exc or 'timed out'}",
            hint="check that the microVM runs and its guest agent has started",
        ) from exc
    return GuestConnection(reader, writer)


async def open_unix(path: str, *, timeout: float = 10.0) -> GuestConnection:
    """A connection to a guest agent listening on a Unix socket (``--listen unix:PATH``)."""
    return await _opened(asyncio.open_unix_connection(path, limit=2 * MAX_FRAME), f"unix:{path}", timeout)


async def open_tcp(host: str, port: int, *, timeout: float = 10.0) -> GuestConnection:
    """A connection to a guest agent listening on TCP (``--listen tcp:HOST:PORT``)."""
    return await _opened(asyncio.open_connection(host, port, limit=2 * MAX_FRAME), f"tcp:{host}:{port}", timeout)


async def open_hybrid_vsock(uds_path: str, port: int = GUEST_AGENT_PORT, *, timeout: float = 10.0) -> GuestConnection:
    """A connection to a guest's vsock ``port`` through Firecracker's hybrid vsock socket
    (the handshake is :func:`fc_macos.guest.hybrid_vsock.dial`).

    Firecracker closes the socket instead of answering ``OK`` when nothing listens on that
    port in the guest: that raises GuestConnectionClosed saying the guest agent is not (yet)
    listening; a socket nobody accepts on says the guest agent cannot be reached.
    """
    try:
        reader, writer = await dial(uds_path, port, timeout=timeout, limit=2 * MAX_FRAME)
    except VsockDialError as exc:
        if exc.reason == "no_device":
            raise GuestConnectionClosed(
                f"cannot reach the guest agent at vsock {uds_path}: {exc.message}",
                hint="check that the microVM runs and its guest agent has started",
            ) from exc
        if exc.reason == "closed":
            raise GuestConnectionClosed(
                f"nothing listens on vsock port {port} in the guest ({exc.message})",
                hint="the guest agent has not started (yet): wait for the microVM to boot, "
                "or check that its image has /sbin/fc-guest-agent",
            ) from exc
        raise GuestConnectionClosed(
            f"no answer to CONNECT {port} on {uds_path}: {exc.message}",
            hint="the microVM may be paused or still booting",
        ) from exc
    return GuestConnection(reader, writer)


__all__ = [
    "CHECKSUMS",
    "GUEST_AGENT_PORT",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "ExecEvent",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "GetItem",
    "GetStream",
    "GuestAgentError",
    "GuestBadRequest",
    "GuestChecksumMismatch",
    "GuestCommandNotFound",
    "GuestConnection",
    "GuestConnectionClosed",
    "GuestConnectionRefused",
    "GuestExists",
    "GuestIOError",
    "GuestNotADirectory",
    "GuestNotExecutable",
    "GuestNotFound",
    "GuestPermissionDenied",
    "GuestProtocolError",
    "GuestStat",
    "LocalTreeWriter",
    "OutputTooLarge",
    "PutSession",
    "TransferResult",
    "TreeEntry",
    "encode_frame",
    "encode_json",
    "error_from_response",
    "iter_local_tree",
    "open_hybrid_vsock",
    "open_tcp",
    "open_unix",
    "read_frame",
]
