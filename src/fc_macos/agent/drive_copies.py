"""The private copies of a microVM's writable drives (in its work directory),
made at boot so that the user's image is never written; see
:mod:`fc_macos.agent.drive_files` for getting them back."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from fc_macos.agent import disk_space
from fc_macos.agent.wire import DriveSpec


def copy_path(workdir: Path, drive_id: str) -> Path:
    """Where the microVM's private copy of writable drive ``drive_id`` lives."""
    return workdir / f"drive-{drive_id}.img"


async def copy_writable(drives: tuple[DriveSpec, ...], workdir: Path) -> tuple[DriveSpec, ...]:
    """Copy each writable drive's file into ``workdir``; the drives as attached
    (writable ones now naming their copy, read-only ones unchanged). A copy
    that does not fit is NoSpaceError, with no partial file left."""
    out = []
    for drive in drives:
        if drive.read_only:
            out.append(drive)
            continue
        target = copy_path(workdir, drive.id)
        if drive.path != str(target):  # a spec recorded after boot names the copy already
            source = Path(drive.path)
            what = f"the copy of drive {drive.id!r}"
            disk_space.ensure_free(what, workdir, source.stat().st_size)
            await asyncio.to_thread(disk_space.copy_file, source, target, what)
        out.append(replace(drive, path=str(target)))
    return tuple(out)


__all__ = ["copy_path", "copy_writable"]
