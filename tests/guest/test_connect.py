"""connect: a raw byte stream to a TCP port in the guest."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fc_macos.guest.protocol import GuestConnectionRefused

from .conftest import RunningAgent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connect_streams_both_ways(guest_agent: RunningAgent) -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the guest\n")
        line = await reader.readline()
        seen.append(line)
        writer.write(line.upper() + b"x" * (3 << 20))  # more than any buffer on the way
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with await guest_agent.connect() as c:
            reader, writer = await c.connect(port)
            assert await reader.readline() == b"hello from the guest\n"
            writer.write(b"ping\n")
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), 10)  # the guest side closing ends ours
    assert seen == [b"ping\n"]
    assert rest == b"PING\n" + b"x" * (3 << 20)


async def test_client_closing_ends_the_guest_side(guest_agent: RunningAgent) -> None:
    ended = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        ended.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        c = await guest_agent.connect()
        await c.connect(server.sockets[0].getsockname()[1])
        await c.close()
        await asyncio.wait_for(ended.wait(), 5)


async def test_nothing_listening_is_connection_refused(guest_agent: RunningAgent) -> None:
    port = free_port()
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestConnectionRefused, match=f"127.0.0.1:{port}") as info:
            await c.connect(port)
    assert "start the service" in (info.value.hint or "")
