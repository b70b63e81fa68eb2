"""GuestConnection.close() against a peer that stopped reading (a frozen guest, a stuck
relay): a real Unix socket whose other end accepts and never reads, so the bytes the
connection still holds can never be flushed and ``wait_closed`` alone would wait forever."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fc_macos.guest import protocol
from fc_macos.guest.protocol import GuestConnection, open_unix

#: More than the kernel's socket buffers on both ends hold, so the rest stays in the transport.
UNSENDABLE = 64 * 1024 * 1024


@pytest.fixture
async def stuck_peer(short_tmp: Path) -> AsyncIterator[tuple[str, list[socket.socket]]]:
    """A Unix socket server that accepts connections and never reads from them."""
    path = str(short_tmp / "stuck.sock")
    accepted: list[socket.socket] = []
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            accepted.append(conn)

    task = asyncio.create_task(accept())
    try:
        yield path, accepted
    finally:
        task.cancel()
        for s in accepted:
            s.close()
        listener.close()


async def _clogged(path: str) -> GuestConnection:
    """A connection to ``path`` with more written than the peer will ever take."""
    conn = await open_unix(path)
    conn.writer.write(b"\0" * UNSENDABLE)
    await asyncio.sleep(0.05)  # the kernel takes what fits; the rest stays buffered
    assert conn.writer.transport.get_write_buffer_size() > 0
    return conn


def _socket_closed(conn: GuestConnection) -> bool:
    sock = conn.writer.transport.get_extra_info("socket")
    return bool(sock.fileno() == -1)


async def test_close_cancelled_while_the_peer_does_not_read_aborts_the_socket(
    stuck_peer: tuple[str, list[socket.socket]],
) -> None:
    conn = await _clogged(stuck_peer[0])
    closing = asyncio.create_task(conn.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # still within the grace, waiting for the flush
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(closing, 10)  # a hang guard, not a timing claim
    await asyncio.sleep(0)  # the transport closes its socket on the next loop turn
    assert _socket_closed(conn)
    assert conn.writer.transport.get_write_buffer_size() == 0
    await asyncio.wait_for(conn.close(), 10)  # a second close returns at once


async def test_close_gives_up_on_a_peer_that_does_not_read_after_the_grace(
    stuck_peer: tuple[str, list[socket.socket]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "CLOSE_GRACE_S", 0.2)
    conn = await _clogged(stuck_peer[0])
    await asyncio.wait_for(conn.close(), 10)  # returns (no error) instead of waiting forever
    await asyncio.sleep(0)
    assert _socket_closed(conn)


async def test_close_of_a_healthy_connection_flushes_and_closes(
    stuck_peer: tuple[str, list[socket.socket]],
) -> None:
    path, accepted = stuck_peer
    conn = await open_unix(path)
    conn.writer.write(b"last words")
    await asyncio.wait_for(conn.close(), 10)
    assert _socket_closed(conn)
    for _ in range(100):
        if accepted:
            break
        await asyncio.sleep(0.01)
    peer = accepted[0]
    peer.setblocking(True)
    peer.settimeout(5)
    received = b""
    while chunk := peer.recv(4096):
        received += chunk
    assert received == b"last words"  # flushed, then an orderly end of stream
