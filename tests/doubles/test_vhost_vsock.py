"""The test VMM's vsock device, against a real guest kernel under QEMU.

One guest is booted for the whole module (``guest``) through the VMM's API, from the product's
test images, with two programs written into a copy of its rootfs (debugfs, no mounts):

* ``vsock-tool`` (``vsock_guest_tool.c`` beside this file, built static with zig cc from the
  ``ziglang`` package): AF_VSOCK echo and sink servers, and guest -> host connections, which
  nothing else in a busybox guest can make;
* the guest agent (``fc-guest-agent``, when ``python -m fc_macos.guest.build`` has built it, or
  the binary ``$FC_TEST_GUEST_AGENT`` names), started from the serial console, spoken to in
  the framing of docs/guest-agent-protocol.md and through the product's client.

The VMM runs from a copy of its single file named ``firecracker`` (as setup installs it in the
Tart VM), with Python's ``-I -S``. The host side is Firecracker's hybrid vsock: ``CONNECT
<port>\\n`` -> ``OK <host port>\\n`` on uds_path, and ``<uds_path>_<port>`` for the guest's
connections. Throughput figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fc_macos.guest.protocol import open_hybrid_vsock

from tests.doubles.test_firecracker_vmm import PROMPT, VMM, VmmProcess

pytestmark = [pytest.mark.guest, pytest.mark.timeout(600)]

TOOL_SOURCE = Path(__file__).with_name("vsock_guest_tool.c")
GUEST_CID = 7
ECHO_PORT, SINK_PORT, AGENT_PORT = 5000, 5001, 10240
CLOSED_PORT = 5999
HOST_PORT_FIRST = 1 << 30
PATTERN = bytes((i * 7 + i // 256) & 0xFF for i in range(65536))  # vsock_guest_tool push


# ---------------------------------------------------------------- guest programs


def build_tool(cache: Path) -> Path:
    """vsock_guest_tool for x86_64, static (musl), cached by its source's hash."""
    try:
        import ziglang  # noqa: F401
    except ImportError:
        pytest.skip("building vsock_guest_tool needs zig: python3 -m pip install ziglang")
    digest = hashlib.sha256(TOOL_SOURCE.read_bytes()).hexdigest()[:16]
    out = cache / f"vsock-guest-tool-{digest}"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-musl",
                        "-static", "-Os", "-o", str(tmp), str(TOOL_SOURCE)], check=True)
        tmp.rename(out)
    return out


def guest_agent_binary() -> Path | None:
    """The guest agent for x86_64: ``$FC_TEST_GUEST_AGENT``, else the package's built binary,
    else None (not built)."""
    if os.environ.get("FC_TEST_GUEST_AGENT"):
        return Path(os.environ["FC_TEST_GUEST_AGENT"])
    try:
        from fc_macos.guest import binary_path

        path = Path(binary_path("x86_64"))
    except Exception:
        return None
    return path if path.exists() else None


