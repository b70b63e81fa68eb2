"""The file names of a guest image set, the one place they are spelled.

An image directory (what ``fc-macos images build`` writes, ``setup`` installs and
fc-agent serves) holds :data:`KERNEL` (also for an arm64 ``Image``), :data:`INITRD`
(only when the kernel needs one), :data:`ROOTFS` and :data:`MANIFEST`. They are also
what a microVM boots when its spec names no kernel, initrd or rootfs. Plain strings,
light: the CLI, the image builder and the agent all use them.
"""

from __future__ import annotations

import re

KERNEL = "vmlinux"
INITRD = "initrd.img"
ROOTFS = "rootfs.ext4"
MANIFEST = "manifest.json"
#: The files in the order a set lists them.
FILES = (KERNEL, INITRD, ROOTFS)
#: Image kind (as in ``--kernel/--initrd/--rootfs`` and a spec's fields) -> its file name.
BY_KIND = {"kernel": KERNEL, "initrd": INITRD, "rootfs": ROOTFS}

#: A name in an image directory (uploads, ``images add``): portable file-name
#: characters, at most :data:`MAX_NAME` of them (the agent's OpenAPI document states the same).
NAME_RE = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*$")
MAX_NAME = 255


def safe_name(name: str) -> str:
    """``name`` (a local file's) made into an image name: other characters become '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "-", name).lstrip(".-")[:MAX_NAME]
    return cleaned or "image"


__all__ = ["BY_KIND", "FILES", "INITRD", "KERNEL", "MANIFEST", "MAX_NAME", "NAME_RE", "ROOTFS", "safe_name"]
