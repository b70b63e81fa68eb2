"""exec with a pty: a terminal name, window size and resize, ^C and signals."""

from __future__ import annotations

import asyncio
import re
import signal

from fc_macos.guest.protocol import ExecExit, ExecOutput, GuestConnection


async def collect(conn: GuestConnection, timeout: float = 20) -> tuple[bytes, ExecExit]:
    out = bytearray()

    async def run() -> ExecExit:
        async for event in conn.exec_events():
            if isinstance(event, ExecOutput):
                assert event.stream == "stdout" or not event.data  # a tty merges all output into stdout
                out.extend(event.data)
            else:
                return event
        raise AssertionError("no EXIT")

    exit_ = await asyncio.wait_for(run(), timeout)
    return bytes(out), exit_


async def test_tty_names_a_pty_and_has_the_window_size(conn: GuestConnection) -> None:
    await conn.start_exec(["sh", "-c", "tty; stty size; echo $TERM"], tty=True, rows=33, cols=101, stdin=False)
    out, exit_ = await collect(conn)
    assert exit_ == ExecExit(0, None, False)
    lines = out.decode().split("\r\n")
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), lines
    assert lines[1:3] == ["33 101", "xterm"]


async def test_resize_changes_stty_size(conn: GuestConnection) -> None:
    # The shell waits for a line, then reports the size; the resize arrives before the line.
    await conn.start_exec(["sh", "-c", "read x; stty size"], tty=True, rows=24, cols=80)
    await conn.resize(50, 132)
    await asyncio.sleep(0.2)
    await conn.write_stdin(b"go\n")
    out, exit_ = await collect(conn)
    assert exit_.exit_code == 0
    assert out.decode().split("\r\n")[-2] == "50 132"


async def test_ctrl_c_through_the_pty_interrupts_sleep_with_130(conn: GuestConnection) -> None:
    await conn.start_exec(["sleep", "100"], tty=True)
    await asyncio.sleep(0.3)
    await conn.write_stdin(b"\x03")
    _, exit_ = await collect(conn, timeout=10)
    assert exit_ == ExecExit(130, signal.SIGINT, False)


async def test_ctrl_c_reaches_a_job_of_an_interactive_shell(conn: GuestConnection) -> None:
    await conn.start_exec(["sh", "-i"], tty=True)
    await conn.write_stdin(b"sleep 100\n")
    await asyncio.sleep(0.5)
    await conn.write_stdin(b"\x03")
    await asyncio.sleep(0.3)
    await conn.write_stdin(b"echo status=$?; exit 7\n")
    out, exit_ = await collect(conn, timeout=10)
    assert exit_.exit_code == 7
    assert b"status=130" in out


async def test_signal_frame_with_a_tty(conn: GuestConnection) -> None:
    await conn.start_exec(["sleep", "100"], tty=True)
    await conn.send_signal(signal.SIGTERM)
    _, exit_ = await collect(conn)
    assert exit_ == ExecExit(143, signal.SIGTERM, False)


async def test_stdin_eof_on_a_tty_ends_cat(conn: GuestConnection) -> None:
    await conn.start_exec(["cat"], tty=True)
    await conn.write_stdin(b"typed\n")
    await conn.close_stdin()
    out, exit_ = await collect(conn)
    assert exit_.exit_code == 0
    assert out.count(b"typed") == 2  # the terminal's echo and cat's copy


async def test_a_command_that_closes_its_terminal_still_exits_as_it_means_to(conn: GuestConnection) -> None:
    # Its last tty descriptor closed while it runs on: the terminal must not be hung up under
    # it (a SIGHUP, exit 129), as cat's own close on its way out was before its exit.
    await conn.start_exec(["sh", "-c", "echo bye; exec 0<&- 1>&- 2>&-; sleep 0.5; exit 7"], tty=True, stdin=False)
    out, exit_ = await collect(conn)
    assert exit_ == ExecExit(7, None, False)
    assert b"bye" in out


async def test_stdin_eof_on_a_tty_is_typed_once(conn: GuestConnection) -> None:
    # The first cat ends at the ^D; the second must still wait for input (until the timeout).
    await conn.start_exec(["sh", "-c", "cat; cat; echo done"], tty=True, timeout_s=1.5)
    await conn.write_stdin(b"one\n")
    await conn.close_stdin()
    out, exit_ = await collect(conn)
    assert exit_.timed_out
    assert b"done" not in out


async def test_timeout_with_a_tty(conn: GuestConnection) -> None:
    await conn.start_exec(["sleep", "100"], tty=True, timeout_s=0.5)
    _, exit_ = await collect(conn)
    assert exit_ == ExecExit(137, signal.SIGKILL, True)