def debugfs_write(rootfs: Path, source: Path, dest: str) -> None:
    """Write ``source`` into the ext4 image at ``dest`` as an executable (mode 0755)."""
    for request in (f"write {source} {dest}", f"set_inode_field {dest} mode 0100755"):
        done = subprocess.run(["debugfs", "-w", "-R", request, str(rootfs)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- host side helpers


def read_line(sock: socket.socket, limit: int = 64) -> bytes | None:
    """One line from ``sock``, or None if it closed first."""
    line = b""
    while not line.endswith(b"\n") and len(line) < limit:
        byte = sock.recv(1)
        if not byte:
            return None
        line += byte
    return line


def connect(uds: str, port: int, timeout: float = 30) -> tuple[socket.socket, bytes | None]:
    """CONNECT to a guest port: the stream and Firecracker's answer (None: it closed)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(uds)
    sock.sendall(f"CONNECT {port}\n".encode())
    return sock, read_line(sock)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(1 << 20, size - len(data)))
        assert chunk, f"the stream ended after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def echo_through(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` (from a thread) while reading the echo back."""
    sender = threading.Thread(target=sock.sendall, args=(data,))
    sender.start()
    try:
        return recv_exactly(sock, len(data))
    finally:
        sender.join()


class Guest:
    """The module's booted guest: its VMM, console and vsock socket."""

    def __init__(self, vmm: VmmProcess, uds: str, agent: bool) -> None:
        self.vmm, self.uds, self.agent = vmm, uds, agent

    def run(self, command: str, answer: bytes, timeout: float = 60) -> bytes:
        """Type a command on the serial console; return the output up to ``answer`` (regex)."""
        self.vmm.type(command + "\n")
        return self.vmm.expect(answer, timeout)


def boot(workdir: Path, binary: Path, images: Any, rootfs: Path, uds: str, vmm_id: str) -> VmmProcess:
    vmm = VmmProcess(workdir, "--id", vmm_id, binary=binary)
    vmm.wait_ready()
    steps = [
        ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 256}),
        ("PUT", "/boot-source", {"kernel_image_path": str(images.kernel), "initrd_path": str(images.initrd),
                                 "boot_args": "console=ttyS0 reboot=k panic=1"}),
        ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(rootfs), "is_root_device": True,
                                   "is_read_only": False}),
        ("PUT", "/vsock", {"guest_cid": GUEST_CID, "uds_path": uds}),
        ("PUT", "/actions", {"action_type": "InstanceStart"}),
    ]
    for method, path, body in steps:
        reply = vmm.call(method, path, body)
        assert reply.status == 204, (path, reply.body)
    vmm.expect(PROMPT, 240)
    return vmm


def installed_vmm(workdir: Path) -> Path:
    """The VMM copied alone, as ``firecracker`` (as setup installs it into the Tart VM)."""
    (workdir / "bin").mkdir()
    binary = workdir / "bin" / "firecracker"
    shutil.copyfile(VMM, binary)
    binary.chmod(0o755)
    return binary


@pytest.fixture(scope="module")
def images() -> Any:
    if shutil.which(os.environ.get("FC_TEST_VMM_QEMU", "qemu-system-x86_64")) is None:
        pytest.skip("qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (or set FC_TEST_VMM_QEMU)")
    if shutil.which("debugfs") is None and not Path("/sbin/debugfs").exists():
        pytest.skip("debugfs is missing: apt-get install e2fsprogs")
    from tests.helpers.guest_images import build_test_images

    return build_test_images()


@pytest.fixture(scope="module")
def tool() -> Path:
    from tests.helpers.guest_images import default_cache_dir

    return build_tool(default_cache_dir())


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fcv-", dir="/tmp"))  # short: Unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def guest(images: Any, tool: Path, module_dir: Path, request: pytest.FixtureRequest) -> Iterator[Guest]:
    rootfs = module_dir / "rootfs.ext4"
    shutil.copyfile(images.rootfs, rootfs)
    debugfs_write(rootfs, tool, "/usr/bin/vsock-tool")
    agent = guest_agent_binary()
    if agent is not None:
        debugfs_write(rootfs, agent, "/sbin/fc-guest-agent")
    uds = str(module_dir / "v.sock")
    vmm = boot(module_dir, installed_vmm(module_dir), images, rootfs, uds, "vsock-guest")
    try:
        booted = Guest(vmm, uds, agent is not None)
        booted.run(f"vsock-tool serve {ECHO_PORT} echo", f"serving {ECHO_PORT}".encode())
        booted.run(f"vsock-tool serve {SINK_PORT} sink", f"serving {SINK_PORT}".encode())
        if agent is not None:
            vmm.type("pidof fc-guest-agent >/dev/null || /sbin/fc-guest-agent --supervise\n")
        failed = request.session.testsfailed
        yield booted
        if request.session.testsfailed > failed:  # show what the guest and the device said
            print("\n--- guest console (tail):\n" + bytes(vmm.seen[-4000:]).decode(errors="replace"))
            print("--- VMM log (tail):\n" + "\n".join(vmm.log.read_text(errors="replace").splitlines()[-40:]))
    finally:
        vmm.stop()


