"""The console client as a real process on a pseudo-terminal (and on pipes),
talking to a fake agent over TCP: raw mode, window size, Ctrl+C passed to the
guest, Ctrl+] detaching, and the terminal restored on every way out."""

from __future__ import annotations

import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fc_macos.config import AgentEndpoint
from tests.agent.fake_agent import TOKEN, FakeAgent
from tests.cli.terminal import READ_TIMEOUT_S, Terminal, set_size


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with FakeAgent() as fake:
        fake.microvms["a"] = {"name": "a", "state": "running", "pid": 1, "vcpus": 1, "memory_mib": 256,
                              "spec": {}, "created_at": 0.0}
        yield fake


@pytest.fixture
def home(tmp_path: Path, agent: FakeAgent) -> Path:
    AgentEndpoint(agent.url, TOKEN).save(tmp_path)
    return tmp_path


def eventually(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` (something another process does) until true or timed out."""
    deadline = time.monotonic() + READ_TIMEOUT_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), *args]


def test_shell_raw_mode_resize_ctrl_c_and_detach(home: Path, agent: FakeAgent) -> None:
    term = Terminal(_cli(home, "microvm", "shell", "--name", "a"))
    try:
        term.read_until(b"Press Ctrl+] to detach.")
        term.read_until(b"scrollback\r\n")
        assert eventually(lambda: agent.resizes[:1] == [(24, 80)])  # the size at attach
        term.type(b"ls\r")
        # Raw mode: no local echo and '\r' is not turned into '\n' on the way in.
        term.read_until(b"echo:ls\r")
        assert b"ls\r\n" not in term.output.split(b"scrollback", 1)[1].replace(b"echo:ls\r", b"")
        term.type(b"\x03")  # Ctrl+C goes to the guest, the client lives on
        term.read_until(b"echo:\x03")
        set_size(term.master, 50, 132)  # the kernel sends SIGWINCH to the client
        assert eventually(lambda: (50, 132) in agent.resizes)
        term.type(b"pwd\x1dignored")
        term.read_until(b"Detached from a")
        assert term.wait() == 0
        # What came before Ctrl+] was sent, nothing after it.
        assert eventually(lambda: agent.console_input[-1:] == [b"pwd"])
        assert b"ignored" not in term.output
        assert termios.tcgetattr(term.slave) == term.cooked  # the terminal is restored
    finally:
        term.close()


def test_console_closing_restores_the_terminal(home: Path, agent: FakeAgent) -> None:
    term = Terminal(_cli(home, "microvm", "shell", "--name", "a"))
    try:
        term.read_until(b"scrollback\r\n")
        term.type(b"poweroff\r")  # the fake guest powers off and closes the console
        term.read_until(b"The console of a closed")
        assert term.wait() == 0
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()


def test_sigterm_detaches_and_restores_the_terminal(home: Path) -> None:
    term = Terminal(_cli(home, "microvm", "shell", "--name", "a"))
    try:
        term.read_until(b"scrollback\r\n")
        assert termios.tcgetattr(term.slave) != term.cooked  # raw while attached
        term.proc.send_signal(signal.SIGTERM)
        term.read_until(b"Detached from a")
        assert term.wait() == 0
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()


def test_unknown_microvm_fails_before_touching_the_terminal(home: Path) -> None:
    term = Terminal(_cli(home, "microvm", "shell", "--name", "ghost"))
    try:
        term.read_until(b"Hint: run 'fc-macos microvm list'")
        assert term.wait() == 1
        assert b"Error: no microVM named 'ghost'" in term.output
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()


def test_piped_input_is_sent_and_output_printed(home: Path, agent: FakeAgent) -> None:
    result = subprocess.run(_cli(home, "microvm", "shell", "--name", "a"), input=b"uname -a\n",
                            capture_output=True, timeout=READ_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"scrollback\r\necho:uname -a\n"
    assert b"Connected to a. Press Ctrl+] to detach." in result.stderr
    assert agent.resizes == []  # no terminal, no size


def test_run_in_the_foreground_attaches_at_once(home: Path, agent: FakeAgent) -> None:
    term = Terminal(_cli(home, "run", "--name", "fresh", "--vcpus", "2"))
    try:
        term.read_until(b"Started microVM fresh")
        term.read_until(b"Connected to fresh. Press Ctrl+] to detach.")
        term.read_until(b"scrollback\r\n")  # guest output is read only once the terminal is raw
        term.type(b"hi\r")
        term.read_until(b"echo:hi\r")
        term.type(b"\x1d")
        term.read_until(b"it keeps running")
        assert term.wait() == 0
        assert agent.microvms["fresh"]["state"] == "running" and agent.microvms["fresh"]["vcpus"] == 2
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()
