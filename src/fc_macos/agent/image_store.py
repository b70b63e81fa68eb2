"""The agent's own image directory (``<state-dir>/images``) as a store of
uploaded files: list, receive (streamed, size- and sha256-checked, atomic,
deduplicated by content) and delete.

Names are plain file names (no ``/``, no ``..``, not hidden): the store never
touches anything outside its directory. An upload is written to a hidden
temporary file in the same directory and renamed over its name only once its
size and sha256 match what the client declared; any failure removes the
temporary file, so nothing half-written is ever visible. Content already in
the store under another name is hard-linked instead of written again: every
writer of this directory must rename over a file, never write into it (the
agent copies a rootfs or a writable drive before a microVM boots it;
``fc-macos setup`` installs through a temporary file and a rename).

The sha256 of each file is remembered in ``.sha256.json`` (keyed by size,
mtime and inode, so a file changed behind the store's back is hashed again);
files put there by other means (``fc-macos setup``) are hashed when a lookup
needs them (only those of the same size as the content looked for).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fc_macos.agent.disk_space import GROW_HINT, free_bytes
from fc_macos.image_names import MAX_NAME, NAME_RE, safe_name
from fc_macos.errors import ConflictError, FcMacosError, NoSpaceError, NotFoundError, ValidationError
from fc_macos.fsutil import write_json_atomic

INDEX_NAME = ".sha256.json"
UPLOAD_PREFIX = ".upload-"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

HASH_CHUNK = 1024 * 1024

FreeBytes = Callable[[Path], int]


class InsufficientStorage(NoSpaceError):
    """An upload does not fit on the agent's disk: ``no_space``, with
    ``needed`` and ``free`` in bytes; HTTP 413 (the request is too large for
    this disk: the client's to change), unlike a create's 507."""

    http_status = 413

    def __init__(self, name: str, needed: int, free: int, directory: Path) -> None:
        super().__init__(
            f"{name!r} needs {needed} bytes but the agent's image directory has only {free} bytes free",
            hint="'fc-macos images rm NAME' removes images you no longer need; or " + GROW_HINT.format(where=directory),
        )
        self.needed = needed
        self.free = free

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "needed": self.needed, "free": self.free}


@dataclass(frozen=True)
class ImageFile:
    """One file of an image directory; ``sha256`` is None while unknown."""

    name: str
    path: Path
    size: int
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Stored:
    """What an upload did: ``outcome`` is ``uploaded`` (written), ``present``
    (the name already held that content: nothing sent was needed) or
    ``linked`` (the content was there as ``linked_from``: hard-linked)."""

    image: ImageFile
    outcome: str
    linked_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.image.to_dict(), "outcome": self.outcome, "linked_from": self.linked_from}


def check_name(name: str) -> str:
    """``name`` if it is a plain file name for the store (:data:`NAME_RE`);
    ValidationError otherwise."""
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise ValidationError(
            f"image name {name!r} is not a plain file name in the agent's image directory",
            hint="use letters, digits, '.', '_', '+' and '-', not starting with '.' or '-', "
            "such as 'rootfs-web.ext4'",
            code="invalid_image_name",
        )
    return name


def check_sha256(value: str) -> str:
    if not SHA256_RE.match(value):
        raise ValidationError(
            f"sha256 must be 64 lowercase hex digits, got {value[:80]!r}",
            hint="send the file's sha256 (e.g. from 'sha256sum FILE')",
            code="invalid_sha256",
        )
    return value


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ImageStore:
    """The files of ``directory`` (created on first use). ``free_bytes`` says
    how much space an upload may take (default: the filesystem's free space).
    One store per agent: it serializes its own index updates."""

    def __init__(self, directory: Path, *, free_bytes: FreeBytes = free_bytes) -> None:
        self.directory = directory
        self.free_bytes = free_bytes
        self._lock = asyncio.Lock()

    # -- reading ----------------------------------------------------------------------

    def _index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.directory / INDEX_NAME).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_index(self, index: dict[str, Any]) -> None:
        write_json_atomic(self.directory / INDEX_NAME, index)

    def _entries(self) -> list[tuple[str, Path, os.stat_result]]:
        out = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("."):
                continue
            path = self.directory / name
            try:
                st = path.stat()
            except OSError:
                continue
            if path.is_file():
                out.append((name, path, st))
        return out

    def files(self) -> list[ImageFile]:
        """Every (visible, regular) file, by name, with its sha256 if known."""
        index = self._index()
        files = []
        for name, path, st in self._entries():
            known = index.get(name)
            sha = known.get("sha256") if isinstance(known, dict) and known.get("key") == _key(st) else None
            files.append(ImageFile(name, path, st.st_size, sha))
        return files

    def get(self, name: str) -> ImageFile:
        check_name(name)
        for image in self.files():
            if image.name == name:
                return image
        raise NotFoundError(
            f"no image named {name!r} in the agent's image directory {self.directory}",
            hint="list them with 'fc-macos images list' (GET /v1/images)",
            code="image_not_found",
        )

    async def _hashed(self, image: ImageFile) -> ImageFile:
        if image.sha256 is not None:
            return image
        sha = await asyncio.to_thread(sha256_file, image.path)
        st = image.path.stat()
        async with self._lock:
            index = self._index()
            index[image.name] = {"key": _key(st), "sha256": sha}
            await asyncio.to_thread(self._save_index, index)
        return ImageFile(image.name, image.path, image.size, sha)

    async def find(self, sha256: str | None, size: int | None) -> list[ImageFile]:
        """The files of that size and/or holding that sha256 (hashing, once,
        the candidates whose sha256 is not known yet)."""
        if sha256 is not None:
            check_sha256(sha256)
        found = []
        for image in self.files():
            if size is not None and image.size != size:
                continue
            if sha256 is not None:
                image = await self._hashed(image)
                if image.sha256 != sha256:
                    continue
            found.append(image)
        return found

    # -- writing ----------------------------------------------------------------------

    async def prepare(self, name: str, size: int, sha256: str, *, replace: bool = False,
                      in_use: Callable[[Path], list[str]] = lambda _p: []) -> Stored | None:
        """Everything an upload of ``name`` can decide before its body: the
        answer when no byte is needed (the name or another one holds the
        content: ``present`` / ``linked``), else None once it is sure the body
        may come (the name is free or ``replace`` is set and no microVM uses
        it; ``size`` fits in the free space)."""
        check_name(name)
        check_sha256(sha256)
        if size < 0:
            raise ValidationError(f"size must be a number of bytes >= 0, got {size}", code="invalid_size")
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / name
        if target.exists() or target.is_symlink():
            if not target.is_file():
                raise ConflictError(f"{name!r} in the agent's image directory is not a regular file",
                                    hint="pick another name (--name)", code="image_exists")
            current = await self._hashed(next(i for i in self.files() if i.name == name))
            if current.sha256 == sha256:
                return Stored(current, "present")
            if not replace:
                raise ConflictError(
                    f"an image named {name!r} with other content already exists ({current.size} bytes, sha256 "
                    f"{current.sha256})",
                    hint="upload it under another name (--name NAME), or replace it (--replace)",
                    code="image_exists",
                )
            users = in_use(target)
            if users:
                raise ConflictError(f"cannot replace {name!r}: it is used by microVM(s) {', '.join(users)}",
                                    hint="upload it under another name (--name NAME)", code="image_in_use")
        same = await self.find(sha256, size)
        if same:
            return await self._link(same[0], name, sha256)
        free = self.free_bytes(self.directory)
        if size > free:
            raise InsufficientStorage(name, size, free, self.directory)
        return None

    async def _link(self, source: ImageFile, name: str, sha256: str) -> Stored:
        tmp = self.directory / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        try:
            os.link(source.path, tmp)
            os.replace(tmp, self.directory / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise FcMacosError(f"cannot link {source.name!r} as {name!r}: {exc.strerror}",
                               hint="see fc-agent's log") from exc
        image = await self._record(name, sha256)
        return Stored(image, "linked", linked_from=source.name)

    async def _record(self, name: str, sha256: str) -> ImageFile:
        path = self.directory / name
        st = path.stat()
        async with self._lock:
            index = self._index()
            index[name] = {"key": _key(st), "sha256": sha256}
            await asyncio.to_thread(self._save_index, index)
        return ImageFile(name, path, st.st_size, sha256)

    async def receive(self, name: str, size: int, sha256: str, body: AsyncIterable[bytes]) -> Stored:
        """Write ``body`` as ``name`` once it is exactly ``size`` bytes with
        this ``sha256`` (call :meth:`prepare` first). ValidationError
        ``body_incomplete`` / ``body_too_long`` / ``checksum_mismatch``,
        InsufficientStorage when the disk fills: nothing is left behind."""
        tmp = self.directory / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        done = 0
        try:
            with tmp.open("xb") as fh:
                try:
                    async for chunk in body:
                        done += len(chunk)
                        if done > size:
                            raise ValidationError(f"the body of {name!r} is longer than the declared {size} bytes",
                                                  hint="declare the file's real size", code="body_too_long")
                        digest.update(chunk)
                        await asyncio.to_thread(fh.write, chunk)
                    await asyncio.to_thread(_flush, fh)
                except OSError as exc:
                    if exc.errno == 28:  # ENOSPC
                        raise InsufficientStorage(name, size, self.free_bytes(self.directory), self.directory) from exc
                    raise
            if done < size:
                raise ValidationError(
                    f"the upload of {name!r} ended after {done} of {size} bytes; nothing was kept",
                    hint="send the whole file again", code="body_incomplete",
                )
            if digest.hexdigest() != sha256:
                raise ValidationError(
                    f"the {size} bytes received for {name!r} have sha256 {digest.hexdigest()}, not the declared "
                    f"{sha256}; nothing was kept",
                    hint="the file changed while it was sent, or the transfer was corrupted: send it again",
                    code="checksum_mismatch",
                )
            os.replace(tmp, self.directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Stored(await self._record(name, sha256), "uploaded")

    async def delete(self, name: str, *, in_use: Callable[[Path], list[str]] = lambda _p: []) -> None:
        """Remove ``name``; ConflictError ``image_in_use`` while a microVM names it."""
        image = self.get(name)
        users = in_use(image.path)
        if users:
            raise ConflictError(
                f"image {name!r} is used by microVM(s) {', '.join(users)}",
                hint="remove those microVMs first ('fc-macos microvm rm --name NAME')", code="image_in_use",
            )
        image.path.unlink()
        async with self._lock:
            index = self._index()
            if index.pop(name, None) is not None:
                await asyncio.to_thread(self._save_index, index)

    def remove_leftovers(self) -> None:
        """Delete temporary files of uploads an agent crash interrupted."""
        for tmp in self.directory.glob(UPLOAD_PREFIX + "*"):
            tmp.unlink(missing_ok=True)


def _flush(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


__all__ = ["ImageFile", "ImageStore", "InsufficientStorage", "Stored", "check_name"]
