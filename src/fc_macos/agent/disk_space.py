"""Running out of disk space, told as such.

A full disk is a condition the user must be told about, not an agent
failure: :func:`ensure_free` refuses work that would not fit (checked before
a rootfs copy), :func:`copy_file` turns ``ENOSPC`` half-way through a copy
into the same refusal after removing the partial copy, and :func:`raise_if_full`
does it for any other write (the microVM records). Each raises
:class:`~fc_macos.errors.NoSpaceError` (HTTP 507 ``no_space``) saying how
much is free and how much is needed, with a hint on how to free space or
grow the disk.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from fc_macos.errors import NoSpaceError

#: Room kept for what a microVM writes besides its rootfs copy (record, logs, sockets).
RESERVE_BYTES = 8 * 1024 * 1024
MIB = 1024 * 1024

#: errno values that mean "the disk (or the quota) is full".
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

GROW_HINT = (
    "free space in {where} (remove microVMs you no longer need: 'fc-macos microvm rm --name NAME'; "
    "unused snapshots and images under the agent's --state-dir), or grow the disk: in the Tart VM, "
    "'fc-macos vm stop', 'tart set fc-macos --disk-size GB' (it can only grow), 'fc-macos vm start' "
    "(the VM's root filesystem must grow with it: growpart and resize2fs if its image does not do it at boot); "
    "on a Linux host, free space on that filesystem or start fc-agent with a --state-dir on a larger one"
)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def no_space(what: str, where: Path, needed: int | None) -> NoSpaceError:
    """The refusal for ``what`` in directory ``where`` (``needed`` bytes, if known)."""
    try:
        free = f"{free_bytes(where) / MIB:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    need = f", {needed / MIB:.1f} MiB needed" if needed is not None else ""
    return NoSpaceError(
        f"not enough disk space for {what} in {where}: {free}{need}",
        hint=GROW_HINT.format(where=where),
    )


def ensure_free(what: str, where: Path, needed: int) -> None:
    """NoSpaceError unless ``needed`` bytes plus :data:`RESERVE_BYTES` fit in ``where``."""
    if free_bytes(where) < needed + RESERVE_BYTES:
        raise no_space(what, where, needed + RESERVE_BYTES)


def raise_if_full(exc: OSError, what: str, where: Path, needed: int | None = None) -> None:
    """Raise NoSpaceError (from ``exc``) if ``exc`` says the disk is full; else return."""
    if exc.errno in FULL_ERRNOS:
        raise no_space(what, where, needed) from exc


def copy_file(source: Path, target: Path, what: str) -> None:
    """Copy ``source`` to ``target``; if the disk fills up during the copy, no
    partial ``target`` is left and NoSpaceError is raised. Other OSErrors
    propagate (the partial copy removed too). Check first with :func:`ensure_free`."""
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise_if_full(exc, what, target.parent, source.stat().st_size)
        raise


__all__ = ["RESERVE_BYTES", "copy_file", "ensure_free", "free_bytes", "no_space", "raise_if_full"]
