"""The hybrid vsock dialer against a Unix socket that speaks Firecracker's
CONNECT/OK handshake, and the CID allocation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fc_macos.agent import vsock
from tests.helpers.hybrid_vsock import hybrid_vsock


async def echo_server(path: Path, *, greeting: bytes = b"") -> asyncio.AbstractServer:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(serve, str(path))


async def test_dial_connects_and_keeps_the_bytes_after_ok(short_tmp: Path) -> None:
    echo = await echo_server(short_tmp / "echo.sock", greeting=b"hello")
    # the guest's first bytes arrive in the same read as the OK line: they must not be lost
    async with hybrid_vsock(short_tmp / "v.sock", {10240: short_tmp / "echo.sock"}, ok_extra=b">") as fake:
        reader, writer = await vsock.dial(short_tmp / "v.sock", 10240, timeout=5)
        assert await reader.readexactly(6) == b">hello"
        writer.write(b"ping")
        await writer.drain()
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        assert fake.connects == [10240]
    echo.close()


async def test_nothing_listening_on_the_port_is_closed(short_tmp: Path) -> None:
    async with hybrid_vsock(short_tmp / "v.sock", {}):
        with pytest.raises(vsock.VsockDialError) as info:
            await vsock.dial(short_tmp / "v.sock", 80, timeout=5)
    assert info.value.reason == "closed" and "vsock port 80" in info.value.message


async def test_missing_socket_is_no_device(short_tmp: Path) -> None:
    with pytest.raises(vsock.VsockDialError) as info:
        await vsock.dial(short_tmp / "gone.sock", 10240, timeout=5)
    assert info.value.reason == "no_device" and str(short_tmp / "gone.sock") in info.value.message


async def test_silent_socket_times_out_and_garbage_is_a_protocol_error(short_tmp: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        await asyncio.sleep(5)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"NOPE 1\n")
        await writer.drain()

    servers = [await asyncio.start_unix_server(silent, str(short_tmp / "silent.sock")),
               await asyncio.start_unix_server(garbage, str(short_tmp / "garbage.sock"))]  # fmt: skip
    with pytest.raises(vsock.VsockDialError) as info:
        await vsock.dial(short_tmp / "silent.sock", 10240, timeout=0.3)
    assert info.value.reason == "timeout"
    with pytest.raises(vsock.VsockDialError) as info:
        await vsock.dial(short_tmp / "garbage.sock", 10240, timeout=5)
    assert info.value.reason == "protocol" and "NOPE" in info.value.message
    for server in servers:
        server.close()


def test_cid_is_the_lowest_free_from_3() -> None:
    assert vsock.allocate_cid([]) == 3
    assert vsock.allocate_cid([3, 4, 6]) == 5
    assert vsock.allocate_cid([4]) == 3
    assert vsock.uds_path(Path("/s/microvms/web")) == Path("/s/microvms/web/vsock.sock")
