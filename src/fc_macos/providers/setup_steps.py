"""The step engine of ``fc-macos setup`` (and ``vm start``), shared by every provider.

Setup is an editable list of named :class:`Step`, run in order by
:func:`run_steps`. Each step either does its work, or raises :class:`Skipped`
when it is already done (re-running setup is safe and quick). A failing step
becomes :class:`~fc_macos.errors.SetupError` naming it, with a hint. Cleanups a
step registers (the host's ``cleanups``) run, newest first, when a later step
fails, and are dropped once a step marked ``commit`` succeeds: a half-started
VM is stopped, a half-cloned VM deleted. :func:`setup_lock` keeps two runs
from racing.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fc_macos.errors import ConflictError, FcMacosError, SetupError
from fc_macos.progress import Progress

DEFAULT_HINT = "run 'fc-macos setup' again; 'fc-macos doctor' checks the prerequisites"


class Skipped(Exception):
    """Raised by a step that finds its work already done."""


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[], str | None]  # returns a detail for progress.done
    hint: str = DEFAULT_HINT
    commit: bool = False  # success drops the cleanups registered so far


def run_steps(steps: list[Step], progress: Progress, cleanups: list[Callable[[], None]]) -> None:
    """Run ``steps`` in order (see the module docstring)."""
    for step in steps:
        progress.step(step.name, step.description)
        try:
            detail = step.run()
        except Skipped as skip:
            progress.skip(step.name, str(skip))
            continue
        except BaseException as exc:
            _undo(cleanups)
            if isinstance(exc, SetupError):
                raise
            if isinstance(exc, FcMacosError):
                raise SetupError(step.name, exc.message, hint=exc.hint or step.hint) from exc
            if isinstance(exc, OSError):
                raise SetupError(step.name, str(exc), hint=step.hint) from exc
            raise
        progress.done(step.name, detail or "")
        if step.commit:
            cleanups.clear()


def _undo(cleanups: list[Callable[[], None]]) -> None:
    while cleanups:
        undo = cleanups.pop()
        try:
            undo()
        except Exception:  # noqa: BLE001 - best effort: the step's own error is what matters
            pass


@contextmanager
def setup_lock(home: Path) -> Iterator[None]:
    """Hold ``<home>/setup.lock``; ConflictError naming the holder's pid if taken."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConflictError(f"another setup is running (pid {holder})",
                                hint="wait for it to finish, then run the command again") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
