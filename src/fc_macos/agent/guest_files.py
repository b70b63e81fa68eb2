"""Files in and out of a guest: tar on the HTTP side, the guest agent's
file-tree frames on the vsock side, converted as they stream.

* :func:`tree_to_tar` turns a ``get``'s ENTRY / DATA / FILE_END / END frames
  into a tar stream (PAX format: long names, exact mtimes), checking every
  file's size and sha256 against the guest's FILE_END as it goes.
* :func:`tar_to_tree` turns a tar stream (ustar, PAX or GNU long names) into
  a ``put``'s entries, with the sha256 of every file in its FILE_END; the
  guest agent writes each file under a temporary name and renames it into
  place only after the check, and builds a new top-level directory under a
  temporary name until END, so a stream cut off midway leaves nothing.

Neither holds more than one chunk (at most 1 MiB) of a file in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import tarfile
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fc_macos.agent.guest_errors import GuestChannelError
from fc_macos.errors import ValidationError
from fc_macos.guest.errors import GuestAgentError, GuestProtocolError, error_from_response
from fc_macos.guest.frames import MAX_FRAME, FrameType
from fc_macos.guest.protocol import GuestConnection

ENTRY, DATA, FILE_END, END, RESULT = FrameType.ENTRY, FrameType.DATA, FrameType.FILE_END, FrameType.END, FrameType.RESULT

log = logging.getLogger("fc_agent.files")

BLOCK = tarfile.BLOCKSIZE
CHUNK = MAX_FRAME
ENTRY_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}


# -- guest -> tar ---------------------------------------------------------------------


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_header(entry: dict[str, Any]) -> bytes:
    """The tar header (PAX) of one ENTRY."""
    kind = entry.get("type")
    if kind not in ENTRY_TYPES:
        raise GuestProtocolError(f"the guest agent sent an entry of unknown type {kind!r}")
    info = tarfile.TarInfo(_safe_path(entry.get("path"), GuestProtocolError))
    info.type = ENTRY_TYPES[kind]
    info.mode = int(entry.get("mode") or 0) & 0o7777
    mtime = entry.get("mtime") or 0
    info.mtime = int(mtime) if float(mtime).is_integer() else float(mtime)  # type: ignore[assignment]
    info.size = int(entry.get("size") or 0) if kind == "file" else 0
    info.linkname = str(entry.get("target") or "") if kind == "symlink" else ""
    info.uname = info.gname = "root"
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _safe_path(path: Any, error: type[Exception]) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise error(f"unsafe path {path!r} in a file tree (paths are relative, without '..')")
    return path


async def tree_to_tar(conn: GuestConnection, write: Callable[[bytes], Awaitable[None]]) -> dict[str, int]:
    """Read a ``get``'s tree from ``conn`` (after its RES) and ``write`` it as a
    tar stream, ending with the two zero blocks. Returns ``{"entries",
    "bytes"}``. A size or sha256 that does not match the guest's
    (GuestChannelError), or a tree that breaks off (GuestAgentError), raises
    before the tar is complete: the caller must then abort its response, so
    that nobody takes it for whole."""
    entries = total = 0
    current: dict[str, Any] | None = None
    hasher = hashlib.sha256()
    seen = 0
    while True:
        frame = await conn.receive()
        kind, payload = frame.type, frame.payload
        if kind == ENTRY:
            if current is not None:
                raise GuestProtocolError(f"a new entry before the FILE_END of {current.get('path')!r}")
            entry = frame.json()
            await write(tar_header(entry))
            entries += 1
            if entry.get("type") == "file":
                current, hasher, seen = entry, hashlib.sha256(), 0
        elif kind == DATA:
            if current is None:
                raise GuestProtocolError("file data outside a file entry")
            seen += len(payload)
            if seen > int(current.get("size") or 0):
                raise _mismatch(current, f"more than its {current.get('size')} bytes")
            hasher.update(payload)
            await write(payload)
        elif kind == FILE_END:
            if current is None:
                raise GuestProtocolError("FILE_END outside a file entry")
            if seen != int(current.get("size") or 0):
                raise _mismatch(current, f"{seen} bytes instead of {current.get('size')}")
            if frame.json().get("sha256") != hasher.hexdigest():
                raise _mismatch(current, "a sha256 that differs from the guest's")
            await write(_padding(seen))
            total += seen
            current = None
        elif kind == END:
            if current is not None:
                raise GuestProtocolError(f"END inside the file {current.get('path')!r}")
            await write(b"\0" * (2 * BLOCK))
            return {"entries": entries, "bytes": total}
        elif kind == RESULT and frame.json().get("ok") is False:
            raise error_from_response(frame.json())  # the guest gave up midway (e.g. unreadable file)
        else:
            raise GuestProtocolError(f"frame type {kind} inside a file tree")


def _mismatch(entry: dict[str, Any], what: str) -> GuestChannelError:
    return GuestChannelError(
        f"{entry.get('path')!r} arrived from the guest with {what}",
        code="guest_checksum_mismatch", hint="the file may have changed while it was copied: try again",
    )  # fmt: skip


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
        overrides: dict[str, Any] = {}
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

    async def chunks(self, limit: int = CHUNK) -> Any:
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


async def tar_to_tree(reader: TarReader, conn: GuestConnection) -> dict[str, Any]:
    """Send the members of ``reader`` as a ``put``'s entries over ``conn``
    (after its RES), then END, and return the guest's RESULT
    (``{"entries", "bytes"}``). Members come in the tar's order (a directory
    before what it holds, as tar writes them). Hard links, devices and FIFOs
    are refused (TarFormatError, 400). On any error the caller closes the
    connection without END, and the guest removes what it wrote."""
    entries = total = 0
    try:
        while (info := await reader.next()) is not None:
            path = _entry_path(info.name)
            if path is None:
                continue
            header: dict[str, Any] = {"path": path, "mode": info.mode & 0o7777, "mtime": info.mtime}
            if info.isdir():
                await conn.send_json(ENTRY, header | {"type": "dir"})
            elif info.issym():
                await conn.send_json(ENTRY, header | {"type": "symlink", "target": info.linkname})
            elif info.isreg():
                await conn.send_json(ENTRY, header | {"type": "file", "size": info.size})
                hasher = hashlib.sha256()
                async for chunk in reader.chunks():
                    hasher.update(chunk)
                    await conn.send(DATA, chunk)
                await conn.send_json(FILE_END, {"sha256": hasher.hexdigest()})
                total += info.size
            else:
                kind = "a hard link" if info.islnk() else "a device or FIFO"
                raise TarFormatError(
                    f"the tar member {info.name!r} is {kind}, which cannot be copied into a guest",
                    hint="copy regular files, directories and symbolic links only (tar --hard-dereference for links)",
                )
            entries += 1
        await conn.send_json(END, {"entries": entries, "bytes": total})
    except GuestAgentError as exc:  # the guest closed the connection: its RESULT says why
        raise await _early_result(conn) or exc from None
    return await _result(conn)


async def _result(conn: GuestConnection) -> dict[str, Any]:
    frame = await conn.receive()
    if frame.type != RESULT:
        raise GuestProtocolError(f"frame type {frame.type} instead of the put's RESULT")
    answer = frame.json()
    if answer.get("ok") is not True:
        raise error_from_response(answer)
    return answer


async def _early_result(conn: GuestConnection) -> GuestAgentError | None:
    """The guest's refusal that ended a put midway (its RESULT), if it sent one."""
    try:
        await asyncio.wait_for(_result(conn), 2.0)
    except GuestAgentError as refusal:
        return None if isinstance(refusal, GuestProtocolError) else refusal
    except asyncio.TimeoutError:
        return None
    return None


__all__ = ["TarFormatError", "TarReader", "tar_header", "tar_to_tree", "tree_to_tar"]
