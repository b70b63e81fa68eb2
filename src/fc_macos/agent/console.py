"""The console broker: one per running microVM.

It reads the VMM's stdout FIFO (``console.out``) as data arrives
(``loop.add_reader``, no polling), appends every byte to ``serial.log``, keeps
the last :data:`SCROLLBACK_BYTES` in memory and hands each chunk to every
attached viewer. Input from any viewer goes to the VMM's stdin FIFO
(``console.in``). Viewers come and go freely; none of them owns the microVM.
When the microVM stops, :meth:`ConsoleBroker.close` ends every viewer with a
reason.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass, field

from fc_macos.errors import ConflictError
from fc_macos.firecracker.launcher import VMMPaths


def resolve_once(future: asyncio.Future[None]) -> None:
    """Mark ``future`` done unless it is already (a reader/writer callback may fire twice)."""
    if not future.done():
        future.set_result(None)

log = logging.getLogger("fc_agent.console")

SCROLLBACK_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
#: Chunks a viewer may fall behind before it is dropped.
VIEWER_BACKLOG = 4096


@dataclass(eq=False)
class Viewer:
    """One attached viewer. ``queue`` yields output chunks, then ``None`` when
    the console closed; ``close_reason`` says why."""

    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(VIEWER_BACKLOG))
    close_reason: str = ""


class ConsoleBroker:
    """Broker of one microVM's serial console. ``start`` once, ``close`` once."""

    def __init__(self, name: str, paths: VMMPaths, *, scrollback_bytes: int = SCROLLBACK_BYTES) -> None:
        self.name = name
        self.paths = paths
        self.scrollback_bytes = scrollback_bytes
        self.size: tuple[int, int] | None = None
        self.eof = asyncio.Event()
        self._scrollback = bytearray()
        self._viewers: set[Viewer] = set()
        self._out_fd: int | None = None
        self._in_fd: int | None = None
        self._log_fd: int | None = None
        self._write_lock = asyncio.Lock()
        self._closed: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def start(self) -> None:
        """Open the FIFOs and ``serial.log`` and start reading. The scrollback is
        seeded from the end of ``serial.log`` (so it survives agent restarts)."""
        self._loop = asyncio.get_running_loop()
        self._log_fd = os.open(self.paths.serial_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            with open(self.paths.serial_log, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - self.scrollback_bytes))
                self._scrollback = bytearray(fh.read())
        except OSError:
            pass
        self._out_fd = os.open(self.paths.console_out, os.O_RDONLY | os.O_NONBLOCK)
        self._loop.add_reader(self._out_fd, self._on_readable)

    def _on_readable(self) -> None:
        assert self._out_fd is not None
        try:
            data = os.read(self._out_fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("%s: reading the console failed: %s", self.name, exc)
            data = b""
        if not data:
            # Every writer is gone: the VMM (and whatever inherited its stdout) exited.
            self._stop_reading()
            self.eof.set()
            return
        if self._log_fd is not None:
            try:
                os.write(self._log_fd, data)
            except OSError as exc:
                log.warning("%s: cannot append to serial.log: %s", self.name, exc)
        self._scrollback += data
        if len(self._scrollback) > self.scrollback_bytes:
            del self._scrollback[: len(self._scrollback) - self.scrollback_bytes]
        for viewer in list(self._viewers):
            try:
                viewer.queue.put_nowait(data)
            except asyncio.QueueFull:
                self._drop(viewer, "console viewer fell too far behind; attach again")

    def _stop_reading(self) -> None:
        if self._out_fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._out_fd)
            os.close(self._out_fd)
            self._out_fd = None

    def scrollback(self) -> bytes:
        return bytes(self._scrollback)

    def attach(self, *, replay: bool = True) -> Viewer:
        """A new viewer; with ``replay`` its queue starts with the scrollback.
        ConflictError if the console is closed (the microVM stopped)."""
        if self._closed is not None:
            raise ConflictError(
                f"microVM {self.name!r} is not running ({self._closed})",
                hint=f"read what it printed: 'fc-macos microvm logs --name {self.name}' (GET /v1/microvms/{self.name}/logs)",
            )
        viewer = Viewer()
        if replay and self._scrollback:
            viewer.queue.put_nowait(bytes(self._scrollback))
        self._viewers.add(viewer)
        return viewer

    def detach(self, viewer: Viewer) -> None:
        """Forget ``viewer``; the microVM keeps running. Idempotent."""
        self._viewers.discard(viewer)

    def _drop(self, viewer: Viewer, reason: str) -> None:
        self._viewers.discard(viewer)
        viewer.close_reason = reason
        while True:
            try:
                viewer.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                viewer.queue.get_nowait()

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)

    def resize(self, rows: int, cols: int) -> None:
        """Record the viewer's terminal size (it is not sent to the guest)."""
        self.size = (rows, cols)

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the guest's serial input, waiting while the pipe is full.
        ConflictError if the VMM no longer reads its stdin."""
        async with self._write_lock:
            fd = self._input_fd()
            view = memoryview(data)
            while view:
                try:
                    n = os.write(fd, view)
                    view = view[n:]
                except BlockingIOError:
                    await self._writable(fd)
                except BrokenPipeError as exc:
                    raise self._not_running() from exc

    def _input_fd(self) -> int:
        if self._closed is not None:
            raise self._not_running()
        if self._in_fd is None:
            try:
                self._in_fd = os.open(self.paths.console_in, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader: the VMM is gone
                    raise self._not_running() from exc
                raise
        return self._in_fd

    async def _writable(self, fd: int) -> None:
        assert self._loop is not None
        ready = self._loop.create_future()
        self._loop.add_writer(fd, resolve_once, ready)
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def _not_running(self) -> ConflictError:
        return ConflictError(
            f"microVM {self.name!r} no longer reads its console",
            hint=f"check it: 'fc-macos microvm status --name {self.name}' (GET /v1/microvms/{self.name})",
        )

    async def drain(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until everything the VMM wrote was read."""
        try:
            await asyncio.wait_for(self.eof.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    def close(self, reason: str) -> None:
        """Stop reading, end every viewer with ``reason``, close the files.
        Idempotent. The microVM is not touched."""
        if self._closed is not None:
            return
        self._closed = reason
        self._stop_reading()
        for viewer in list(self._viewers):
            self._drop(viewer, reason)
        for attr in ("_in_fd", "_log_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
