"""File helpers shared by the host side and the agent (standard library only)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fc_macos.progress import Progress

COPY_CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write ``data`` as JSON to ``path`` atomically, with permission ``mode``:
    a temporary file is written and fsynced, renamed over ``path``, and the
    directory is fsynced so that the rename itself survives a crash. A reader
    sees the old file or the new one, never a torn one; a failed write leaves
    no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (never readable
    by others, not even briefly), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_reporting(src: Readable, dst: Writable, *, name: str, total: int | None, progress: Progress,
                   chunk: int = COPY_CHUNK) -> int:
    """Copy ``src`` to ``dst`` (files or sockets) in ``chunk``-sized pieces, telling
    ``progress.transfer(name, done, total)`` after each; the last call has
    ``done == total`` (a final one with the bytes copied as the total when ``total``
    was unknown or wrong). Returns the bytes copied."""
    done = 0
    while piece := src.read(chunk):
        dst.write(piece)
        done += len(piece)
        progress.transfer(name, done, total)
    if done != total or done == 0:
        progress.transfer(name, done, done)
    return done
