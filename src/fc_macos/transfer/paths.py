"""Where a copied tree lands: ``docker cp``'s rules, for both directions.

The source is a file, a directory or a symlink (copied as a link, not
followed); ``SRC/.`` means the contents of directory SRC. The destination:

========================  ==========================  ==============================
destination               source file                 source directory
========================  ==========================  ==============================
existing directory        copied into it (same name)  copied into it (same name);
                                                      ``SRC/.``: its contents merged in
existing file             overwritten                 error
missing, ends with ``/``  error: no such directory    created, with SRC's contents
missing                   created under that name     created, with SRC's contents
========================  ==========================  ==============================

A missing destination's parent must be an existing directory (nothing is
created on the way). :func:`destination` turns these rules into a
:class:`Placement`: the existing directory that receives the top entry and
that entry's name there. It only reasons about paths; the callers stat them
(locally or through the guest agent) and move the bytes.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass

from fc_macos.errors import ConflictError, NotFoundError, UsageError


@dataclass(frozen=True)
class Source:
    """A normalised source path: ``path`` without a trailing ``/.``, and
    whether only its contents are copied."""

    path: str
    contents_only: bool

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) or "/"

    @classmethod
    def parse(cls, raw: str) -> Source:
        if not raw:
            raise UsageError("an empty path", hint="give a file or directory, e.g. /etc/hostname")
        contents = raw == "." or raw.endswith("/.")
        path = posixpath.normpath(raw)
        return cls(path=path, contents_only=contents)


@dataclass(frozen=True)
class Placement:
    """``parent``: an existing directory; ``name``: what the source's top entry
    is called in it (None: the source directory's children go into ``parent``)."""

    parent: str
    name: str | None

    @property
    def path(self) -> str:
        return self.parent if self.name is None else posixpath.join(self.parent, self.name)


@dataclass(frozen=True)
class Side:
    """Which machine a path is on, for messages: ``where`` ('in microVM web'),
    and how to make a directory there (a command line with ``{path}``)."""

    where: str
    mkdir: str


LOCAL = Side("on this machine", "mkdir -p {path}")


def local_kind(path: str) -> str | None:
    """``"dir"`` (following symlinks), ``"file"``, ``"symlink"``, ``"other"``, or None when missing."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "symlink" if os.path.islink(path) else None
    except NotADirectoryError:
        return None
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(info.st_mode) else "other"


def destination(source_kind: str, source: Source, dest: str, dest_kind: str | None,
                parent_kind: str | None, side: Side) -> Placement:
    """Apply the rules above. ``dest_kind``/``parent_kind`` are the kinds
    (``"dir"``, ``"file"``, ...) of ``dest`` and of its parent directory, None
    when missing. NotFoundError for a missing destination directory,
    ConflictError for a directory onto a file."""
    source_is_dir = source_kind == "dir"
    if source.contents_only and not source_is_dir:
        raise UsageError(f"{source.path} is not a directory, so '{source.path}/.' has no contents to copy",
                         hint=f"copy the file itself: drop the '/.' after {source.path}")
    trailing = dest.endswith("/") and dest != "/"
    dest = posixpath.normpath(dest) if dest else "."
    if dest_kind == "dir":
        return Placement(dest, None if source.contents_only else source.name)
    if dest_kind is not None:
        if source_is_dir:
            raise ConflictError(f"cannot copy the directory {source.path} onto the file {dest} {side.where}",
                                hint="give a directory or a new name as the destination")
        if trailing:
            raise ConflictError(f"{dest} {side.where} is not a directory",
                                hint=f"drop the trailing '/' to overwrite the file {dest}")
        return Placement(posixpath.dirname(dest) or ".", posixpath.basename(dest))
    if trailing and not source_is_dir:
        raise NotFoundError(f"the destination directory {dest} does not exist {side.where}",
                            hint=f"create it first: {side.mkdir.format(path=dest)}")
    parent = posixpath.dirname(dest) or "."
    if parent_kind != "dir":
        what = "does not exist" if parent_kind is None else "is not a directory"
        raise NotFoundError(f"the destination directory {parent} {what} {side.where}",
                            hint=f"create it first: {side.mkdir.format(path=parent)}")
    return Placement(parent, posixpath.basename(dest))
