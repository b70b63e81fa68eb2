"""File trees on the local side: entries, walking a local path, writing a received tree.

A tree travels as entries (:class:`TreeEntry`), depth-first, a directory before its
children, the first entry named after the top path's last component. Entry paths are
relative, ``/``-separated and never contain ``.``, ``..`` or empty parts; names that are
not UTF-8 travel as lone surrogates (``os.fsdecode``), which JSON carries as ``\\udcXX``.

:class:`LocalTreeWriter` applies the same all-or-nothing staging as the guest agent's
``put``: a new top-level directory is built under a temporary name, files are written to
temporary names and renamed once complete, and :meth:`LocalTreeWriter.abort` removes
everything new. It also refuses entries that would write through a symlink or outside the
tree, so a misbehaving guest cannot make it write elsewhere on this machine.
"""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal, Mapping

from ..errors import ConflictError, NotFoundError
from .errors import GuestProtocolError

EntryType = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class TreeEntry:
    """The ENTRY header of one file, directory or symlink (``size`` for files only)."""

    path: str
    type: EntryType
    mode: int
    mtime: float
    size: int = 0
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"path": self.path, "type": self.type, "mode": self.mode, "mtime": self.mtime}
        if self.type == "file":
            body["size"] = self.size
        if self.type == "symlink":
            body["target"] = self.target
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TreeEntry:
        """Parses and validates an ENTRY; raises GuestProtocolError for a malformed one."""
        try:
            entry = cls(str(body["path"]), body["type"], int(body["mode"]), float(body["mtime"]),
                        int(body.get("size") or 0), body.get("target"))
        except (KeyError, TypeError, ValueError) as exc:
            raise GuestProtocolError(f"malformed ENTRY {dict(body)!r}: {exc}") from exc
        if entry.type not in ("file", "dir", "symlink"):
            raise GuestProtocolError(f"ENTRY of unknown type {entry.type!r}")
        if entry.type == "symlink" and not isinstance(entry.target, str):
            raise GuestProtocolError(f"symlink ENTRY {entry.path!r} without a target")
        if not valid_entry_path(entry.path):
            raise GuestProtocolError(f"ENTRY path {entry.path!r} is not a clean relative path")
        return entry


@dataclass(frozen=True)
class TransferResult:
    """What a whole tree transfer moved: entries (files, directories, symlinks) and file bytes."""

    entries: int
    bytes: int


@dataclass(frozen=True)
class GuestStat:
    """``lstat`` of a path in the guest."""

    type: Literal["file", "dir", "symlink", "other"]
    mode: int
    size: int
    mtime: float
    target: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> GuestStat:
        return cls(body["type"], int(body["mode"]), int(body["size"]), float(body["mtime"]), body.get("target"))


def valid_entry_path(path: str) -> bool:
    """Relative, ``/``-separated, no empty, ``.`` or ``..`` components (the wire rule)."""
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in path.split("/"))


def _entry_for(path: Path, rel: str, st: os.stat_result) -> TreeEntry | None:
    mode = stat_mod.S_IMODE(st.st_mode)
    mtime = st.st_mtime_ns / 1e9
    if stat_mod.S_ISREG(st.st_mode):
        return TreeEntry(rel, "file", mode, mtime, size=st.st_size)
    if stat_mod.S_ISDIR(st.st_mode):
        return TreeEntry(rel, "dir", mode, mtime)
    if stat_mod.S_ISLNK(st.st_mode):
        return TreeEntry(rel, "symlink", mode, mtime, target=os.readlink(path))
    return None  # devices, fifos, sockets: nothing to copy


def iter_local_tree(path: Path) -> Iterator[tuple[TreeEntry, Path]]:
    """The entries of a local file, directory or symlink (not followed), depth-first, names
    sorted; the top entry is named ``path.name``. Devices, fifos and sockets are skipped.

    Raises FileNotFoundError (and other OSErrors) as the filesystem does.
    """
    name = path.resolve().name if path.name in ("", ".", "..") else path.name
    stack: list[tuple[Path, str]] = [(path, name)]
    while stack:
        p, rel = stack.pop()
        st = p.lstat()
        entry = _entry_for(p, rel, st)
        if entry is None:
            continue
        yield entry, p
        if entry.type == "dir":
            children = sorted(os.listdir(p), key=os.fsencode)
            stack.extend((p / child, f"{rel}/{child}") for child in reversed(children))