# ---------------------------------------------------------------- host -> guest


def test_connect_answers_ok_with_host_ports_counting_from_2_30(guest: Guest) -> None:
    first, line1 = connect(guest.uds, ECHO_PORT)
    second, line2 = connect(guest.uds, ECHO_PORT)
    try:
        assert line1 is not None and line2 is not None, "the device closed a CONNECT to a listening port"
        port1, port2 = int(line1.split()[1]), int(line2.split()[1])
        assert line1 == f"OK {port1}\n".encode() and port1 >= HOST_PORT_FIRST
        assert port2 > port1
        first.sendall(b"ping")
        assert recv_exactly(first, 4) == b"ping"
    finally:
        first.close()
        second.close()


def test_mebibytes_both_ways_arrive_intact(guest: Guest) -> None:
    sock, line = connect(guest.uds, ECHO_PORT)
    with sock:
        assert line and line.startswith(b"OK ")
        data = os.urandom(4 << 20)
        assert hashlib.sha256(echo_through(sock, data)).hexdigest() == hashlib.sha256(data).hexdigest()


def test_many_connections_at_once(guest: Guest) -> None:
    streams = [connect(guest.uds, ECHO_PORT) for _ in range(32)]
    try:
        assert all(line and line.startswith(b"OK ") for _, line in streams)
        assert len({line for _, line in streams}) == 32  # one host port each
        payloads = [os.urandom(256 << 10) for _ in streams]
        results: dict[int, bytes] = {}

        def one(i: int) -> None:
            results[i] = echo_through(streams[i][0], payloads[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(streams))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert all(results.get(i) == payloads[i] for i in range(len(streams)))
    finally:
        for sock, _ in streams:
            sock.close()


def test_connect_to_a_port_nothing_listens_on_just_closes(guest: Guest) -> None:
    started = time.monotonic()
    sock, line = connect(guest.uds, CLOSED_PORT)
    sock.close()
    assert line is None  # the guest answered RST: no OK, the stream closed
    assert time.monotonic() - started < 10
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.settimeout(10)
    bad.connect(guest.uds)
    bad.sendall(b"HELLO 5000\n")
    assert bad.recv(16) == b""  # not a CONNECT line: dropped, as Firecracker does
    bad.close()


@contextlib.contextmanager
def echo_stream(guest: Guest, greeting: bytes) -> Iterator[socket.socket]:
    """A stream to the guest's echo server that has just echoed ``greeting`` back."""
    sock, line = connect(guest.uds, ECHO_PORT)
    with sock:
        assert line and line.startswith(b"OK "), line
        sock.sendall(greeting)
        assert recv_exactly(sock, len(greeting)) == greeting
        yield sock


def test_an_eof_from_the_host_ends_the_stream_both_ways(guest: Guest) -> None:
    with echo_stream(guest, b"last words") as sock:
        sock.shutdown(socket.SHUT_WR)  # a half-close is an EOF for Firecracker's vsock
        assert sock.recv(16) == b""


def test_pause_and_resume_keep_a_stream(guest: Guest) -> None:
    with echo_stream(guest, b"before") as sock:
        assert guest.vmm.call("PATCH", "/vm", {"state": "Paused"}).status == 204
        try:
            sock.sendall(b"during")
            sock.settimeout(1.0)
            with pytest.raises(socket.timeout):
                sock.recv(16)  # a paused guest echoes nothing
        finally:
            assert guest.vmm.call("PATCH", "/vm", {"state": "Resumed"}).status == 204
        sock.settimeout(30)
        assert recv_exactly(sock, 6) == b"during"
        sock.sendall(b"after")
        assert recv_exactly(sock, 5) == b"after"


# ---------------------------------------------------------------- guest -> host


def accept_from_guest(guest: Guest, port: int, handle: Callable[[socket.socket], None],
                      command: str, answer: bytes, timeout: float = 60) -> bytes:
    """Listen at ``<uds_path>_<port>`` and run ``command`` on the console, which connects
    there; ``handle`` gets the accepted stream on a thread. Return the console output up to
    ``answer`` (a regex)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{guest.uds}_{port}")
    listener.listen(1)
    listener.settimeout(timeout)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            handle(conn)

    helper = threading.Thread(target=serve)
    helper.start()
    try:
        return guest.run(command, answer, timeout)
    finally:
        helper.join(timeout)
        listener.close()


def test_a_guest_connection_reaches_uds_path_port(guest: Guest) -> None:
    got: dict[str, bytes] = {}

    def answer(conn: socket.socket) -> None:
        got["said"] = conn.recv(64)
        conn.sendall(b"pong-" + got["said"])

    out = accept_from_guest(guest, 6000, answer, "vsock-tool say 2 6000 ping-7f3a", rb"reply \[[^\]]*\]")
    assert got.get("said") == b"ping-7f3a"
    assert b"reply [pong-ping-7f3a]" in out


def test_a_guest_connection_to_a_port_without_listener_is_reset(guest: Guest) -> None:
    out = guest.run("vsock-tool say 2 6001 anyone", rb"connect failed: [^\r\n]*\r?\n")
    assert b"connect failed: Connection reset by peer" in out


# ---------------------------------------------------------------- throughput


def test_100_mib_each_way_and_the_rates(guest: Guest) -> None:
    size = 100 << 20
    sock, line = connect(guest.uds, SINK_PORT)
    with sock:
        assert line and line.startswith(b"OK ")
        block = os.urandom(1 << 20)
        started = time.monotonic()
        sock.sendall(f"{size}\n".encode())
        for _ in range(size >> 20):
            sock.sendall(block)
        assert read_line(sock) == f"got {size}\n".encode()
        to_guest = size / (1 << 20) / (time.monotonic() - started)

    result: dict[str, Any] = {}

    def receive(conn: socket.socket) -> None:
        started = time.monotonic()
        pending, count, intact = bytearray(), 0, True
        while count < size:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            count += len(chunk)
            pending += chunk
            whole = len(pending) - len(pending) % len(PATTERN)
            intact &= bytes(pending[:whole]) == PATTERN * (whole // len(PATTERN))
            del pending[:whole]
        result.update(seconds=time.monotonic() - started, count=count, intact=intact)
        conn.sendall(f"ok {count}".encode())
        time.sleep(0.5)  # let the guest read the answer before the EOF

    out = accept_from_guest(guest, 6002, receive, "vsock-tool push 2 6002 100",
                            rb"(pushed: |push failed|connect failed)[^\r\n]*\r?\n", timeout=300)
    assert b"pushed: ok 104857600" in out
    assert result["count"] == size and result["intact"]
    to_host = size / (1 << 20) / result["seconds"]
    print(f"\nvsock throughput under {os.environ.get('FC_TEST_VMM_ACCEL', 'tcg')}: "
          f"host->guest {to_guest:.1f} MiB/s, guest->host {to_host:.1f} MiB/s (100 MiB each)")
    assert to_guest > 2 and to_host > 2  # far below what it does; a stall would fail this


# ---------------------------------------------------------------- the guest agent over vsock


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BI", kind, len(payload)) + payload


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    kind, length = struct.unpack(">BI", recv_exactly(sock, 5))
    return kind, recv_exactly(sock, length) if length else b""


REQ, RES, STDIN, STDOUT, STDERR, EXIT = 0x01, 0x02, 0x03, 0x04, 0x05, 0x07


def agent_stream(guest: Guest) -> socket.socket:
    """A CONNECT to the guest agent, retried while it starts."""
    if not guest.agent:
        pytest.skip("the guest agent is not built: python -m fc_macos.guest.build")
    deadline = time.monotonic() + 60
    while True:
        sock, line = connect(guest.uds, AGENT_PORT)
        if line is not None:
            assert line.startswith(b"OK "), line
            return sock
        sock.close()
        assert time.monotonic() < deadline, "the guest agent never listened on vsock port 10240"
        time.sleep(0.2)


def test_the_guest_agent_answers_info_through_the_device(guest: Guest) -> None:
    with agent_stream(guest) as sock:
        sock.sendall(frame(REQ, json.dumps({"v": 1, "op": "info"}).encode()))
        kind, payload = read_frame(sock)
        assert kind == RES
        info = json.loads(payload)
        assert info["ok"] is True and info["v"] == 1 and info["arch"] == "x86_64"


def test_the_guest_agent_streams_mebibytes_through_exec(guest: Guest) -> None:
    data = os.urandom(3 << 20)
    with agent_stream(guest) as sock:
        sock.sendall(frame(REQ, json.dumps({"v": 1, "op": "exec", "argv": ["cat"], "stdin": True}).encode()))
        kind, payload = read_frame(sock)
        assert kind == RES and json.loads(payload)["ok"] is True, payload

        def feed() -> None:
            for pos in range(0, len(data), 64 << 10):
                sock.sendall(frame(STDIN, data[pos:pos + (64 << 10)]))
            sock.sendall(frame(STDIN, b""))

        feeder = threading.Thread(target=feed)
        feeder.start()
        out, exit_status = bytearray(), None
        while exit_status is None:
            kind, payload = read_frame(sock)
            if kind == STDOUT:
                out += payload
            elif kind == EXIT:
                exit_status = json.loads(payload)
        feeder.join(60)
    assert exit_status["exit_code"] == 0
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- snapshots of a vsock guest


def test_a_snapshot_of_a_vsock_guest_cold_boots_on_load_and_says_so(images: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fcs-", dir="/tmp"))
    try:
        rootfs = workdir / "rootfs.ext4"
        shutil.copyfile(images.rootfs, rootfs)
        first = boot(workdir, VMM, images, rootfs, str(workdir / "a.sock"), "snap-vsock")
        try:
            first.type("X=kept-in-memory; echo ready-$((40+2))\n")
            first.expect(b"ready-42", 60)
            assert first.call("PATCH", "/vm", {"state": "Paused"}).status == 204
            paths = {"snapshot_path": str(workdir / "vm.state"), "mem_file_path": str(workdir / "vm.mem")}
            assert first.call("PUT", "/snapshot/create", paths).status == 204
        finally:
            first.stop()
        assert "Snapshot without guest memory" in first.log.read_text()
        assert "cannot migrate" in (workdir / "vm.mem").read_text()

        (workdir / "api.sock").unlink()
        first.log.rename(workdir / "first.log")
        second = VmmProcess(workdir, "--id", "snap-vsock-2")
        try:
            second.wait_ready()
            load = {"snapshot_path": str(workdir / "vm.state"), "resume_vm": True,
                    "mem_backend": {"backend_type": "File", "backend_path": str(workdir / "vm.mem")},
                    "vsock_override": {"uds_path": str(workdir / "b.sock")}}
            reply = second.call("PUT", "/snapshot/load", load)
            assert reply.status == 204, reply.body
            assert "Snapshot load boots the guest afresh" in second.log.read_text()
            second.expect(rb"Welcome to Firecracker microVM", 240)  # /init again: a fresh boot
            second.expect(PROMPT, 240)
            second.type('echo "memory:[$X]"\n')
            second.expect(rb"memory:\[\]", 60)  # the shell variable is gone: cold boot
            sock, line = connect(str(workdir / "b.sock"), CLOSED_PORT)  # the new socket has a device
            sock.close()
            assert line is None
        finally:
            second.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_products_client_runs_a_command_through_the_device(guest: Guest) -> None:
    agent_stream(guest).close()  # skips without the agent; waits until it listens
    data = os.urandom(1 << 20)

    async def run() -> Any:
        conn = await open_hybrid_vsock(guest.uds, AGENT_PORT, timeout=30)
        return await conn.run(["sha256sum"], stdin=data)

    result = asyncio.run(run())
    assert result.exit_code == 0
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
