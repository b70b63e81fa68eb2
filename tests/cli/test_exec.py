"""``fc-macos exec`` against a real fc-agent and a real guest (the shared
``guest_world`` guest): exit codes, separate streams, big output, stdin, the
environment, timeouts, signals, and ``-t`` on a pseudo-terminal."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import termios
import time

import pytest

from tests.cli.terminal import Terminal, set_size
from tests.helpers.guest_world import BOOT_ARGS, GuestWorld

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]


def ex(world: GuestWorld, *argv: str, input: bytes | None = None, opts: tuple[str, ...] = (),
       timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return world.fc("exec", "--name", world.name, *opts, "--", *argv, check=False, input=input, timeout=timeout)


def test_exit_codes_are_the_commands(guest_world: GuestWorld) -> None:
    assert ex(guest_world, "true").returncode == 0
    assert ex(guest_world, "false").returncode == 1
    assert ex(guest_world, "sh", "-c", "exit 42").returncode == 42
    killed = ex(guest_world, "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM, killed.stderr


def test_status_shows_what_the_guest_says_of_itself(guest_world: GuestWorld) -> None:
    hostname = ex(guest_world, "hostname").stdout.decode().strip()
    kernel = ex(guest_world, "uname", "-r").stdout.decode().strip()
    info = json.loads(guest_world.fc("microvm", "status", "--name", guest_world.name, "--json").stdout)
    guest = info["guest_agent"]["guest"]
    assert (guest["hostname"], guest["kernel"]) == (hostname, kernel) and guest["uptime_s"] > 0
    assert {"ifname": "lo", "family": "inet", "address": "127.0.0.1", "prefixlen": 8} in guest["addresses"]
    text = guest_world.fc("microvm", "status", "--name", guest_world.name).stdout.decode()
    line = next(line for line in text.splitlines() if line.startswith("Guest:"))
    assert f"{hostname}, Linux {kernel} (" in line and "addresses:" in line, text


def test_a_missing_command_is_127_with_a_clear_message(guest_world: GuestWorld) -> None:
    missing = ex(guest_world, "no-such-command", "--flag")
    assert missing.returncode == 127
    assert b"Error:" in missing.stderr and b"no-such-command" in missing.stderr, missing.stderr
    assert b"Hint:" in missing.stderr
    assert missing.stdout == b""
    # --json always has the exit code; the reason is on stderr, as in the Python API
    as_json = ex(guest_world, "no-such-command", opts=("--json",))
    assert as_json.returncode == 127
    data = json.loads(as_json.stdout)
    assert (data["exit_code"], data["signal"], data["timed_out"], data["stdout"]) == (127, None, False, "")
    assert "no-such-command" in data["stderr"] and data["error"] == "command_not_found" and data["hint"]
    not_executable = json.loads(ex(guest_world, "/etc/hostname", opts=("--json",)).stdout)
    assert not_executable["exit_code"] == 126 and not_executable["error"] == "not_executable"


def test_stdout_and_stderr_stay_separate(guest_world: GuestWorld) -> None:
    result = ex(guest_world, "sh", "-c", "echo to-out; echo to-err >&2; echo more-out")
    assert result.returncode == 0
    assert result.stdout == b"to-out\nmore-out\n"
    assert result.stderr == b"to-err\n"


def test_ten_mib_of_output_arrive_intact(guest_world: GuestWorld) -> None:
    guest_world.sh("mkdir -p /tmp/exec && head -c 10485760 /dev/urandom > /tmp/exec/ten")
    expected = guest_world.sh("sha256sum /tmp/exec/ten").split()[0].decode()
    result = ex(guest_world, "cat", "/tmp/exec/ten")
    assert result.returncode == 0
    assert len(result.stdout) == 10 * 1024 * 1024
    assert hashlib.sha256(result.stdout).hexdigest() == expected


def test_stdin_is_streamed_with_its_end(guest_world: GuestWorld) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    counted = ex(guest_world, "sh", "-c", "wc -c; echo after-eof", input=data, opts=("-i",))
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.split() == [str(len(data)).encode(), b"after-eof"]
    echoed = ex(guest_world, "cat", input=data, opts=("-i",))
    assert echoed.stdout == data
    # without -i the command's stdin is empty (/dev/null): cat ends at once
    assert ex(guest_world, "cat", input=b"ignored").stdout == b""


def test_json_env_and_workdir(guest_world: GuestWorld) -> None:
    os.environ["FC_TEST_PASSED"] = "from-here"
    try:
        result = ex(guest_world, "sh", "-c", 'echo "$A|$FC_TEST_PASSED"; pwd; echo oops >&2; exit 3',
                    opts=("--json", "-e", "A=1 2", "-e", "FC_TEST_PASSED", "-w", "/tmp"))
    finally:
        del os.environ["FC_TEST_PASSED"]
    assert result.returncode == 3
    assert json.loads(result.stdout) == {"exit_code": 3, "signal": None, "timed_out": False,
                                         "stdout": "1 2|from-here\n/tmp\n", "stderr": "oops\n"}


def test_timeout_kills_the_command(guest_world: GuestWorld) -> None:
    started = time.monotonic()
    result = ex(guest_world, "sleep", "60", opts=("--timeout", "2"))
    assert result.returncode == 124
    assert b"--timeout 2 s" in result.stderr
    assert time.monotonic() - started < 30


def test_ctrl_c_without_a_tty_is_sigint_for_the_command(guest_world: GuestWorld) -> None:
    proc = subprocess.Popen(guest_world.argv("exec", "--name", guest_world.name, "--", "sh", "-c",
                                             "echo ready; exec sleep 100"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
        proc.wait()


def test_tty_names_a_pty_follows_resizes_and_restores_the_terminal(guest_world: GuestWorld) -> None:
    term = Terminal(guest_world.argv("exec", "--name", guest_world.name, "-t", "--", "/bin/sh"))
    try:
        term.type(b"tty; echo T-$((1+1))\r")
        out = term.read_until(b"T-2", 60)
        assert b"/dev/pts/" in out
        assert termios.tcgetattr(term.slave) != term.cooked  # raw here while attached
        since = len(term.output)
        term.type(b"stty size; echo S-$((2+2))\r")
        assert b"24 80" in term.read_until(b"S-4", 30, since=since)[since:]
        set_size(term.master, 50, 132)  # SIGWINCH to fc-macos, a resize to the guest pty
        time.sleep(0.5)
        since = len(term.output)
        term.type(b"stty size; echo R-$((3+3))\r")
        assert b"50 132" in term.read_until(b"R-6", 30, since=since)[since:]
        term.type(b"exit 7\r")
        assert term.wait() == 7
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()


def test_tty_ctrl_c_interrupts_sleep_with_130(guest_world: GuestWorld) -> None:
    term = Terminal(guest_world.argv("exec", "--name", guest_world.name, "-t", "--", "sh", "-c",
                                     "echo go-$((4+4)); exec sleep 100"))
    try:
        term.read_until(b"go-8", 60)
        term.type(b"\x03")  # a byte through the pty: the guest's line discipline sends SIGINT
        assert term.wait() == 130
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()


def test_tty_shell_has_job_control(guest_world: GuestWorld) -> None:
    term = Terminal(guest_world.argv("exec", "--name", guest_world.name, "-t", "--", "/bin/sh"))
    try:
        term.type(b"sleep 100 & echo J-$((5+5))\r")
        term.read_until(b"J-10", 60)
        since = len(term.output)
        term.type(b"jobs; echo K-$((6+6))\r")
        assert b"[1]" in term.read_until(b"K-12", 30, since=since)[since:]
        term.type(b"kill %1; exit\r")
        assert term.wait() == 0
    finally:
        term.close()


def test_exec_into_a_microvm_that_does_not_run(guest_world: GuestWorld) -> None:
    guest_world.fc("run", "--name", "idle", "--no-start")
    try:
        result = guest_world.fc("exec", "--name", "idle", "--", "true", check=False)
        assert result.returncode == 1
        assert b"Error:" in result.stderr and b"idle" in result.stderr and b"Hint:" in result.stderr
        unknown = guest_world.fc("exec", "--name", "ghost", "--", "true", check=False)
        assert unknown.returncode == 1 and b"Hint: run 'fc-macos microvm list'" in unknown.stderr
    finally:
        guest_world.fc("microvm", "rm", "--name", "idle", "--force", check=False)


def test_exec_without_a_guest_agent_and_after_it_died(guest_world: GuestWorld) -> None:
    boot = ("--memory", "128", "--boot-args", BOOT_ARGS, "--background")
    try:
        guest_world.fc("run", "--name", "no-vsock", "--no-vsock", *boot, timeout=400)
        plain = guest_world.fc("exec", "--name", "no-vsock", "--", "true", check=False)
        assert plain.returncode == 1 and b"has no guest agent" in plain.stderr and b"vsock" in plain.stderr
        assert b"Hint:" in plain.stderr
        guest_world.fc("run", "--name", "doomed", *boot, timeout=400)
        # the guest agent's supervisor (PID 1's child) and every server under it: gone for good
        guest_world.fc("exec", "--name", "doomed", "--", "sh", "-c",
                       "kill -9 $(ps -o pid,ppid,args | awk '$2 == 1 && /[f]c-guest-agent/ {print $1}')", check=False)
        dead = guest_world.fc("exec", "--name", "doomed", "--", "true", check=False)
        assert dead.returncode == 1 and b"does not answer" in dead.stderr and b"Hint:" in dead.stderr, dead.stderr
    finally:
        for name in ("no-vsock", "doomed"):
            guest_world.fc("microvm", "rm", "--name", name, "--force", check=False)


def test_run_says_when_the_guest_agent_did_not_come_in_time(guest_world: GuestWorld) -> None:
    try:
        late = guest_world.fc("run", "--name", "late", "--memory", "128", "--boot-args", BOOT_ARGS, "--background",
                              "--wait-timeout", "0.1", check=False, timeout=400)
        assert late.returncode == 1 and b"guest agent was not ready within 0.1s" in late.stderr, late.stderr
        for command in (b"'fc-macos microvm logs --name late'", b"'fc-macos microvm status --name late'",
                        b"'fc-macos microvm stop --name late'"):
            assert command in late.stderr, late.stderr
    finally:
        guest_world.fc("microvm", "rm", "--name", "late", "--force", check=False)
