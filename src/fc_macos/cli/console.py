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
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fc_macos.cli.stdio import raw_terminal, terminal_size, watch_input, write_all

if TYPE_CHECKING:
    from fc_macos.agent.client import ConsoleStream
    from fc_macos.cli.common import AppState
    from fc_macos.config import AgentEndpoint

DETACH_BYTE = b"\x1d"  # Ctrl+]
QUIET_AFTER_EOF_S = 1.0  # with piped input: how long the guest must be quiet before we leave
FIRST_ANSWER_S = 5.0  # ... but first give it this long to start answering
HANGUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Session:
    """One attachment: pumps stdin to the console and the console to stdout."""

    def __init__(self, console: ConsoleStream, in_fd: int, out_fd: int) -> None:
        self.console = console
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.interactive = False
        self.output_seen = asyncio.Event()
        self.input: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: SIGTERM/SIGHUP

    def _watch_stdin(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        return watch_input(loop, self.in_fd, self.input.put_nowait)

    async def send_size(self) -> None:
        size = terminal_size(self.in_fd, self.out_fd)
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
                write_all(self.out_fd, chunk)
            except BrokenPipeError:  # e.g. '| head' has seen enough
                return "detached"
            self.output_seen.set()
        return "closed"

    @contextlib.contextmanager
    def hangups(self) -> Iterator[None]:
        """SIGTERM and SIGHUP leave through the same door as Ctrl+] while the
        block runs. Entered before the terminal goes raw, so that no signal
        can end the process with the terminal left raw."""
        loop = asyncio.get_running_loop()
        for sig in HANGUP_SIGNALS:
            loop.add_signal_handler(sig, self.input.put_nowait, None)
        try:
            yield
        finally:
            for sig in HANGUP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def run(self, interactive: bool) -> str:
        loop = asyncio.get_running_loop()
        self.interactive = interactive
        stop_watching = self._watch_stdin(loop)
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
            stop_watching()
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
            session = _Session(console, in_fd, out_fd)
            with session.hangups(), raw_terminal(in_fd) as interactive:
                return await session.run(interactive)


def attach(state: AppState, name: str, *, scrollback: bool = True) -> str:
    """Attach this terminal to microVM ``name``'s console until the user detaches
    or the console closes. Returns ``"detached"`` or ``"closed"``."""
    endpoint = state.endpoint()
    return asyncio.run(_attach(endpoint, state.home, name, scrollback))
