"""Helpers for tests that talk to the real fc-agent (moved from tests/agent/conftest.py,
whose fixtures use them): the test VMM, the test token, the app served in-process
(:func:`serve`) or as a process on a TCP port (:func:`agent_process`, for tests
that call the agent synchronously, like the CLI's), a console reader that waits
for patterns, and safety nets that leave no VMM behind.

    from tests.helpers.agent import AUTH, TOKEN, agent_process, serve
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fc_macos.agent import vmm_processes
from fc_macos.agent.app import create_app
from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.wire import DEFAULT_BOOT_ARGS
from fc_macos.firecracker.launcher import proc_start_time

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def serve(settings: AgentSettings) -> TestClient:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


@asynccontextmanager
async def served(settings: AgentSettings) -> AsyncIterator[TestClient]:
    """The agent app on a local port for the ``async with`` block; on the way out
    it stops and every VMM of its state directory is killed."""
    client = await serve(settings)
    try:
        yield client
    finally:
        await client.close()
        kill_recorded_vmms(settings.state_dir)


def recorded_microvms(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The microVM records the agent keeps under ``state_dir`` (its
    ``microvms/<name>/microvm.json`` files), by name; unreadable ones left out."""
    records = {}
    for path in sorted((state_dir / "microvms").glob("*/microvm.json")):
        try:
            records[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return records


def kill_recorded_vmms(state_dir: Path) -> None:
    """Safety net: SIGKILL every VMM a record under ``state_dir`` names, and
    every process group started for one of its work directories (a test that
    failed half-way must not leave QEMU guests behind)."""
    for record in recorded_microvms(state_dir).values():
        pid, start = record.get("pid"), record.get("start_time")
        if pid and start and proc_start_time(pid) == start:
            os.kill(pid, signal.SIGKILL)
    for group in vmm_processes.find(state_dir / "microvms"):
        vmm_processes.kill(group)


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


@dataclass(frozen=True)
class AgentProcess:
    """A real fc-agent process on 127.0.0.1 (see :func:`agent_process`)."""

    url: str
    token: str
    state_dir: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RestartableAgent:
    """``fc-agent`` as a real process (``python -m fc_macos.agent.main``, --no-nat)
    on a free port over ``settings``' state directory, to be killed
    (:meth:`kill`, e.g. with SIGKILL) and started again on the same port."""

    def __init__(self, settings: AgentSettings, token_file: Path, log: Path) -> None:
        self.settings = settings
        self.token_file = token_file
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start it and return once ``/healthz`` answers."""
        argv = [
            sys.executable, "-m", "fc_macos.agent.main", "--no-nat",
            "--listen", f"127.0.0.1:{self.port}", "--token-file", str(self.token_file),
            "--state-dir", str(self.settings.state_dir), "--firecracker-bin", self.settings.firecracker_bin,
        ]  # fmt: skip
        for d in self.settings.image_dirs:
            argv += ["--image-dir", str(d)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"fc-agent did not come up: {self.log.read_text()[-3000:]}")

    def kill(self, sig: int) -> int:
        """Send ``sig`` and wait for the exit; its return code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@contextmanager
def agent_process(work_dir: Path, image_dirs: tuple[Path, ...] = (), *extra: str) -> Iterator[AgentProcess]:
    """Run ``fc-agent`` (this checkout's, --no-nat: this machine's firewall is never
    touched) with the test VMM as its Firecracker, state and token under
    ``work_dir`` (keep it short: socket paths) and ``image_dirs``; yields once it
    answers, and at the end stops it and kills every VMM its state still names."""
    port = free_port()
    state_dir, token_file = work_dir / "state", work_dir / "token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN + "\n")
    argv = [sys.executable, "-m", "fc_macos.agent.main", "--listen", f"127.0.0.1:{port}",
            "--token-file", str(token_file), "--state-dir", str(state_dir), "--firecracker-bin", str(TEST_VMM),
            "--no-nat", "--log-level", "WARNING", *extra]
    for image_dir in image_dirs:
        argv += ["--image-dir", str(image_dir)]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "fc-agent exited"
                assert time.monotonic() < deadline, "fc-agent did not answer"
                time.sleep(0.1)
        yield AgentProcess(url, TOKEN, state_dir)
    finally:
        proc.terminate()
        proc.wait(10)
        kill_recorded_vmms(state_dir)
