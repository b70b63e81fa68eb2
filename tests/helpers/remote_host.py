"""A "remote host" for the TLS tests: a network namespace of its own, joined to
this machine by a veth pair, in which fc-agent processes run as on a server.

    with remote_host() as host:                       # needs root (ip netns)
        with host.agent(work_dir, "--tls") as agent:  # fc-agent inside, listening on host.address
            agent.url, agent.fingerprint, agent.token_file

The namespace has a unique name per run (``fct-tls-<pid>-<random>``) and a
/29 of 10.213.N.0 of its own: this side is ``.1``, the remote host ``.2``;
``.3`` belongs to nobody (connections to it fail with "no route to host").
Everything is removed on the way out, also when a test fails.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fc_macos.agent.tls import fingerprint_of_file
from tests.helpers.agent import REPO, TEST_VMM, TOKEN, kill_recorded_vmms

#: Skips a test that makes network namespaces where it cannot.
needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("openssl") is None,
    reason="the remote host needs root, 'ip' (iproute2) and 'openssl': run scripts/setup-test-host, then the tests as root",
)

AGENT_PORT = 8443


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class RemoteAgent:
    """One fc-agent process on the remote host."""

    url: str
    port: int
    token: str
    token_file: Path
    state_dir: Path
    fingerprint: str | None  # None: plain HTTP


@dataclass(frozen=True)
class RemoteHost:
    ns: str
    local_address: str  # this side of the veth
    address: str  # the remote host
    nobody: str  # an address of the /29 nobody has

    @contextmanager
    def agent(self, work_dir: Path, *extra: str, port: int = AGENT_PORT,
              image_dirs: tuple[Path, ...] = ()) -> Iterator[RemoteAgent]:
        """fc-agent (this checkout's, with the test VMM, --no-nat) in the
        namespace on ``address:port``, state and token under ``work_dir``."""
        state_dir, token_file = work_dir / "state", work_dir / "token"
        work_dir.mkdir(parents=True, exist_ok=True)
        token_file.write_text(TOKEN + "\n")
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "fc_macos.agent.main",
                "--listen", f"{self.address}:{port}", "--token-file", str(token_file),
                "--state-dir", str(state_dir), "--firecracker-bin", str(TEST_VMM), "--no-nat",
                "--log-level", "WARNING", *extra]
        for image_dir in image_dirs:
            argv += ["--image-dir", str(image_dir)]
        log = work_dir / "agent.log"
        with log.open("w") as out:
            proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection((self.address, port), timeout=1):
                        break
                except OSError:
                    assert proc.poll() is None, f"fc-agent exited: {log.read_text()}"
                    assert time.monotonic() < deadline, f"fc-agent did not answer: {log.read_text()}"
                    time.sleep(0.1)
            tls = "--tls" in extra
            fingerprint = fingerprint_of_file(state_dir / "tls" / "cert.pem") if tls else None
            if tls:  # what it printed at start is the certificate's fingerprint
                assert f"fingerprint: {fingerprint}" in log.read_text()
            yield RemoteAgent(f"{'https' if tls else 'http'}://{self.address}:{port}", port, TOKEN, token_file,
                              state_dir, fingerprint)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            kill_recorded_vmms(state_dir)


def _free_subnet() -> int:
    used = set(int(m) for m in re.findall(r"inet 10\.213\.(\d+)\.", _ip("-4", "-o", "addr", "show").stdout))
    free = [n for n in range(1, 255) if n not in used]
    return random.choice(free)


@contextmanager
def remote_host() -> Iterator[RemoteHost]:
    """The namespace and its veth pair, removed afterwards (see the module docstring)."""
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    ns, here, there = f"fct-tls-{tag}", f"fctl{tag}"[:15], f"fctr{tag}"[:15]
    n = _free_subnet()
    host = RemoteHost(ns, f"10.213.{n}.1", f"10.213.{n}.2", f"10.213.{n}.3")
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{host.local_address}/29", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", ns, "addr", "add", f"{host.address}/29", "dev", there)
        _ip("-n", ns, "link", "set", there, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield host
    finally:
        pids = _ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", ns, check=False)
        _ip("link", "del", here, check=False)
