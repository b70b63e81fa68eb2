"""A stand-in for Firecracker's hybrid vsock socket, for tests without a VMM:
a Unix socket that takes ``CONNECT <port>\\n``, answers ``OK <n>\\n`` and then
splices the stream to whatever ``backends[port]`` connects to (a Unix socket
path: e.g. the real ``fc-guest-agent --listen unix:PATH`` on this host). A
CONNECT to a port without a backend is closed unanswered, as Firecracker
does when nothing listens in the guest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

HOST_PORT_BASE = 1 << 30


class HybridVsock:
    """``backends``: guest port -> Unix socket path. ``ok_extra`` is sent in the
    same write as the OK line (bytes a guest might send at once). ``connects``
    lists the port of every CONNECT; ``live`` counts the streams spliced now,
    and :meth:`reset` breaks them all (as a snapshot restore does to the
    guest's connections)."""

    def __init__(self, path: Path, backends: dict[int, Path] | None = None, *, ok_extra: bytes = b"") -> None:
        self.path = path
        self.backends = dict(backends or {})
        self.ok_extra = ok_extra
        self.connects: list[int] = []
        self._live: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._next = HOST_PORT_BASE

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            fields = line.split()
            if len(fields) != 2 or fields[0] != b"CONNECT" or not fields[1].isdigit():
                return
            port = int(fields[1])
            self.connects.append(port)
            backend = self.backends.get(port)
            if backend is None:
                return
            try:
                b_reader, b_writer = await asyncio.open_unix_connection(str(backend))
            except OSError:
                return
            self._next += 1
            writer.write(b"OK %d\n" % self._next + self.ok_extra)
            await writer.drain()
            self._live.add(writer)
            await _splice(reader, writer, b_reader, b_writer)
        finally:
            self._live.discard(writer)
            writer.close()

    @property
    def live(self) -> int:
        return len(self._live)

    def reset(self) -> None:
        """Break every spliced stream (the host side sees its connection end)."""
        for writer in list(self._live):
            writer.transport.abort()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _splice(
    a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter,
) -> None:  # fmt: skip
    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.create_task(pump(a_reader, b_writer)), asyncio.create_task(pump(b_reader, a_writer))]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    a_writer.close()
    b_writer.close()


@contextlib.asynccontextmanager
async def hybrid_vsock(path: Path, backends: dict[int, Path] | None = None, **kw: bytes) -> AsyncIterator[HybridVsock]:
    vsock = HybridVsock(path, backends, **kw)
    await vsock.start()
    try:
        yield vsock
    finally:
        await vsock.close()
