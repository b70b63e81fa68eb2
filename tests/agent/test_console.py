"""The console broker over real FIFOs, with a shell script as the VMM (a
process-boundary double): serial.log, scrollback, several viewers, input,
and the end of the console when the VMM exits."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.agent.console import ConsoleBroker, Viewer
from fc_macos.errors import ConflictError
from fc_macos.firecracker.launcher import VMMPaths, VMMProcess, launch

ECHO_VMM = """#!/bin/sh
echo "ready"
while read -r line; do echo "got $line"; done
"""


@pytest.fixture
def vmm(short_tmp: Path) -> Iterator[VMMProcess]:
    script = short_tmp / "echo-vmm"
    script.write_text(ECHO_VMM)
    script.chmod(0o755)
    paths = VMMPaths(short_tmp / "vm")
    paths.workdir.mkdir()
    process = launch(str(script), "echo", paths)
    yield process
    process.signal(signal.SIGKILL)


async def received(viewer: Viewer, text: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    while text not in seen:
        chunk = await asyncio.wait_for(viewer.queue.get(), timeout)
        assert chunk is not None, f"console closed ({viewer.close_reason}) before {text!r}"
        seen += chunk
    return seen


async def test_viewers_log_scrollback_input_and_close(vmm: VMMProcess) -> None:
    broker = ConsoleBroker("echo", vmm.paths)
    broker.start()
    try:
        first = broker.attach()
        await received(first, b"ready\n")
        await broker.write(b"one\n")
        await received(first, b"got one\n")

        replayed = broker.attach()  # the scrollback comes first
        assert b"ready\ngot one\n" in await received(replayed, b"got one\n")
        live_only = broker.attach(replay=False)
        assert live_only.queue.empty()

        await broker.write(b"two\n")  # any viewer's input reaches the guest; all see the output
        for viewer in (first, replayed, live_only):
            await received(viewer, b"got two\n")
        broker.detach(first)
        assert broker.viewer_count == 2
        assert vmm.paths.serial_log.read_bytes() == b"ready\ngot one\ngot two\n"

        vmm.signal(signal.SIGTERM)
        await asyncio.wait_for(broker.eof.wait(), 30)  # event-driven: EOF once every writer is gone
        broker.close("microVM echo stopped (exit status 143)")
        for viewer in (replayed, live_only):
            while (chunk := await viewer.queue.get()) is not None:
                pass
            assert viewer.close_reason == "microVM echo stopped (exit status 143)"
        with pytest.raises(ConflictError):
            broker.attach()
        with pytest.raises(ConflictError):
            await broker.write(b"three\n")
    finally:
        broker.close("test over")


async def test_scrollback_keeps_only_the_last_bytes_and_survives_a_new_broker(vmm: VMMProcess) -> None:
    broker = ConsoleBroker("echo", vmm.paths, scrollback_bytes=16)
    broker.start()
    viewer = broker.attach()
    for word in ("alpha", "beta", "gamma"):
        await broker.write(f"{word}\n".encode())
        await received(viewer, f"got {word}\n".encode())
    assert broker.scrollback() == b"got beta\ngot gamma\n"[-16:]
    broker.close("agent restarting")
    # a new broker (as after an agent restart) seeds its scrollback from serial.log
    again = ConsoleBroker("echo", vmm.paths, scrollback_bytes=16)
    again.start()
    try:
        assert again.scrollback() == b"got beta\ngot gamma\n"[-16:]
        viewer = again.attach(replay=False)
        await again.write(b"delta\n")
        await received(viewer, b"got delta\n")
    finally:
        again.close("test over")


async def test_resize_is_recorded_not_sent(vmm: VMMProcess) -> None:
    broker = ConsoleBroker("echo", vmm.paths)
    broker.start()
    try:
        viewer = broker.attach()
        await received(viewer, b"ready\n")
        broker.resize(50, 132)
        assert broker.size == (50, 132)
        await broker.write(b"after\n")
        seen = await received(viewer, b"got after\n")
        assert b"50" not in seen and b"132" not in seen
    finally:
        broker.close("test over")
