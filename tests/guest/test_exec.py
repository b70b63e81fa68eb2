"""exec through fc_macos.guest.protocol against the real guest agent binary."""

from __future__ import annotations

import hashlib
import signal

import pytest

from fc_macos.guest.protocol import (
    ExecExit,
    ExecOutput,
    GuestCommandNotFound,
    GuestConnection,
    GuestNotExecutable,
    GuestNotFound,
)

from .conftest import RunningAgent


@pytest.mark.parametrize("code", [0, 1, 42])
async def test_exit_codes(conn: GuestConnection, code: int) -> None:
    r = await conn.run(["sh", "-c", f"exit {code}"])
    assert (r.exit_code, r.signal, r.timed_out) == (code, None, False)


async def test_command_not_found_is_typed_with_hint(conn: GuestConnection) -> None:
    with pytest.raises(GuestCommandNotFound) as info:
        await conn.run(["no-such-command-xyz"])
    assert "no-such-command-xyz" in info.value.message
    assert info.value.code == "command_not_found"
    assert info.value.exit_code == 127
    assert info.value.hint


async def test_not_executable(conn: GuestConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(GuestNotExecutable):
        await conn.run([str(script)])


async def test_missing_cwd_is_not_found(conn: GuestConnection) -> None:
    with pytest.raises(GuestNotFound, match="/no/such/dir"):
        await conn.run(["true"], cwd="/no/such/dir")


async def test_signal_gives_128_plus_n(conn: GuestConnection) -> None:
    r = await conn.run(["sh", "-c", "kill -TERM $$"])
    assert (r.exit_code, r.signal) == (128 + signal.SIGTERM, signal.SIGTERM)


async def test_stdout_and_stderr_are_separate(conn: GuestConnection) -> None:
    r = await conn.run(["sh", "-c", "echo out; echo err >&2; echo out2"])
    assert r.stdout == b"out\nout2\n"
    assert r.stderr == b"err\n"


async def test_ten_mib_of_output_intact(conn: GuestConnection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    blob = tmp_path / "blob"
    r = await conn.run(["sh", "-c", f"head -c 10485760 /dev/urandom > {blob}; sha256sum {blob} >&2; cat {blob}"])
    digest = r.stderr.split()[0].decode()
    assert len(r.stdout) == 10 * 1024 * 1024
    assert hashlib.sha256(r.stdout).hexdigest() == digest


async def test_stdin_piped_with_eof(conn: GuestConnection) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB, more than one frame
    r = await conn.run(["sh", "-c", "cat; echo done >&2"], stdin=data)
    assert r.stdout == data
    assert r.stderr == b"done\n"


async def test_env_cwd_and_default_path(conn: GuestConnection) -> None:
    r = await conn.run(["sh", "-c", 'echo "$FOO|$HOME|$PATH|$(pwd)"'], env={"FOO": "bar"}, cwd="/tmp")
    assert r.stdout.decode().strip() == "bar|/root|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/tmp"


async def test_timeout_kills_the_session(conn: GuestConnection) -> None:
    r = await conn.run(["sh", "-c", "sleep 100 & sleep 100"], timeout_s=0.5)
    assert r.timed_out
    assert (r.exit_code, r.signal) == (137, 9)


async def test_streaming_events_end_with_eofs_then_exit(conn: GuestConnection) -> None:
    await conn.start_exec(["sh", "-c", "echo a; echo b >&2"], stdin=False)
    events = [e async for e in conn.exec_events()]
    assert events[-1] == ExecExit(0, None, False)
    assert ExecOutput("stdout", b"") in events and ExecOutput("stderr", b"") in events
    assert events.index(ExecOutput("stdout", b"a\n")) < events.index(ExecOutput("stdout", b""))


async def test_signal_frame_interrupts(conn: GuestConnection) -> None:
    await conn.start_exec(["sleep", "100"], stdin=False)
    await conn.send_signal(signal.SIGINT)
    events = [e async for e in conn.exec_events()]
    assert events[-1] == ExecExit(130, signal.SIGINT, False)


async def test_many_connections_at_once(guest_agent: RunningAgent) -> None:
    import asyncio

    async def one(i: int) -> bytes:
        c = await guest_agent.connect()
        return (await c.run(["sh", "-c", f"sleep 0.2; echo {i}"])).stdout

    outs = await asyncio.gather(*(one(i) for i in range(30)))
    assert outs == [f"{i}\n".encode() for i in range(30)]


@pytest.mark.parametrize("tty", [False, True])
async def test_the_command_inherits_only_its_stdio(conn: GuestConnection, tty: bool) -> None:
    await conn.start_exec(["sh", "-c", "ls /proc/$$/fd"], tty=tty, stdin=False)
    out = b"".join([e.data async for e in conn.exec_events() if isinstance(e, ExecOutput)])
    assert out.split() == [b"0", b"1", b"2"]
