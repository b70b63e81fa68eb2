"""Unpack a tar stream into a local destination, all or nothing.

``unpack(chunks, target)`` puts the archive's top entry at ``target`` (a file,
a directory tree or a symlink) keeping modes, mtimes and symlinks. Everything
is first written into a temporary directory beside ``target``
(``.fc-macos-cp-XXXX``); only when the archive is complete is it moved into
place (a rename; a directory onto an existing directory is merged, entry by
entry). Any failure or interruption (KeyboardInterrupt, cancellation, a broken
stream) removes the temporary directory, so nothing partial is left behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fc_macos.errors import ConflictError, FcMacosError
from fc_macos.transfer.bridge import CHUNK, LoopToThread, TransferAborted

TEMP_PREFIX = ".fc-macos-cp-"


@dataclass
class UnpackResult:
    entries: int = 0
    bytes: int = 0
    top: str = ""
    _dirs: list[tuple[Path, int, float]] = field(default_factory=list, repr=False)


def _inside(root: Path, name: str, top: str) -> Path:
    """Where member ``name`` goes under ``root`` (``top`` -> ``root/top``)."""
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts or parts[0] != top:
        raise FcMacosError(f"the archive holds an unexpected path {name!r}",
                           hint="the agent sends one tree under the source's name; is fc-agent up to date?")
    path = root.joinpath(*parts)
    parent = os.path.realpath(path.parent)
    if parent != str(root) and not parent.startswith(str(root) + os.sep):  # through a symlink of the archive
        raise FcMacosError(f"the archive's path {name!r} leads outside the destination", hint="check the source tree")
    return path


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, result: UnpackResult,
                    progress: Callable[[int], None]) -> None:
    if member.isdir():
        path.mkdir(mode=0o700)
        result._dirs.append((path, member.mode, member.mtime))  # applied after the children
    elif member.issym():
        os.symlink(member.linkname, path)
        try:
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        except (NotImplementedError, OSError):
            pass
    elif member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        with open(path, "wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
                result.bytes += len(chunk)
                progress(result.bytes)
        os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime))
    else:
        return  # devices, FIFOs: not ours to make
    result.entries += 1


def _extract(reader: LoopToThread, root: Path, progress: Callable[[int], None]) -> UnpackResult:
    """Extract the whole archive under ``root`` (the worker thread's part)."""
    result = UnpackResult()
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
            for member in tar:
                if not result.top:
                    result.top = PurePosixPath(member.name).parts[0] if member.name else ""
                _extract_member(tar, member, _inside(root, member.name, result.top), result, progress)
    except tarfile.TarError as exc:
        raise FcMacosError(f"the file stream broke off: {exc}",
                           hint="nothing was written; try again (see 'fc-macos microvm status')") from exc
    finally:
        reader.stop()
    for path, mode, mtime in reversed(result._dirs):
        os.chmod(path, mode & 0o7777)
        os.utime(path, (mtime, mtime))
    if not result.top:
        raise FcMacosError("the file stream was empty", hint="check the source path")
    return result


def _conflicts(src: Path, dest: Path) -> str | None:
    """Why ``src`` cannot be moved onto ``dest`` (None: it can)."""
    src_dir = src.is_dir() and not src.is_symlink()
    dest_dir = dest.is_dir() and not dest.is_symlink()
    if src_dir and dest_dir:
        for child in src.iterdir():
            if reason := _conflicts(child, dest / child.name):
                return reason
        return None
    if src_dir and os.path.lexists(dest):
        return f"cannot overwrite the non-directory {dest} with a directory"
    if dest_dir:
        return f"cannot overwrite the directory {dest} with a non-directory"
    return None


def _place(src: Path, dest: Path) -> None:
    """Move ``src`` onto ``dest``: a rename, or for two directories a merge."""
    if src.is_dir() and not src.is_symlink() and dest.is_dir() and not dest.is_symlink():
        for child in src.iterdir():
            _place(child, dest / child.name)
        info = src.stat()
        os.chmod(dest, stat.S_IMODE(info.st_mode))
        os.utime(dest, (info.st_mtime, info.st_mtime))
        return
    os.replace(src, dest)


async def unpack(chunks: AsyncIterable[bytes], target: Path, *,
                 progress: Callable[[int], None] | None = None) -> UnpackResult:
    """Unpack the tar stream ``chunks`` so that its top entry becomes
    ``target`` (whose parent directory must exist). ``progress(file_bytes)``
    is called on the loop as file contents are written. ConflictError when a
    directory would replace a file or the other way round; nothing is changed
    then, nor on any other failure."""
    loop = asyncio.get_running_loop()
    target = Path(os.path.abspath(target))
    try:
        root = Path(os.path.realpath(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=target.parent)))
    except OSError as exc:
        raise FcMacosError(f"cannot write in {target.parent}: {exc.strerror or exc}",
                           hint="check that the local directory exists and is writable") from exc

    def report(done: int) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, done)

    reader = LoopToThread()
    worker = loop.run_in_executor(None, _extract, reader, root, report)
    try:
        try:
            async for chunk in chunks:
                await reader.feed(chunk)
        except TransferAborted:
            pass  # the worker stopped early: its own error says why
        await reader.end()
        try:
            result = await asyncio.shield(worker)
        except OSError as exc:
            raise FcMacosError(f"cannot write into {target.parent}: {exc.strerror or exc}",
                               hint="check the local directory's permissions and free space") from exc
        staged = root / result.top
        if reason := _conflicts(staged, target):
            raise ConflictError(reason, hint="remove it first, or copy to another name")
        _place(staged, target)
        return result
    finally:
        if not worker.done():
            reader.cancel()
            await asyncio.wait({worker})  # the thread must stop writing before its files are removed
            if not worker.cancelled():
                worker.exception()  # retrieved: the error that interrupted it is the one raised
        shutil.rmtree(root, ignore_errors=True)
