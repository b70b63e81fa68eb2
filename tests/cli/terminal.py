"""A process on a new pseudo-terminal, for console tests (tests type on the master side)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time

READ_TIMEOUT_S = 20.0


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """A process whose stdin/stdout/stderr are the slave side of a new pty (its
    controlling terminal); the test types on and reads the master side."""

    def __init__(self, argv: list[str]) -> None:
        self.master, self.slave = os.openpty()
        set_size(self.slave, 24, 80)
        self.cooked = termios.tcgetattr(self.slave)

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     preexec_fn=controlling_tty, close_fds=True)
        self.output = b""

    def read_until(self, marker: bytes, timeout: float = READ_TIMEOUT_S, since: int = 0) -> bytes:
        """Read until ``marker`` shows in the output (after offset ``since``)."""
        deadline = time.monotonic() + timeout
        while marker not in self.output[since:]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{marker!r} never came; got {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process ended and closed the pty
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{marker!r} never came before EOF; got {self.output!r}")
                self.output += chunk
        return self.output

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self) -> int:
        code = self.proc.wait(READ_TIMEOUT_S)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


GUEST_PROMPT = b":/# "  # the busybox shell of the test rootfs (hostname:/# )


def shell_runs(argv: list[str], name: str, command: bytes, expected: bytes, *, boot_timeout: float = 180.0) -> bytes:
    """Run ``argv`` (an ``fc-macos ... microvm shell --name NAME`` command line) on a
    pseudo-terminal, wait for the guest's shell prompt (poking it while the guest may
    still be booting), type ``command``, wait for ``expected``, then detach with
    Ctrl+], which must exit 0. Returns everything the terminal showed."""
    term = Terminal(argv)
    try:
        term.read_until(b"Press Ctrl+] to detach.", 60.0)
        deadline = time.monotonic() + boot_timeout
        while True:
            term.type(b"\r")
            try:
                term.read_until(GUEST_PROMPT, 5.0, since=len(term.output))
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        since = len(term.output)
        term.type(command + b"\r")
        term.read_until(expected, 60.0, since=since)
        term.type(b"\x1d")
        term.read_until(b"Detached from " + name.encode())
        assert term.wait() == 0
        return term.output
    finally:
        term.close()
