"""Ways to reach the guest agent: Firecracker's hybrid vsock handshake (against a stand-in
for Firecracker's vsock Unix socket, tests/helpers/hybrid_vsock.py, relaying to the real agent)
and the tcp listener."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fc_macos.guest import GUEST_AGENT_PORT
from fc_macos.guest.protocol import GuestConnectionClosed, open_hybrid_vsock, open_tcp

from tests.helpers.hybrid_vsock import hybrid_vsock

from .conftest import RunningAgent


@pytest.fixture
async def vsock_uds(guest_agent: RunningAgent, short_tmp: Path) -> AsyncIterator[str]:
    """Like Firecracker's vsock uds_path: ``CONNECT <port>\\n``, then ``OK <n>\\n`` and the
    guest's stream if something listens on that port (only 10240 here), else a close."""
    async with hybrid_vsock(short_tmp / "v.sock", {GUEST_AGENT_PORT: Path(guest_agent.socket)}) as vsock:
        yield str(vsock.path)


async def test_hybrid_vsock_handshake_then_protocol(vsock_uds: str) -> None:
    async with await open_hybrid_vsock(vsock_uds) as c:
        r = await c.run(["echo", "through vsock"])
    assert r.stdout == b"through vsock\n"


async def test_hybrid_vsock_nothing_listening_on_the_port(vsock_uds: str) -> None:
    with pytest.raises(GuestConnectionClosed, match="nothing listens on vsock port 4242") as info:
        await open_hybrid_vsock(vsock_uds, 4242)
    assert "has not started" in (info.value.hint or "")


async def test_hybrid_vsock_missing_socket(short_tmp: Path) -> None:
    with pytest.raises(GuestConnectionClosed, match="cannot reach the guest agent"):
        await open_hybrid_vsock(str(short_tmp / "absent.sock"))


async def test_tcp_listener(agent_binary: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(agent_binary), "--listen", f"tcp:127.0.0.1:{port}"], start_new_session=True,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                c = await open_tcp("127.0.0.1", port, timeout=1)
                break
            except GuestConnectionClosed:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"the guest agent did not listen on tcp:127.0.0.1:{port}")
        async with c:
            assert (await c.info())["version"] == "0.1.0"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
