"""Where the files a microVM spec names are looked up.

Bare names (``vmlinux``) resolve inside the image directories, in order
(``<state-dir>/images`` first, then each ``--image-dir``). Absolute paths
must lie inside one of those directories, after symlinks are resolved.
Relative paths with a ``/`` are taken relative to each image directory and
obey the same rule (so ``../`` cannot escape). The check is lexical: a symlink
that the machine's owner put inside an image directory is trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

from fc_macos.errors import NotFoundError, ValidationError


def _inside(path: Path, dirs: tuple[Path, ...]) -> bool:
    return any(path == d or d in path.parents for d in dirs)


IMAGE_DIRS_HINT = (
    "paths are on the agent's machine: put the file in one of {listing} and name it there "
    "(or start fc-agent with --image-dir); 'fc-macos setup --kernel/--initrd/--rootfs PATH' "
    "installs your own files as the defaults"
)


def resolve_file(
    kind: str, value: str, dirs: tuple[Path, ...], *, served: str = "images", outside_hint: str = IMAGE_DIRS_HINT
) -> Path:
    """The absolute path of the ``kind`` file ``value`` (e.g. kind="kernel").

    Raises ValidationError if it lies outside ``dirs`` and NotFoundError if
    it does not exist. ``dirs`` must be absolute, normalized paths.
    ``served`` names what the directories hold and ``outside_hint`` (with a
    ``{listing}`` placeholder) says what to do, in the error messages.
    """
    listing = ", ".join(str(d) for d in dirs)
    allowed = dirs + tuple(d.resolve() for d in dirs)
    raw = Path(value)
    candidates = [raw] if raw.is_absolute() else [d / raw for d in dirs]
    for candidate in candidates:
        resolved = Path(os.path.normpath(candidate))
        if not _inside(resolved, allowed):
            raise ValidationError(
                f"{kind} {value!r} is outside the directories the agent serves {served} from",
                hint=outside_hint.format(listing=listing),
                code="path_outside_image_dirs",
            )
        if resolved.is_file():
            return resolved
    where = f"in {listing}" if not raw.is_absolute() else "on the agent's machine"
    raise NotFoundError(
        f"{kind} file {value!r} not found {where}",
        hint=f"copy it into one of: {listing}, or name an existing file",
        code="file_not_found",
    )


def find_default(name: str, dirs: tuple[Path, ...]) -> Path | None:
    """The installed default image ``name`` (first image directory that has it)."""
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None
