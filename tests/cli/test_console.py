"""The console client as a real process on a pseudo-terminal (and on pipes),
talking to the real fc-agent (a process, the test VMM booting the offline guest
under QEMU): raw mode, window size, Ctrl+C passed to the guest, Ctrl+]
detaching, and the terminal restored on every way out. One guest serves the
module (marked guest: it boots under QEMU)."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fc_macos.agent.client import AgentClient
from fc_macos.agent.wire import MicroVMSpec
from fc_macos.agent_sync import BlockingAgent
from fc_macos.config import AgentEndpoint
from tests.cli.terminal import READ_TIMEOUT_S, Terminal, set_size
from tests.helpers.agent import GUEST_BOOT_ARGS, PROMPT_TIMEOUT_S, SHELL_PROMPT, AgentProcess, agent_process
from tests.helpers.guest_images import build_test_images

pytestmark = [pytest.mark.guest, pytest.mark.timeout(600)]


async def _wait_for_prompt(client: AgentClient, name: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMPT_TIMEOUT_S
    seen = b""
    async with client.console(name) as console:
        while not re.search(SHELL_PROMPT, seen):
            assert loop.time() < deadline, f"no shell prompt from {name}: {seen[-400:]!r}"
            await console.send(b"\r")
            try:
                seen += await asyncio.wait_for(console.receive(), 3) or b""
            except asyncio.TimeoutError:
                pass


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    """The agent, with microVM 'a' booted to its shell prompt."""
    work = Path(tempfile.mkdtemp(prefix="fct-", dir="/tmp"))
    try:
        with agent_process(work, (build_test_images().kernel.parent,)) as running:
            with BlockingAgent(running.url, running.token) as client:
                client.run(lambda c: c.create_microvm(MicroVMSpec(name="a", boot_args=GUEST_BOOT_ARGS)))
                client.run(lambda c: _wait_for_prompt(c, "a"))
            yield running
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path, agent: AgentProcess) -> Path:
    AgentEndpoint(agent.url, agent.token).save(tmp_path)
    return tmp_path


def eventually(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` (something another process does) until true or timed out."""
    deadline = time.monotonic() + READ_TIMEOUT_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), *args]


def test_shell_raw_mode_resize_ctrl_c_and_detach(home: Path) -> None:
    term = Terminal(_cli(home, "microvm", "shell", "--name", "a"))
    try:
        term.read_until(b"Press Ctrl+] to detach.")
        assert eventually(lambda: termios.tcgetattr(term.slave) != term.cooked)  # raw while attached
        start = len(term.output)
        term.type(b"echo typed-$((40+2))\r")  # raw mode: the line goes to the guest as typed
        term.read_until(b"typed-42\r\n", since=start)
        start = len(term.output)
        term.type(b"\x03")  # Ctrl+C goes to the guest (its shell is interrupted), the client lives on
        term.read_until(b"^C", since=start)
        term.read_until(b"fc-microvm:/# ", since=term.output.index(b"^C", start))
        set_size(term.master, 50, 132)  # the kernel sends SIGWINCH: the client tells the agent, and goes on
        start = len(term.output)
        term.type(b"echo alive-$((40+2))\r")
        term.read_until(b"alive-42\r\n", since=start)
        term.type(b"echo sent-$((40+2))\x1dignored")
        term.read_until(b"Detached from a")
        assert term.wait() == 0
        assert termios.tcgetattr(term.slave) == term.cooked  # the terminal is restored
    finally:
        term.close()
    # What came before Ctrl+] was sent, nothing after it: Enter runs exactly that line.
    again = subprocess.run(_cli(home, "microvm", "shell", "--name", "a"), input=b"\n", capture_output=True,
                           timeout=READ_TIMEOUT_S)
    assert again.returncode == 0, again.stderr
    assert b"sent-42\r\n" in again.stdout and b"ignored" not in again.stdout


def test_console_closing_restores_the_terminal(home: Path, agent: AgentProcess) -> None:
    with BlockingAgent(agent.url, agent.token) as client:
        client.run(lambda c: c.create_microvm(MicroVMSpec(name="quiet", start=False)))  # attaches, silent
        term = Terminal(_cli(home, "microvm", "shell", "--name", "quiet"))
        try:
            term.read_until(b"Press Ctrl+] to detach.")
            client.stop_microvm("quiet", force=True)  # the console closes with the microVM
            term.read_until(b"The console of quiet closed")
            assert term.wait() == 0
            assert termios.tcgetattr(term.slave) == term.cooked
        finally:
            term.close()
            client.run(lambda c: c.delete_microvm("quiet", force=True))


def test_sigterm_detaches_and_restores_the_terminal(home: Path) -> None:
    term = Terminal(_cli(home, "microvm", "shell", "--name", "a"))
    try:
        term.read_until(b"Press Ctrl+] to detach.")
        assert eventually(lambda: termios.tcgetattr(term.slave) != term.cooked)  # raw while attached
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


def test_piped_input_is_sent_and_output_printed(home: Path) -> None:
    result = subprocess.run(_cli(home, "microvm", "shell", "--name", "a"), input=b"echo piped-$((40+2))\n",
                            capture_output=True, timeout=READ_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert b"piped-42\r\n" in result.stdout
    assert b"Connected to a. Press Ctrl+] to detach." in result.stderr


def test_run_in_the_foreground_attaches_at_once(home: Path, agent: AgentProcess) -> None:
    term = Terminal(_cli(home, "run", "--name", "fresh", "--vcpus", "2", "--boot-args", GUEST_BOOT_ARGS))
    try:
        term.read_until(b"Started microVM fresh")
        term.read_until(b"Connected to fresh. Press Ctrl+] to detach.")
        term.read_until(b"Linux version", timeout=PROMPT_TIMEOUT_S)  # the guest's boot, as it happens
        term.type(b"\x1d")
        term.read_until(b"it keeps running")
        assert term.wait() == 0
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()
    with BlockingAgent(agent.url, agent.token) as client:
        fresh = client.run(lambda c: c.get_microvm("fresh"))
        assert (fresh.state, fresh.vcpus) == ("running", 2)
        client.run(lambda c: c.delete_microvm("fresh", force=True))
