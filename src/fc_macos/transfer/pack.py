"""Pack a local file or directory tree into a tar stream, on the fly.

``pack(path, arcname)`` yields the tar archive in chunks while a worker thread
writes it, so a 1 GiB file never sits in memory. Entries keep their permission
bits (setuid, sticky included), mtimes and symlinks (not followed); a file with
several hard links is stored as a plain file each time. Sockets, FIFOs and
devices are left out (the guest agent takes files, directories and symlinks).
"""

from __future__ import annotations

import asyncio
import os
import stat
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fc_macos.errors import FcMacosError, NotFoundError
from fc_macos.transfer.bridge import CHUNK, ThreadToLoop

BLOCK = 512


def tree_size(path: Path) -> int:
    """Approximate size of ``pack(path)``'s archive (headers and padding
    included), for progress bars; never raises for unreadable parts."""
    total = 2 * BLOCK
    for entry in _walk(path):
        total += BLOCK
        try:
            info = entry.lstat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            total += -(-info.st_size // BLOCK) * BLOCK
    return total


def _walk(path: Path) -> list[Path]:
    found = [path]
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            found += [Path(root, name) for name in dirs + files]
    return found


def _keep_supported(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if info.islnk():  # a second hard link to a file already stored: store the bytes again
        info.type = tarfile.REGTYPE
        info.linkname = ""
    if not (info.isreg() or info.isdir() or info.issym()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _write_tar(sink: ThreadToLoop, path: Path, arcname: str | None) -> None:
    """Write the archive of ``path`` (top entry named ``arcname``; ``None``:
    the directory's children as top entries) into ``sink``."""
    error: BaseException | None = None
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:  # type: ignore[call-overload]
            if arcname is None:
                for child in sorted(path.iterdir()):
                    tar.add(str(child), arcname=child.name, filter=_keep_supported)
            else:
                tar.add(str(path), arcname=arcname, filter=_keep_supported)
    except BaseException as exc:  # noqa: BLE001 - handed to the loop's side
        error = exc
    finally:
        sink.finish(error)


async def pack(path: Path, arcname: str | None, *, progress: Callable[[int], None] | None = None) -> AsyncIterator[bytes]:
    """Yield the tar archive of ``path``, whose top entry is named ``arcname``
    (``None``: the children of directory ``path`` are the top entries).
    ``progress(done_bytes)`` is called on the loop after every chunk.
    NotFoundError if ``path`` does not exist; OSError reading it becomes FcMacosError."""
    if not os.path.lexists(path):
        raise NotFoundError(f"{path} does not exist", hint="check the local path")
    if arcname is None and not path.is_dir():
        raise FcMacosError(f"{path} is not a directory", hint="'PATH/.' copies the contents of a directory")
    loop = asyncio.get_running_loop()
    sink = ThreadToLoop(loop)
    worker = loop.run_in_executor(None, _write_tar, sink, path, arcname)
    done = 0
    try:
        async for chunk in sink:
            done += len(chunk)
            if progress is not None:
                progress(done)
            yield chunk
    except OSError as exc:
        raise FcMacosError(f"cannot read {exc.filename or path}: {exc.strerror or exc}",
                           hint="check the local files' permissions") from exc
    finally:
        sink.abort()
        await asyncio.shield(worker)
