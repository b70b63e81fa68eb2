"""Files in and out of a guest: tar on the HTTP side, the guest agent's
file trees on the vsock side (:mod:`fc_macos.guest.transfer`), converted as
they stream.

* :func:`tree_to_tar` turns a ``get`` (a :class:`GetStream`, which checks
  every file's size and checksum, CRC-32 unless the guest agent predates it,
  against the guest's before it yields the next item) into a tar stream (PAX
  format: long names, exact mtimes). A file's padding goes out only once its
  check passed, and the end-of-archive blocks only after END, so a tree that
  fails midway never reads as a whole tar.
* :func:`tar_to_tree` turns a tar stream (ustar, PAX or GNU long names) into
  a ``put`` (a :class:`PutSession`, which sends each file's checksum), adding
  the directories a tar of bare file paths leaves out (:class:`ParentDirs`); the
  guest agent writes each file under a temporary name and renames it into
  place only after the check, and builds a new top-level directory under a
  temporary name until END, so a stream cut off midway leaves nothing.

Neither holds more than one chunk (at most 1 MiB) of a file in memory.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from fc_macos.errors import ValidationError
from fc_macos.guest.errors import GuestNotADirectory, GuestNotFound
from fc_macos.guest.frames import MAX_FRAME
from fc_macos.guest.protocol import GuestConnection
from fc_macos.guest.transfer import GetStream, PutSession
from fc_macos.guest.tree import TransferResult, TreeEntry

log = logging.getLogger("fc_agent.files")

BLOCK = tarfile.BLOCKSIZE
CHUNK = MAX_FRAME
TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}


# -- guest -> tar ---------------------------------------------------------------------


def tar_header(entry: TreeEntry) -> bytes:
    """The tar header (PAX) of one entry of a guest's tree."""
    info = tarfile.TarInfo(entry.path)
    info.type = TAR_TYPES[entry.type]
    info.mode = entry.mode & 0o7777
    info.mtime = int(entry.mtime) if float(entry.mtime).is_integer() else entry.mtime  # type: ignore[assignment]
    info.size = entry.size if entry.type == "file" else 0
    info.linkname = entry.target or "" if entry.type == "symlink" else ""
    info.uname = info.gname = "root"
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


async def tree_to_tar(stream: GetStream, write: Callable[[bytes], Awaitable[None]]) -> TransferResult:
    """``write`` the tree of ``stream`` as a tar stream, ending with the two
    zero blocks; return the END totals. A size or checksum that does not match
    the guest's, or a tree that breaks off, raises (GuestAgentError) before
    the tar is complete: the caller must then abort its response, so that
    nobody takes it for whole."""
    due = 0  # the size of the file whose padding is written once it has passed its check
    async for item in stream:
        if isinstance(item, TreeEntry):
            if due % BLOCK:
                await write(b"\0" * (-due % BLOCK))
            await write(tar_header(item))
            due = item.size if item.type == "file" else 0
        else:
            await write(item)
    await write(b"\0" * (-due % BLOCK) + b"\0" * (2 * BLOCK))
    assert stream.result is not None, "a GetStream ends with its END totals"
    return stream.result


# -- tar -> guest ---------------------------------------------------------------------


class ByteStream(Protocol):
    """What :class:`TarReader` reads: aiohttp's request content has this shape."""

    async def readexactly(self, n: int) -> bytes: ...

    async def read(self, n: int = -1) -> bytes: ...


class TarFormatError(ValidationError):
    code = "bad_tar"


class TarReader:
    """Streaming tar parser: :meth:`next` gives each member's header (PAX and
    GNU long names applied), :meth:`chunks` its data. Memory: one block
    plus one chunk."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self._left = 0  # data bytes of the current member not read yet
        self._pad = 0

    async def _exactly(self, n: int, what: str) -> bytes:
        try:
            return await self.stream.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise TarFormatError(
                f"the tar stream ended inside {what} ({len(exc.partial)} of {n} bytes)",
                hint="send the whole tar (the transfer was cut off?); nothing was written in the guest",
            ) from None

    async def next(self) -> tarfile.TarInfo | None:
        """The next member's header, or None at the end of the archive (two
        zero blocks, or the end of the stream right after a member)."""
        await self._skip_rest()
        overrides: dict[str, str] = {}
        while True:
            try:
                block = await self.stream.readexactly(BLOCK)
            except asyncio.IncompleteReadError as exc:
                if not exc.partial and not overrides:
                    return None
                raise TarFormatError("the tar stream ended inside a header", hint="send the whole tar") from None
            if block.count(0) == BLOCK:
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise TarFormatError(f"not a tar stream: {exc}", hint="send a tar archive (application/x-tar)") from None
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                data = await self._exactly(info.size + (-info.size % BLOCK), "an extended header")
                data = data[: info.size]
                if info.type == tarfile.XHDTYPE:
                    overrides.update(_pax_records(data))
                elif info.type == tarfile.GNUTYPE_LONGNAME:
                    overrides["path"] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                elif info.type == tarfile.GNUTYPE_LONGLINK:
                    overrides["linkpath"] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                continue  # global PAX headers are ignored
            if "path" in overrides:
                info.name = overrides["path"].rstrip("/") if info.type == tarfile.DIRTYPE else overrides["path"]
            if "linkpath" in overrides:
                info.linkname = overrides["linkpath"]
            if "size" in overrides:
                info.size = int(overrides["size"])
            if "mtime" in overrides:
                info.mtime = float(overrides["mtime"])  # type: ignore[assignment]
            has_data = info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
            self._left = info.size if has_data else 0
            self._pad = -info.size % BLOCK if has_data else 0
            return info

    async def chunks(self, limit: int = CHUNK) -> AsyncIterator[bytes]:
        """The current member's data, in chunks of at most ``limit`` bytes."""
        while self._left:
            data = await self.stream.read(min(limit, self._left))
            if not data:
                raise TarFormatError(
                    f"the tar stream ended inside a file ({self._left} bytes missing)",
                    hint="send the whole tar (the transfer was cut off?); nothing was written in the guest",
                )
            self._left -= len(data)
            yield data

    async def _skip_rest(self) -> None:
        async for _ in self.chunks():
            pass
        if self._pad:
            await self._exactly(self._pad, "the padding of a file")
            self._pad = 0


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    at = 0
    while at < len(data):
        space = data.find(b" ", at)
        if space < 0:
            break
        try:
            length = int(data[at:space])
        except ValueError:
            raise TarFormatError("a malformed PAX header", hint="send a valid tar archive") from None
        record = data[space + 1 : at + length - 1]  # without the trailing newline
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        at += length
    return out


