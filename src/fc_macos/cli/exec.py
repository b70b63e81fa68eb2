"""``fc-macos exec``: run a command inside a microVM, through its guest agent.

The command's stdout and stderr come out on this process's stdout and stderr,
as they are written, and fc-macos exits with its exit code (128+N when signal
N killed it). ``-i`` streams stdin, EOF included. ``-t`` gives the command a
pseudo-terminal: this terminal goes into raw mode (so every key, Ctrl+C
included, reaches the guest as a byte), its size is sent at the start and on
every SIGWINCH, and it is restored on every way out. Without ``-t``, Ctrl+C
(SIGINT), SIGTERM, SIGHUP and SIGQUIT are sent to the command as signals; a
third Ctrl+C gives up waiting (the agent then kills the command).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Coroutine
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import click

from fc_macos.cli.common import AppState, json_option, pass_state
from fc_macos.cli.stdio import raw_terminal, read_chunks, terminal_size, write_all
from fc_macos.errors import UsageError

if TYPE_CHECKING:
    from fc_macos.agent.client_streams import ExecSession, ExitStatus

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
GIVE_UP_AFTER_INTERRUPTS = 3
TIMED_OUT_EXIT = 124  # like timeout(1)
SIGPIPE = 13


def parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    """``K=V`` entries; a bare ``K`` takes this machine's value of K (if set)."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key:
            raise UsageError(f"invalid environment entry {pair!r}", hint="write -e NAME=VALUE (or -e NAME to pass yours)")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


class _Exec:
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


async def _exec(state: AppState, name: str, argv: list[str], env: dict[str, str], cwd: str | None, tty: bool,
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
                runner = _Exec(session, tty=tty, stdin=stdin, collect=state.json)
                status = await runner.run()
            return status, runner.output


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("--name", required=True, help="Name of the microVM.")
@click.option("-i", "--interactive", is_flag=True, help="Stream stdin to the command (its end too).")
@click.option("-t", "--tty", is_flag=True,
              help="Give the command a pseudo-terminal (raw mode, window size and resize here); implies -i.")
@click.option("-e", "--env", "env_pairs", multiple=True, metavar="K=V",
              help="Set an environment variable (repeatable); -e K passes this machine's value.")
@click.option("-w", "--workdir", metavar="DIR", help="Working directory in the guest (default /).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), metavar="S",
              help="Kill the command after S seconds (exit code 124).")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_state
def exec_cmd(state: AppState, name: str, interactive: bool, tty: bool, env_pairs: tuple[str, ...],
             workdir: str | None, timeout: float | None, command: tuple[str, ...]) -> None:
    """Run COMMAND inside microVM NAME and exit with its exit code.

    stdout and stderr stay separate; 128+N means signal N killed the command,
    127 that it was not found, 126 that it is not executable, 124 that
    --timeout ran out. --json prints {exit_code, signal, timed_out, stdout,
    stderr} once it has finished. Ctrl+C reaches the command (with -t as the
    key itself, else as SIGINT).

    \b
    Examples:
      fc-macos exec --name web -- uname -a
      fc-macos exec --name web -t -- /bin/sh            # a shell with job control
      tar c src | fc-macos exec --name web -i -- tar x -C /srv
      fc-macos exec --name web -e MODE=test -w /srv --timeout 60 -- ./run-tests
      fc-macos exec --name web --json -- cat /etc/os-release
    """
    argv = list(command)
    status, output = asyncio.run(_exec(state, name, argv, parse_env(env_pairs), workdir, tty,
                                       interactive or tty, timeout))
    if status is None:
        click.echo(f"\nGave up waiting for {argv[0]!r} in {name}; the agent stops it.", err=True)
        raise click.exceptions.Exit(128 + signal.SIGINT)
    if state.json:
        click.echo(json.dumps({"exit_code": status.exit_code, "signal": status.signal, "timed_out": status.timed_out,
                               "stdout": output["stdout"].decode("utf-8", errors="replace"),
                               "stderr": output["stderr"].decode("utf-8", errors="replace")}))
    if status.timed_out:
        click.secho(f"Error: {argv[0]!r} ran longer than --timeout {timeout:g} s and was killed", fg="red", err=True)
        raise click.exceptions.Exit(TIMED_OUT_EXIT)
    raise click.exceptions.Exit(status.exit_code)


def register(group: click.Group) -> None:
    group.add_command(exec_cmd)
