"""The interactive console client: this terminal <-> a microVM's serial console.

When stdin is a terminal it is put in raw mode (every key, Ctrl+C included,
goes to the guest), the window size is sent on attach and on SIGWINCH, and
``Ctrl+]`` detaches. The terminal is restored on every way out: detach, the
console closing, an error, SIGTERM or SIGHUP. When stdin is not a terminal
(a pipe, a file) its bytes are sent as they are; at its end the client keeps
printing until the guest has been quiet for a moment, then detaches.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from fc_macos.agent.client import ConsoleStream
    from fc_macos.cli.common import AppState
    from fc_macos.config import AgentEndpoint

DETACH_BYTE = b"\x1d"  # Ctrl+]
QUIET_AFTER_EOF_S = 1.0  # with piped input: how long the guest must be quiet before we leave
FIRST_ANSWER_S = 5.0  # ... but first give it this long to start answering
READ_SIZE = 65536
HANGUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Put terminal ``fd`` in raw mode for the block; yields whether it did.
    A non-terminal ``fd`` is left alone."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


def _terminal_size(*fds: int) -> tuple[int, int] | None:
    for fd in fds:
        if os.isatty(fd):
            try:
                size = os.get_terminal_size(fd)
            except OSError:
                continue
            return size.lines, size.columns
    return None


class _Session:
    """One attachment: pumps stdin to the console and the console to stdout."""

    def __init__(self, console: ConsoleStream, in_fd: int, out_fd: int, interactive: bool) -> None:
        self.console = console
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.interactive = interactive
        self.output_seen = asyncio.Event()
        self.input: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: SIGTERM/SIGHUP

    def _watch_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        def readable() -> None:
            try:
                data = os.read(self.in_fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.in_fd)
            self.input.put_nowait(data)

        try:
            loop.add_reader(self.in_fd, readable)
        except (PermissionError, ValueError, NotImplementedError, OSError):
            # Regular files and /dev/null cannot be polled: read them in a thread.
            async def pump() -> None:
                while True:
                    data = await loop.run_in_executor(None, os.read, self.in_fd, READ_SIZE)
                    self.input.put_nowait(data)
                    if not data:
                        return

            loop.create_task(pump())

    async def send_size(self) -> None:
        size = _terminal_size(self.in_fd, self.out_fd)
        if size:
            await self.console.resize(*size)

    async def keyboard(self) -> str:
        """Send stdin to the guest; ends with 'detached' (Ctrl+], SIGTERM, SIGHUP) or 'eof'."""
        while True:
            data = await self.input.get()
            if data is None:
                return "detached"
            if not data:
                return "eof"
            if DETACH_BYTE in data:
                before = data.split(DETACH_BYTE, 1)[0]
                if before:
                    await self.console.send(before)
                return "detached"
            self.output_seen.clear()
            await self.console.send(data)

    async def screen(self) -> str:
        """Print guest output; ends with 'closed' when the console closes
        (or 'detached' when nobody reads stdout any more)."""
        while (chunk := await self.console.receive()) is not None:
            try:
                _write_all(self.out_fd, chunk)
            except BrokenPipeError:  # e.g. '| head' has seen enough
                return "detached"
            self.output_seen.set()
        return "closed"

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        # First, before any await: the terminal is raw already, and a SIGTERM
        # must leave through the same door as Ctrl+], restoring it.
        for sig in HANGUP_SIGNALS:
            loop.add_signal_handler(sig, self.input.put_nowait, None)
        self._watch_stdin(loop)
        resize_tasks: set[asyncio.Task[None]] = set()
        if self.interactive:
            await self.send_size()

            def on_winch() -> None:
                task = loop.create_task(self.send_size())
                resize_tasks.add(task)
                task.add_done_callback(resize_tasks.discard)

            loop.add_signal_handler(signal.SIGWINCH, on_winch)
        screen = loop.create_task(self.screen())
        keyboard = loop.create_task(self.keyboard())
        try:
            done, _ = await asyncio.wait({screen, keyboard}, return_when=asyncio.FIRST_COMPLETED)
            if screen in done:
                return screen.result()
            outcome = keyboard.result()
            if outcome == "eof":
                # Piped input ended: let the guest answer, leave once it is quiet.
                wait = FIRST_ANSWER_S  # output_seen: the guest answered since the last input
                while not screen.done():
                    seen = loop.create_task(self.output_seen.wait())
                    answered, _ = await asyncio.wait(
                        {screen, seen}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                    seen.cancel()
                    if not answered:
                        break
                    self.output_seen.clear()
                    wait = QUIET_AFTER_EOF_S
                return screen.result() if screen.done() else "detached"
            return outcome
        finally:
            if self.interactive:
                loop.remove_signal_handler(signal.SIGWINCH)
            for sig in HANGUP_SIGNALS:
                loop.remove_signal_handler(sig)
            try:
                loop.remove_reader(self.in_fd)
            except (ValueError, OSError):
                pass
            for task in (screen, keyboard, *resize_tasks):
                task.cancel()
            await asyncio.gather(screen, keyboard, *resize_tasks, return_exceptions=True)


async def _attach(endpoint: AgentEndpoint, home: Path, name: str, scrollback: bool) -> str:
    from fc_macos.agent.client import AgentClient

    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    async with AgentClient.from_endpoint(endpoint, home=home) as client:
        async with client.console(name, scrollback=scrollback) as console:
            click.echo(f"Connected to {name}. Press Ctrl+] to detach.", err=True)
            sys.stdout.flush()
            with raw_terminal(in_fd) as interactive:
                return await _Session(console, in_fd, out_fd, interactive).run()


def attach(state: AppState, name: str, *, scrollback: bool = True) -> str:
    """Attach this terminal to microVM ``name``'s console until the user detaches
    or the console closes. Returns ``"detached"`` or ``"closed"``."""
    endpoint = state.endpoint()
    return asyncio.run(_attach(endpoint, state.home, name, scrollback))