class LocalTreeWriter:
    """Writes a received tree into the existing local directory ``dest``, all or nothing.

    Call :meth:`begin` for every entry, :meth:`write` with a file's bytes (after its
    :meth:`begin`), :meth:`finish` at the end (renames into place, applies directory modes
    and mtimes children first) or :meth:`abort` on any failure (removes all that is new).
    Not reusable after finish/abort. Local problems raise NotFoundError (``dest`` is missing)
    and ConflictError (something of another kind is in the way); a tree that breaks the
    rules raises GuestProtocolError.
    """

    def __init__(self, dest: Path) -> None:
        if not dest.is_dir():
            raise NotFoundError(f"{dest} is not an existing directory on this machine",
                                hint="create the destination directory first")
        self.dest = dest
        self._counter = 0
        self._staged: dict[str, Path] = {}       # top-level name -> its temporary directory
        self._joined: set[str] = set()          # top-level names that are existing directories
        self._dirs: list[tuple[str, TreeEntry]] = []
        self._dir_paths: set[str] = set()
        self._renames: list[tuple[Path, Path]] = []
        self._made: list[Path] = []
        self._file: BinaryIO | None = None
        self._file_entry: TreeEntry | None = None
        self._file_tmp: Path | None = None
        self._file_final: Path | None = None
        self._file_staged = False

    def _tmp(self, parent: Path) -> Path:
        self._counter += 1
        return parent / f".fcga-{os.getpid()}-{self._counter}.tmp"

    def _where(self, entry: TreeEntry) -> tuple[Path, bool]:
        """The entry's current path and whether it lies inside a staged directory."""
        top, _, rest = entry.path.partition("/")
        if rest:
            parent_rel = entry.path.rsplit("/", 1)[0]
            if parent_rel not in self._dir_paths:
                raise GuestProtocolError(f"entry {entry.path!r} comes without its directory {parent_rel!r}")
            base = self._staged.get(top)
            return (base / rest if base else self.dest / entry.path), base is not None
        final = self.dest / top
        if entry.type != "dir":
            return final, False
        if top in self._staged:
            return self._staged[top], True
        if final.is_symlink() or (final.exists() and not final.is_dir()):
            raise ConflictError(f"{final} exists on this machine and is not a directory",
                              hint="remove it or copy to another place")
        if final.is_dir():
            self._joined.add(top)
            return final, False
        tmp = self._tmp(self.dest)
        tmp.mkdir(mode=0o700)
        self._staged[top] = tmp
        return tmp, True

    def begin(self, entry: TreeEntry) -> None:
        """Starts an entry (ends the previous file: call :meth:`end_file` first for checks)."""
        self.end_file()
        path, staged = self._where(entry)
        if entry.type == "dir":
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                raise ConflictError(f"{path} exists on this machine and is not a directory")
            if not path.exists():
                path.mkdir(mode=0o700)
                if not staged:
                    self._made.append(path)
            self._dirs.append((entry.path, entry))
            self._dir_paths.add(entry.path)
            return
        if path.is_dir() and not path.is_symlink():
            raise ConflictError(f"{path} is a directory on this machine: a {entry.type} cannot replace it")
        tmp = self._tmp(path.parent)
        if entry.type == "symlink":
            assert entry.target is not None
            os.symlink(entry.target, tmp)
            self._set_mtime(tmp, entry.mtime)
            self._place(tmp, path, staged)
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._file = os.fdopen(fd, "wb")
        self._file_entry, self._file_tmp, self._file_final, self._file_staged = entry, tmp, path, staged

    def write(self, data: bytes) -> None:
        """Appends bytes to the current file entry."""
        if self._file is None:
            raise GuestProtocolError("file data outside a file entry")
        self._file.write(data)

    def end_file(self) -> None:
        """Completes the current file (mode, mtime, rename); no-op without one."""
        if self._file is None:
            return
        assert self._file_entry and self._file_tmp and self._file_final
        f, self._file = self._file, None
        os.chmod(f.fileno(), self._file_entry.mode)
        f.close()
        self._set_mtime(self._file_tmp, self._file_entry.mtime)
        self._place(self._file_tmp, self._file_final, self._file_staged)
        self._file_tmp = None

    def _place(self, tmp: Path, final: Path, staged: bool) -> None:
        if staged:
            os.replace(tmp, final)
        else:
            self._renames.append((tmp, final))

    @staticmethod
    def _set_mtime(path: Path, mtime: float) -> None:
        ns = round(mtime * 1e9)
        try:
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
        except (NotImplementedError, OSError):
            pass  # a platform without lutimes: keep the symlink's own mtime

    def finish(self) -> None:
        """Moves the tree into place and applies directory modes and mtimes."""
        self.end_file()
        for tmp, final in self._renames:
            os.replace(tmp, final)
        self._renames.clear()
        for top, tmp in list(self._staged.items()):
            os.rename(tmp, self.dest / top)
            del self._staged[top]
        self._made.clear()
        for rel, entry in reversed(self._dirs):
            path = self.dest / rel
            os.chmod(path, entry.mode)
            self._set_mtime(path, entry.mtime)

    def abort(self) -> None:
        """Removes every temporary and every directory made (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._file_tmp is not None:
            self._file_tmp.unlink(missing_ok=True)
            self._file_tmp = None
        for tmp, _ in self._renames:
            tmp.unlink(missing_ok=True)
        self._renames.clear()
        for tmp in self._staged.values():
            shutil.rmtree(tmp, ignore_errors=True)
        self._staged.clear()
        for path in reversed(self._made):
            try:
                path.rmdir()
            except OSError:
                pass
        self._made.clear()


__all__ = ["EntryType", "GuestStat", "LocalTreeWriter", "TransferResult", "TreeEntry", "iter_local_tree",
           "valid_entry_path"]
