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

import json
import os
import signal

import click

from fc_macos.cli.common import AppState, json_option, pass_state, print_error
from fc_macos.errors import EXEC_EXIT_CODES, ExecError, UsageError

TIMED_OUT_EXIT = 124  # like timeout(1)


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
    stderr} once it has finished (for a command that cannot start, 127 or
    126, with the reason in stderr and error, message, hint). Ctrl+C reaches
    the command (with -t as the key itself, else as SIGINT).

    \b
    Examples:
      fc-macos exec --name web -- uname -a
      fc-macos exec --name web -t -- /bin/sh            # a shell with job control
      tar c src | fc-macos exec --name web -i -- tar x -C /srv
      fc-macos exec --name web -e MODE=test -w /srv --timeout 60 -- ./run-tests
      fc-macos exec --name web --json -- cat /etc/os-release
    """
    import asyncio

    from fc_macos.cli.exec_io import run_exec

    argv = list(command)
    try:
        status, output = asyncio.run(run_exec(state, name, argv, parse_env(env_pairs), workdir, tty,
                                           interactive or tty, timeout))
    except ExecError as exc:
        if not state.json or exc.code not in EXEC_EXIT_CODES:
            raise
        # A command that cannot start ends like in a shell (127/126): --json still has its exit code.
        click.echo(json.dumps({"exit_code": exc.exit_code, "signal": None, "timed_out": False, "stdout": "",
                               "stderr": exc.message + "\n", "error": exc.code, "message": exc.message,
                               "hint": exc.hint}))
        print_error(None, exc.code, exc.message, exc.hint)
        raise click.exceptions.Exit(exc.exit_code) from None
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
