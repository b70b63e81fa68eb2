"""The file names of a guest image set, the one place they are spelled.

An image directory (what ``fc-macos images build`` writes, ``setup`` installs and
fc-agent serves) holds :data:`KERNEL` (also for an arm64 ``Image``), :data:`INITRD`
(only when the kernel needs one), :data:`ROOTFS` and :data:`MANIFEST`. They are also
what a microVM boots when its spec names no kernel, initrd or rootfs. Plain strings,
no imports: the CLI, the image builder and the agent all use them.
"""

from __future__ import annotations

KERNEL = "vmlinux"
INITRD = "initrd.img"
ROOTFS = "rootfs.ext4"
MANIFEST = "manifest.json"
#: The files in the order a set lists them.
FILES = (KERNEL, INITRD, ROOTFS)
#: Image kind (as in ``--kernel/--initrd/--rootfs`` and a spec's fields) -> its file name.
BY_KIND = {"kernel": KERNEL, "initrd": INITRD, "rootfs": ROOTFS}

__all__ = ["BY_KIND", "FILES", "INITRD", "KERNEL", "MANIFEST", "ROOTFS"]
