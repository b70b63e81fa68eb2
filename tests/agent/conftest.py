"""Fixtures for fc-agent tests: a short state directory (Unix socket paths are
limited to 107 bytes), the app served in-process on a real TCP port, the test
VMM (tests/doubles/firecracker_vmm.py) as the Firecracker binary, and the
offline guest images as an image directory."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fc_macos.agent.app import create_app
from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.wire import DEFAULT_BOOT_ARGS
from fc_macos.firecracker.launcher import proc_start_time

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def image_dir(short_tmp: Path) -> Path:
    """An extra image directory holding a small non-kernel 'vmlinux' and a rootfs."""
    d = short_tmp / "img"
    d.mkdir()
    (d / "vmlinux").write_bytes(b"not an ELF kernel\n")
    (d / "rootfs.ext4").write_bytes(b"\0" * 4096)
    return d


@pytest.fixture
def settings(short_tmp: Path, image_dir: Path) -> AgentSettings:
    return AgentSettings(
        token=TOKEN,
        state_dir=short_tmp / "state",
        firecracker_bin=str(TEST_VMM),
        image_dirs=(image_dir,),
        nat=False,  # tests never touch this machine's firewall or ip_forward
    )


async def serve(settings: AgentSettings) -> TestClient:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


def kill_recorded_vmms(state_dir: Path) -> None:
    """Safety net: SIGKILL every VMM state.json still names (a test that failed
    half-way must not leave QEMU guests behind)."""
    try:
        state = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return
    for record in state.get("microvms", {}).values():
        pid, start = record.get("pid"), record.get("start_time")
        if pid and start and proc_start_time(pid) == start:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def client(settings: AgentSettings) -> AsyncIterator[TestClient]:
    """The agent app on a local port; requests carry no token unless given ``headers=AUTH``."""
    c = await serve(settings)
    try:
        yield c
    finally:
        await c.close()
        kill_recorded_vmms(settings.state_dir)


PROMPT_TIMEOUT_S = 180.0  # three guests under QEMU TCG on two shared cores


def live_processes_mentioning(text: str) -> list[int]:
    """Pids of non-zombie processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if text.encode() in cmdline and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(entry))
    return found


@pytest.fixture
def guest_settings(settings: AgentSettings) -> AgentSettings:
    """Settings whose image directory holds the offline guest images
    (vmlinux, initrd.img, rootfs.ext4): the defaults boot a real guest."""
    from dataclasses import replace

    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    return replace(settings, image_dirs=(images.kernel.parent,))


class ConsoleReader:
    """Collects what a console WebSocket delivers and waits for patterns in it."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen = b""
        self.cursor = 0  # where the last match ended

    async def wait_for(self, pattern: bytes, timeout: float = PROMPT_TIMEOUT_S, *, poke: bytes | None = None) -> bytes:
        """Read until ``pattern`` (a regex) shows up after the previous match;
        ``poke`` is sent every few seconds meanwhile (e.g. b"\\n")."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_poke = loop.time()
        while True:
            match = re.compile(pattern).search(self.seen, self.cursor)
            if match:
                self.cursor = match.end()
                return match.group(0)
            now = loop.time()
            if now > deadline:
                raise AssertionError(f"{pattern!r} did not appear; last output: {self.seen[-600:]!r}")
            if poke is not None and now >= next_poke:
                await self.ws.send_bytes(poke)
                next_poke = now + 5.0
            try:
                msg = await asyncio.wait_for(self.ws.receive(), min(1.0, deadline - now))
            except asyncio.TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.seen += msg.data
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                raise AssertionError(f"console closed ({msg.extra!r}) before {pattern!r}; output: {self.seen[-600:]!r}")

    async def run(self, command: str, timeout: float = PROMPT_TIMEOUT_S) -> bytes:
        """Type ``command`` and wait for the shell to print a unique marker after it."""
        marker = f"done-{secrets.token_hex(4)}"
        # $((...)) makes the echoed command line differ from its output.
        await self.ws.send_bytes(f"{command}; echo {marker}-$((40+2))\n".encode())
        await self.wait_for(f"{marker}-42".encode(), timeout)
        return self.seen


#: Skips a test that makes TAP devices (microVM networks) where it cannot.
needs_net_admin = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/net/tun").exists(),
    reason="TAP devices need root (CAP_NET_ADMIN) and /dev/net/tun: run the tests as root",
)

#: The offline rootfs's shell prompt (busybox ash may follow it with a cursor query).
SHELL_PROMPT = rb"fc-microvm:[^ ]*# "
#: Under QEMU TCG on a loaded host the guest kernel's PIT calibration of the TSC can
#: fail, after which it hangs; telling it the TSC frequency skips that calibration.
GUEST_BOOT_ARGS = DEFAULT_BOOT_ARGS + " tsc_early_khz=2000000"
