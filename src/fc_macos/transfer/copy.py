"""Copies between this machine and a microVM: ``docker cp`` for fc-macos.

:func:`copy_from_guest` and :func:`copy_to_guest` stat both sides, apply the
rules of :mod:`fc_macos.transfer.paths` and stream the tree as tar through the
agent (``AgentClient.get_files`` / ``put_files``). Nothing partial is left at
the destination: locally :func:`~fc_macos.transfer.unpack.unpack` writes into
a temporary directory and renames; in the guest the guest agent does the same.
``progress(done, total)`` reports bytes (``total`` None when unknown) on the
event loop.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fc_macos.errors import NotFoundError, UsageError
from fc_macos.transfer.pack import pack, tree_size
from fc_macos.transfer.paths import LOCAL, Side, Source, destination, local_kind
from fc_macos.transfer.unpack import unpack

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient

CopyProgress = Callable[[int, "int | None"], None]
#: The agent's error code for a path that does not exist in the guest.
GUEST_PATH_NOT_FOUND = "guest_path_not_found"


@dataclass(frozen=True)
class CopyResult:
    """What a copy did: where the tree landed, how many entries and file bytes."""

    destination: str
    entries: int
    bytes: int


def guest_side(name: str) -> Side:
    return Side(f"in microVM {name}", f"fc-macos exec --name {name} -- mkdir -p {{path}}")


def guest_path(path: str) -> str:
    """A guest path as the agent wants it: absolute (relative ones start at /)."""
    if not path:
        raise UsageError("an empty guest path", hint="write NAME:/path/in/the/guest")
    absolute = path if path.startswith("/") else "/" + path
    # keep a trailing '/' or '/.': they carry meaning (see fc_macos.transfer.paths)
    return absolute


def missing_in_guest(exc: NotFoundError) -> bool:
    """Whether the agent's 404 is about a path in the guest (not an unknown microVM)."""
    return exc.code == GUEST_PATH_NOT_FOUND


async def guest_kind(client: AgentClient, name: str, path: str) -> str | None:
    """The kind of a guest path (a symlink to a directory counts as one), or
    None when it does not exist; NotFoundError for an unknown microVM."""
    try:
        kind = (await client.stat(name, path)).type
        if kind == "symlink":
            try:
                if (await client.stat(name, path.rstrip("/") + "/.")).type == "dir":
                    return "dir"
            except NotFoundError as exc:
                if not missing_in_guest(exc):
                    raise
        return kind
    except NotFoundError as exc:
        if not missing_in_guest(exc):
            raise
        return None


def source_kind(path: str) -> str | None:
    """Like local_kind, but a symlink is a symlink (copied as a link, not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "symlink"
    return local_kind(path)


def _parent(path: str) -> str:
    return posixpath.dirname(posixpath.normpath(path)) or "."


async def copy_from_guest(client: AgentClient, name: str, remote: str, local: str, *,
                          progress: CopyProgress | None = None) -> CopyResult:
    """Copy ``remote`` (a file, a tree, ``DIR/.`` for its contents) out of
    microVM ``name`` to ``local``. NotFoundError when either side's directory
    is missing; ConflictError for a directory onto a file."""
    source = Source.parse(guest_path(remote))
    try:
        found = await client.stat(name, source.path)
    except NotFoundError as exc:
        if not missing_in_guest(exc):
            raise
        raise NotFoundError(f"{source.path} does not exist in microVM {name}",
                            hint=f"look with: fc-macos exec --name {name} -- ls -la {_parent(source.path)}") from exc
    kind: str | None = found.type
    if source.contents_only and kind == "symlink":
        kind = await guest_kind(client, name, source.path)
    placement = destination(kind or "other", source, local, local_kind(local), local_kind(_parent(local)), LOCAL)
    total = found.size if kind == "file" else None

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total)

    result = await unpack(client.get_files(name, source.path), Path(placement.path), progress=report)
    return CopyResult(placement.path, result.entries, result.bytes)


async def copy_to_guest(client: AgentClient, name: str, local: str, remote: str, *,
                        progress: CopyProgress | None = None) -> CopyResult:
    """Copy ``local`` (a file, a tree, ``DIR/.``) into microVM ``name`` at ``remote``."""
    source = Source.parse(local)
    kind = source_kind(source.path)
    if kind is None:
        raise NotFoundError(f"{source.path} does not exist on this machine", hint="check the local path")
    remote = guest_path(remote)
    parent = _parent(remote)
    placement = destination(kind, source, remote, await guest_kind(client, name, remote),
                            await guest_kind(client, name, parent), guest_side(name))
    total = tree_size(Path(source.path))

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total)

    answer = await client.put_files(name, placement.parent, pack(Path(source.path), placement.name), progress=report)
    return CopyResult(placement.path, int(answer.get("entries") or 0), int(answer.get("bytes") or 0))


async def tar_to_guest(client: AgentClient, name: str, tar: AsyncIterable[bytes], remote_dir: str, *,
                       progress: CopyProgress | None = None) -> CopyResult:
    """Unpack a tar stream into the existing directory ``remote_dir`` of microVM ``name``."""
    remote_dir = guest_path(remote_dir)
    if await guest_kind(client, name, remote_dir) != "dir":
        raise NotFoundError(f"the destination directory {remote_dir} does not exist in microVM {name}",
                            hint=f"a tar stream is unpacked into a directory; create it first: "
                            f"fc-macos exec --name {name} -- mkdir -p {remote_dir}")
    answer = await client.put_files(name, remote_dir, tar,
                                    progress=None if progress is None else (lambda done: progress(done, None)))
    return CopyResult(remote_dir, int(answer.get("entries") or 0), int(answer.get("bytes") or 0))


async def tar_from_guest(client: AgentClient, name: str, remote: str) -> AsyncIterator[bytes]:
    """``remote`` of microVM ``name`` as a tar stream (its basename as the top entry)."""
    path = Source.parse(guest_path(remote)).path
    if await guest_kind(client, name, path) is None:
        raise NotFoundError(f"{path} does not exist in microVM {name}",
                            hint=f"look with: fc-macos exec --name {name} -- ls -la {_parent(path)}")
    async for chunk in client.get_files(name, path):
        yield chunk
