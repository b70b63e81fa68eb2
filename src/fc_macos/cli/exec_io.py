"""The streaming half of ``fc-macos exec`` (see :mod:`fc_macos.cli.exec`): one
exec session wired to this process's stdin, stdout, stderr, terminal and
signals. Imported only when the command runs (the CLI starts without asyncio)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from fc_macos.cli.stdio import raw_terminal, read_chunks, terminal_size, write_all

if TYPE_CHECKING:
    from fc_macos.agent.client_streams import ExecSession, ExitStatus
    from fc_macos.cli.common import AppState

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
GIVE_UP_AFTER_INTERRUPTS = 3
SIGPIPE = 13


class ExecIO:
    """One exec session wired to this process's stdio and signals."""

    def __init__(self, session: ExecSession, *, tty: bool, stdin: bool, collect: bool) -> None:
        self.session = session
        self.tty = tty
        self.stdin = stdin
        self.collect = collect
        self.output: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.interrupts = 0
        self.gave_up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stdout_broken = False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keyboard(self) -> None:
        async for chunk in read_chunks(sys.stdin.fileno()):
            await self.session.send(chunk)
        await self.session.close_stdin()

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts >= GIVE_UP_AFTER_INTERRUPTS:
                self.gave_up.set()
                return
        self._spawn(self.session.signal(signum))

    def _on_winch(self) -> None:
        size = terminal_size(sys.stdin.fileno(), sys.stdout.fileno())
        if size:
            self._spawn(self.session.resize(*size))

    def _write(self, stream: str, data: bytes) -> None:
        if self.collect:
            self.output[stream] += data
            return
        if self._stdout_broken:
            return
        try:
            write_all(sys.stdout.fileno() if stream == "stdout" else sys.stderr.fileno(), data)
        except BrokenPipeError:  # '| head' has seen enough: the command gets SIGPIPE, as in a shell
            self._stdout_broken = True
            self._spawn(self.session.signal(SIGPIPE))

    async def _output(self) -> None:
        async for stream, data in self.session:
            self._write(stream, data)

    async def run(self) -> ExitStatus | None:
        """Until the command exits (its status) or the user gave up (None)."""
        loop = asyncio.get_running_loop()
        signals = FORWARDED_SIGNALS if not self.tty else (signal.SIGTERM, signal.SIGHUP)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        if self.tty:
            loop.add_signal_handler(signal.SIGWINCH, self._on_winch)
        if self.stdin:
            self._spawn(self._keyboard())
        output = loop.create_task(self._output())
        gave_up = loop.create_task(self.gave_up.wait())
        try:
            await asyncio.wait({output, gave_up}, return_when=asyncio.FIRST_COMPLETED)
            if output.done():
                output.result()
                return self.session.exit
            return None
        finally:
            for signum in (*signals, signal.SIGWINCH) if self.tty else signals:
                loop.remove_signal_handler(signum)
            for task in (output, gave_up, *self._tasks):
                task.cancel()
            await asyncio.gather(output, gave_up, *self._tasks, return_exceptions=True)


async def run_exec(state: AppState, name: str, argv: list[str], env: dict[str, str], cwd: str | None, tty: bool,
                stdin: bool, timeout: float | None) -> tuple[ExitStatus | None, dict[str, bytearray]]:
    from fc_macos.agent.client import AgentClient

    endpoint = state.endpoint()
    size = terminal_size(sys.stdin.fileno(), sys.stdout.fileno()) if tty else None
    rows, cols = size if size else (24, 80)
    async with AgentClient.from_endpoint(endpoint, home=state.home) as client:
        async with client.exec_session(name, argv, env=env, cwd=cwd, tty=tty, rows=rows if tty else None,
                                       cols=cols if tty else None, stdin=stdin, timeout_s=timeout) as session:
            raw = raw_terminal(sys.stdin.fileno()) if tty and not state.json else nullcontext(False)
            with raw:
                runner = ExecIO(session, tty=tty, stdin=stdin, collect=state.json)
                status = await runner.run()
            return status, runner.output
