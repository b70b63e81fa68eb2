"""The server itself: command line, bad requests, vanished clients, --supervise."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fc_macos.guest import PROTOCOL_VERSION
from fc_macos.guest.protocol import (
    FrameType,
    GuestConnection,
    encode_frame,
    open_unix,
)

from .conftest import RunningAgent, wait_for_socket


def test_version(agent_binary: Path) -> None:
    out = subprocess.run([str(agent_binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert out == f"fc-guest-agent 0.1.0 (protocol {PROTOCOL_VERSION})\n"


def test_unknown_argument_is_a_usage_error(agent_binary: Path) -> None:
    proc = subprocess.run([str(agent_binary), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown argument '--bogus'" in proc.stderr and "usage:" in proc.stderr


def test_bad_listen_address_fails_clearly(agent_binary: Path) -> None:
    proc = subprocess.run([str(agent_binary), "--listen", "carrier-pigeon:1"], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 1
    assert "want vsock:PORT, unix:PATH or tcp:HOST:PORT" in proc.stderr


async def test_info(conn: GuestConnection, guest_agent: RunningAgent) -> None:
    info = await conn.info()
    assert info["v"] == PROTOCOL_VERSION and info["version"] == "0.1.0"
    assert info["arch"] == os.uname().machine and info["kernel"] == os.uname().release
    assert info["hostname"] == os.uname().nodename
    assert info["uptime_s"] > 0
    assert info["pid"] == guest_agent.proc.pid
    assert {"ifname": "lo", "family": "inet", "address": "127.0.0.1", "prefixlen": 8} in info["addresses"]
    assert set(info["ops"]) == {"info", "exec", "stat", "get", "put", "connect"}


async def test_one_operation_per_connection(conn: GuestConnection) -> None:
    await conn.info()
    with pytest.raises(Exception, match="one operation per guest agent connection"):
        await conn.info()


@pytest.mark.parametrize(
    ("request_frame", "code", "text"),
    [
        (encode_frame(FrameType.REQ, b'{"v":1,"op":"dance"}'), "unknown_op", "unknown operation 'dance'"),
        (encode_frame(FrameType.REQ, b'{"v":2,"op":"info"}'), "unsupported_version", "speaks version 1"),
        (encode_frame(FrameType.REQ, b'{"op":"info"}'), "bad_request", '"v"'),
        (encode_frame(FrameType.REQ, b'{"v":1,"op":'), "bad_request", "not a JSON object"),
        (encode_frame(FrameType.REQ, b'[1,2]'), "bad_request", "not a JSON object"),
        (encode_frame(FrameType.STDIN, b"x"), "bad_request", "the first frame must be REQ"),
        (bytes([1, 0, 0x10, 0, 1]), "bad_request", "frame longer than 1048576 bytes"),
        (encode_frame(FrameType.REQ, b'{"v":1,"op":"exec","argv":[]}'), "bad_request", "argv"),
        (encode_frame(FrameType.REQ, b'{"v":1,"op":"exec","argv":["a\\u0000b"]}'), "bad_request", "NUL"),
        (encode_frame(FrameType.REQ, b'{"v":1,"op":"stat","path":"relative"}'), "bad_request", "absolute"),
        (encode_frame(FrameType.REQ, b'{"v":1,"op":"connect","port":70000}'), "bad_request", "1-65535"),
    ],
)
async def test_bad_requests_get_clear_errors(guest_agent: RunningAgent, request_frame: bytes, code: str,
                                             text: str) -> None:
    reader, writer = await asyncio.open_unix_connection(guest_agent.socket)
    writer.write(request_frame)
    await writer.drain()
    header = await asyncio.wait_for(reader.readexactly(5), 10)
    assert header[0] == FrameType.RES
    res = json.loads(await reader.readexactly(int.from_bytes(header[1:], "big")))
    assert (res["ok"], res["error"]) == (False, code)
    assert text in res["message"]
    assert await reader.read() == b""  # then the connection closes
    writer.close()


def session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
                members.append(int(entry))
    return members


async def wait_gone(sid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while session_members(sid):
        assert time.monotonic() < deadline, f"processes of session {sid} outlived the client: {session_members(sid)}"
        await asyncio.sleep(0.05)


async def test_a_vanished_client_gets_the_command_session_killed(guest_agent: RunningAgent) -> None:
    c = await guest_agent.connect()
    pid = await c.start_exec(["sh", "-c", "sleep 1000 & sleep 1000"], stdin=False)
    await asyncio.sleep(0.3)
    assert len(session_members(pid)) >= 2  # sh and its sleeps
    await c.close()
    await wait_gone(pid)


async def test_a_client_that_stops_reading_big_output_then_vanishes(guest_agent: RunningAgent) -> None:
    c = await guest_agent.connect()
    pid = await c.start_exec(["sh", "-c", "yes"], stdin=False)  # endless output, never read
    await asyncio.sleep(0.5)
    await c.close()
    await wait_gone(pid)
    # The server is unharmed (SIGPIPE ignored, its connection process gone).
    async with await guest_agent.connect() as c2:
        assert (await c2.run(["true"])).exit_code == 0


async def test_background_process_holding_the_pipe_does_not_hang_exec(conn: GuestConnection) -> None:
    started = time.monotonic()
    r = await conn.run(["sh", "-c", "sleep 30 & echo started"], timeout_s=0)
    assert r.exit_code == 0 and r.stdout == b"started\n"
    assert time.monotonic() - started < 5  # EXIT after the 200 ms drain, not after the sleep


async def test_garbage_instead_of_a_request_does_not_crash_the_server(guest_agent: RunningAgent) -> None:
    reader, writer = await asyncio.open_unix_connection(guest_agent.socket)
    writer.write(b"\x07\x00\x00\x00\x10" + os.urandom(4096))
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)  # RES bad_request, then the close
    assert b"the first frame must be REQ" in answer
    writer.close()
    async with await guest_agent.connect() as c:
        assert (await c.info())["v"] == 1


def find_process(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                pass
    return found


async def test_supervise_restarts_a_server_killed_with_9(agent_binary: Path, short_tmp: Path) -> None:
    sock = str(short_tmp / "sup.sock")
    # --supervise detaches: the command returns at once and the supervisor runs on.
    subprocess.run([str(agent_binary), "--supervise", "--listen", f"unix:{sock}"], check=True, timeout=10,
                   stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(sock)
        async with await open_unix(sock) as c:
            first = (await c.info())["pid"]
        supervisor = int(Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert os.getsid(supervisor) == supervisor  # its own session
        os.kill(first, signal.SIGKILL)
        second = None
        for _ in range(100):
            await asyncio.sleep(0.05)
            try:
                async with await open_unix(sock, timeout=1) as c:
                    second = (await c.info())["pid"]
                break
            except Exception:
                continue
        assert second is not None and second != first
        # SIGTERM stops the supervisor and its server.
        os.kill(supervisor, signal.SIGTERM)
        for _ in range(100):
            if not find_process(sock):
                break
            await asyncio.sleep(0.05)
        assert not find_process(sock)
    finally:
        for pid in find_process(sock):
            os.kill(pid, signal.SIGKILL)
