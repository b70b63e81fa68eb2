"""``fc-macos dashboard`` once in a real terminal (tmux), as a person uses it,
on the ``local`` provider with the real fc-agent and the test VMM: it shows
two microVMs, a stop from another shell shows within two seconds, Enter
attaches a console and Ctrl+] comes back, q quits and the terminal is as it
was (main screen, cooked mode with echo, cursor shown, no mouse reporting)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fc_macos.providers.local import check_kvm

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"
WAIT_S = 60.0  # for anything but the stop, which must show within two seconds
STOP_SHOWS_WITHIN_S = 2.0

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("tmux") is None,
                       reason="needs tmux to run the dashboard in a real terminal: apt-get install tmux "
                              "(scripts/setup-test-host installs it)"),
    pytest.mark.skipif(not check_kvm().ok, reason="the local provider's setup needs a usable /dev/kvm"),
]


def fc(home: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), "--provider", "local",
                             *args], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


class Tmux:
    """One tmux server of its own (``-L``), one window running a plain shell."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"fct-dash-{secrets.token_hex(4)}"
        self.run("new-session", "-d", "-s", "t", "-x", "130", "-y", "36", "env", "PS1=$ ", "bash", "--norc",
                 "--noprofile", env=env)

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=30, env=env).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def flag(self, name: str) -> str:
        return self.run("display-message", "-p", "-t", "t", f"#{{{name}}}").strip()

    def wait(self, check: Callable[[str], bool], what: str, timeout: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen within {timeout:g}s; the screen:\n{screen}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def row_of(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith(f"│ {name} ")), "")


@pytest.fixture
def home(short_tmp: Path) -> Iterator[Path]:
    home = short_tmp / "home"
    images = short_tmp / "img"
    images.mkdir()
    (images / "vmlinux").write_bytes(b"not an ELF kernel\n")  # the microVMs are only configured, never booted
    (images / "rootfs.ext4").write_bytes(b"\0" * 4096)
    fc(home, "setup", "--firecracker-bin", str(TEST_VMM), "--kernel", str(images / "vmlinux"),
       "--rootfs", str(images / "rootfs.ext4"))
    try:
        yield home
    finally:
        subprocess.run([sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), "--provider", "local",
                        "vm", "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    env["TERM"] = "xterm-256color"
    session = Tmux(env)
    try:
        yield session
    finally:
        session.close()


def test_dashboard_in_a_real_terminal(home: Path, tmux: Tmux) -> None:
    fc(home, "run", "--name", "alpha", "--no-start")
    fc(home, "run", "--name", "beta", "--no-start")
    tmux.wait(lambda s: s.rstrip().endswith("$"), "the shell's prompt")
    tmux.keys("stty -a | tr ' ' '\\n' | grep -xE -- '-?(icanon|echo)' | sort | tr '\\n' ' '; echo", "Enter")
    before = tmux.wait(lambda s: "echo icanon" in s, "the terminal's modes before")
    assert "-icanon" not in before and "-echo" not in before

    tmux.keys("clear; " + " ".join([sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), "--provider",
                                    "local", "dashboard"]), "Enter")
    tmux.wait(lambda s: "created" in row_of(s, "alpha") and "created" in row_of(s, "beta")
              and "status   reachable" in s and "q Quit" in s, "both microVMs listed, the agent and the footer")
    assert tmux.flag("alternate_on") == "1"

    fc(home, "microvm", "stop", "--name", "beta")  # from another shell
    stopped = time.monotonic()
    tmux.wait(lambda s: "stopped" in row_of(s, "beta"), "beta's stop on the dashboard",
              timeout=STOP_SHOWS_WITHIN_S)
    assert time.monotonic() - stopped <= STOP_SHOWS_WITHIN_S
    assert "created" in row_of(tmux.screen(), "alpha")

    tmux.keys("Enter")  # the first row, alpha: its console (silent: the microVM is not started)
    tmux.wait(lambda s: "Connected to alpha. Press Ctrl+] to detach." in s, "the console attached")
    assert tmux.flag("alternate_on") == "0"  # the dashboard stepped aside
    tmux.keys("C-]")
    tmux.wait(lambda s: "created" in row_of(s, "alpha") and "q Quit" in s, "the dashboard back after Ctrl+]")

    tmux.keys("q")
    after = tmux.wait(lambda s: s.rstrip().endswith("$"), "the shell's prompt after quitting")
    assert "q Quit" not in after  # the main screen is back, not the dashboard
    assert tmux.flag("alternate_on") == "0"
    assert tmux.flag("cursor_flag") == "1" and tmux.flag("mouse_any_flag") == "0"
    tmux.keys("clear; stty -a | tr ' ' '\\n' | grep -xE -- '-?(icanon|echo)' | sort | tr '\\n' ' '; echo", "Enter")
    modes = tmux.wait(lambda s: "echo icanon" in s or "-icanon" in s or "-echo" in s, "the terminal's modes after")
    assert "echo icanon" in modes and "-icanon" not in modes and "-echo" not in modes
