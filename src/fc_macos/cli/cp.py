"""``fc-macos cp``: copy files and directory trees between this machine and a
microVM, with ``docker cp``'s rules (see :mod:`fc_macos.transfer.paths`).

One side is ``NAME:PATH`` (a microVM's path), the other a local path or
``-`` (a tar stream on stdin, unpacked into the guest directory, or written
to stdout). Ctrl+C (or SIGTERM) stops a copy and leaves nothing behind: a
local destination is written under a temporary name and renamed at the end,
and the guest agent does the same inside the guest.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import click

from fc_macos.agent.wire import NAME_PATTERN
from fc_macos.cli.common import AppState, emit, json_option, pass_state
from fc_macos.cli.progress_bar import ProgressBar, human
from fc_macos.errors import UsageError

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient
    from fc_macos.transfer.copy import CopyResult

T = TypeVar("T")
CP_HINT = "write NAME:PATH for the microVM's side, e.g. 'fc-macos cp ./site web:/srv' or 'fc-macos cp web:/etc/hosts .'"


@dataclass(frozen=True)
class Location:
    """One side of a copy: ``name`` is the microVM (None: this machine)."""

    name: str | None
    path: str

    @classmethod
    def parse(cls, text: str) -> Location:
        """``NAME:PATH`` is in a microVM (NAME a valid microVM name); anything
        else, ``-`` included, is local (write ``./a:b`` for a local path with a colon)."""
        name, sep, path = text.partition(":")
        if sep and NAME_PATTERN.match(name):
            if not path:
                raise UsageError(f"no path after {name}: in {text!r}", hint=f"e.g. {name}:/root")
            return cls(name, path)
        return cls(None, text)

    def __str__(self) -> str:
        return self.path if self.name is None else f"{self.name}:{self.path}"


async def _interruptible(work: Awaitable[T]) -> T:
    """Run ``work``; SIGTERM cancels it like Ctrl+C does (its cleanup runs)."""
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _copy(state: AppState, src: Location, dest: Location, bar: ProgressBar) -> CopyResult | None:
    from fc_macos.cli.stdio import read_chunks, write_all
    from fc_macos.transfer import copy

    async def work(client: AgentClient) -> CopyResult | None:
        if src.name is not None and dest.path == "-":
            async for chunk in copy.tar_from_guest(client, src.name, src.path):
                write_all(sys.stdout.fileno(), chunk)
            return None
        if src.name is not None:
            return await copy.copy_from_guest(client, src.name, src.path, dest.path, progress=bar)
        assert dest.name is not None
        if src.path == "-":
            return await copy.tar_to_guest(client, dest.name, read_chunks(sys.stdin.fileno()), dest.path,
                                           progress=bar)
        return await copy.copy_to_guest(client, dest.name, src.path, dest.path, progress=bar)

    def call(client: AgentClient) -> Awaitable[CopyResult | None]:
        return _interruptible(work(client))

    return state.call_agent(call)


@click.command("cp")
@click.argument("src")
@click.argument("dest")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@json_option
@pass_state
def cp_cmd(state: AppState, src: str, dest: str, quiet: bool) -> None:
    """Copy SRC to DEST, one of them NAME:PATH in a microVM (like docker cp).

    Files and directory trees, keeping modes, mtimes and symlinks. A
    directory that exists receives the copy under its own name; a new name
    (whose parent exists) becomes the copy; 'DIR/.' copies the contents of
    DIR. '-' is a tar stream: from stdin into a guest directory (directories
    its members need but it does not list are made, mode 0755, as tar makes
    them), or of a guest path to stdout. Large copies show a progress bar on
    a terminal.

    \b
    Examples:
      fc-macos cp ./site web:/srv                  # -> /srv/site in the guest
      fc-macos cp web:/var/log/app.log ./logs/     # into an existing directory
      fc-macos cp web:/srv/site/. ./site-copy      # the contents, to a new directory
      tar c assets | fc-macos cp - web:/srv        # a tar stream, unpacked into /srv
      fc-macos cp web:/etc - | tar t               # a tar stream of /etc
    """
    source, target = Location.parse(src), Location.parse(dest)
    if (source.name is None) == (target.name is None):
        raise UsageError("one of SRC and DEST must be in a microVM (NAME:PATH), the other on this machine", hint=CP_HINT)
    from asyncio import CancelledError

    bar = ProgressBar(f"{source} -> {target}", enabled=False if quiet or state.json else None)
    try:
        result = _copy(state, source, target, bar)
    except (KeyboardInterrupt, CancelledError):
        bar.finish()
        click.echo(f"\nInterrupted: nothing was left at {target}.", err=True)
        raise click.exceptions.Exit(130) from None
    bar.finish()
    if result is None:
        return
    where = result.destination if target.name is None else f"{target.name}:{result.destination}"
    if not quiet or state.json:
        emit(state, {"destination": where, "entries": result.entries, "bytes": result.bytes},
             f"Copied {result.entries} {'entry' if result.entries == 1 else 'entries'} ({human(result.bytes)}) to {where}")