def _entry_path(name: str) -> str | None:
    """The relative guest path of tar member ``name`` (None for the archive's root '.')."""
    if name.startswith("/"):
        raise TarFormatError(f"the tar member {name!r} has an absolute path", hint="make the tar with relative paths (tar -C DIR -cf - NAME)")
    path = posixpath.normpath(name)
    if path in (".", ""):
        return None
    if path == ".." or path.startswith("../"):
        raise TarFormatError(f"the tar member {name!r} points outside the destination", hint="paths in the tar must not contain '..'")
    return path


#: The mode of a directory made for a tar member whose directory the tar does not list
#: (what GNU tar gives one under the usual umask 022).
MADE_DIR_MODE = 0o755

HasDir = Callable[[str], Awaitable[bool]]


def guest_has_dir(open_conn: Callable[[], Awaitable[GuestConnection]], dest: str) -> HasDir:
    """The ``has_dir`` of :func:`tar_to_tree` for a put into the guest directory ``dest``:
    whether ``dest/<rel>`` is a directory, or a symlink (which the put follows), in the
    guest now. Asks on a connection of its own (``open_conn()``): the put's is busy."""

    async def has_dir(rel: str) -> bool:
        async with await open_conn() as conn:
            try:
                found = await conn.stat(posixpath.join(dest, rel))
            except (GuestNotFound, GuestNotADirectory):
                return False
        return found.type in ("dir", "symlink")

    return has_dir


class ParentDirs:
    """The directory entries a tar leaves out, made up the way tar does when it extracts
    ``a/b/c.txt`` without ``a/`` and ``a/b/`` members: mode :data:`MADE_DIR_MODE` and the
    member's mtime, each before what it holds (a put needs an entry's directory to come
    first or to exist). A directory the guest already has (``has_dir``) is joined as it
    is, never sent, so its mode and mtime stay."""

    def __init__(self, has_dir: HasDir) -> None:
        self.has_dir = has_dir
        self._dirs: set[str] = set()  # sent as directories, or directories in the guest
        self._others: set[str] = set()  # sent as files or symlinks

    def sent(self, entry: TreeEntry) -> None:
        """Note an entry the tar itself had."""
        (self._dirs if entry.type == "dir" else self._others).add(entry.path)

    async def missing(self, path: str, mtime: float) -> list[TreeEntry]:
        """The entries to send before the member ``path``, outermost first."""
        out: list[TreeEntry] = []
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent in self._others:
                raise TarFormatError(
                    f"the tar member {path!r} is inside {parent!r}, which the tar has as a file or symlink",
                    hint="fix the tar: a path cannot be both a file and a directory",
                )
            if parent in self._dirs:
                continue
            if out or not await self.has_dir(parent):  # under a directory made here: nothing to ask
                out.append(TreeEntry(parent, "dir", MADE_DIR_MODE, mtime))
            self._dirs.add(parent)
        return out


async def tar_to_tree(reader: TarReader, session: PutSession, has_dir: HasDir) -> TransferResult:
    """Send the members of ``reader`` into ``session`` and finish it: the
    guest's totals (which count the directories made up here). Members go in
    the tar's order; a member whose directories the tar does not list first
    gets them from :class:`ParentDirs` (``has_dir`` says which the guest has
    already). Hard links, devices and FIFOs are refused (TarFormatError, 400).
    On any error the caller closes the connection without END, and the guest
    removes what it wrote, the made-up directories too."""
    parents = ParentDirs(has_dir)
    while (info := await reader.next()) is not None:
        path = _entry_path(info.name)
        if path is None:
            continue
        mode, mtime = info.mode & 0o7777, float(info.mtime)
        if info.isdir():
            entry = TreeEntry(path, "dir", mode, mtime)
        elif info.issym():
            entry = TreeEntry(path, "symlink", mode, mtime, target=info.linkname)
        elif info.isreg():
            entry = TreeEntry(path, "file", mode, mtime, size=info.size)
        else:
            kind = "a hard link" if info.islnk() else "a device or FIFO"
            raise TarFormatError(
                f"the tar member {info.name!r} is {kind}, which cannot be copied into a guest",
                hint="copy regular files, directories and symbolic links only (tar --hard-dereference for links)",
            )
        for made in await parents.missing(path, mtime):
            await session.entry(made)
        parents.sent(entry)
        await session.entry(entry)
        if entry.type == "file":
            async for chunk in reader.chunks():
                await session.data(chunk)
            await session.file_end()
    return await session.finish()


__all__ = ["ParentDirs", "TarFormatError", "TarReader", "guest_has_dir", "tar_header", "tar_to_tree", "tree_to_tar"]
