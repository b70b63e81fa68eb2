"""Fixtures for the guest agent tests: the real x86_64 binary, serving on a Unix socket.

This host has no usable vsock loopback, so the server listens on ``unix:PATH``; everything
after the listener (framing, operations, processes) is the same code as in a guest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fc_macos.errors import NotFoundError
from fc_macos.guest import binary_path
from fc_macos.guest.protocol import GuestConnection, open_unix


@pytest.fixture(scope="session")
def agent_binary() -> Path:
    """The x86_64 guest agent, built now if this checkout has not built it yet."""
    try:
        return binary_path("x86_64")
    except NotFoundError:
        from fc_macos.guest.build import GuestBuildError, build

        try:
            return build("x86_64")
        except GuestBuildError as exc:
            pytest.skip(f"cannot build the guest agent: {exc}")


@dataclass
class RunningAgent:
    socket: str
    proc: subprocess.Popen[bytes]

    async def connect(self) -> GuestConnection:
        return await open_unix(self.socket)


def wait_for_socket(path: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10) -> None:
    """Until the server accepts connections on ``path`` (the file exists before listen())."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return
            except OSError:
                pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the guest agent exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the guest agent did not listen on {path}")
        time.sleep(0.02)


@pytest.fixture
def guest_agent(agent_binary: Path, short_tmp: Path) -> Iterator[RunningAgent]:
    """A server on ``unix:<short_tmp>/ga.sock`` in its own session (killed whole afterwards)."""
    sock = str(short_tmp / "ga.sock")
    proc = subprocess.Popen([str(agent_binary), "--listen", f"unix:{sock}"], start_new_session=True,
                            stderr=subprocess.DEVNULL)
    wait_for_socket(sock, proc)
    yield RunningAgent(sock, proc)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture
async def conn(guest_agent: RunningAgent) -> AsyncIterator[GuestConnection]:
    """One connection to :func:`guest_agent` (one operation)."""
    c = await guest_agent.connect()
    yield c
    await c.close()
