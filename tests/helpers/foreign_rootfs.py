"""A rootfs that has never heard of fc-macos, for tests of the guest agent's init shim.

Import path and stable signature::

    from tests.helpers.foreign_rootfs import FOREIGN_PROMPT, INITTAB_BANNER, build_foreign_rootfs

    rootfs = build_foreign_rootfs(tmp_path / "foreign.ext4")   # Path of a new ext4 image

What is in it, as a busybox distribution would ship it: a static busybox with its
applet links, ``/sbin/init`` -> busybox (busybox init), an ``/etc/inittab`` that
mounts /proc, /sys, /dev, /dev/pts and /run, sets the hostname ``foreign``, prints
:data:`INITTAB_BANNER` and keeps a login shell on ttyS0 (prompt
:data:`FOREIGN_PROMPT`), and reboots on Ctrl-Alt-Del. No ``/init``, no marker
``/etc/fc-macos-image``, no ``/sbin/fc-guest-agent``.

Boot it with the Debian test kernel and initrd (tests/helpers/guest_images.py):
the initramfs mounts it and runs its ``init=`` (default ``/sbin/init``). Tests skip
when ``/bin/busybox`` (busybox-static) or e2fsprogs is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fc_macos.images.rootfs import busybox_applets, make_ext4

BUSYBOX = Path("/bin/busybox")
HOSTNAME = "foreign"
#: The shell prompt of its ttyS0 shell (``/etc/profile``'s PS1).
FOREIGN_PROMPT = rb"foreign-shell:[^ ]*# "
#: What its inittab prints once its sysinit actions ran.
INITTAB_BANNER = "foreign inittab: sysinit done"

INITTAB = f"""\
::sysinit:/bin/mount -t proc proc /proc
::sysinit:/bin/mount -t sysfs sysfs /sys
::sysinit:/bin/sh -c 'grep -q " /dev " /proc/mounts || mount -t devtmpfs devtmpfs /dev'
::sysinit:/bin/mkdir -p /dev/pts
::sysinit:/bin/mount -t devpts devpts /dev/pts
::sysinit:/bin/mount -t tmpfs tmpfs /run
::sysinit:/bin/hostname {HOSTNAME}
::sysinit:/bin/echo "{INITTAB_BANNER}"
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot -f
::shutdown:/bin/umount -a -r
"""

ETC = {
    "inittab": INITTAB,
    "passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "group": "root:x:0:\n",
    "hostname": HOSTNAME + "\n",
    "profile": "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nexport PS1='foreign-shell:\\w\\$ '\n",
}


def build_foreign_rootfs(dest: Path, *, busybox: Path = BUSYBOX, size_mib: int = 32) -> Path:
    """Write the busybox-init rootfs described above to ``dest`` (an ext4 image,
    overwritten) and return ``dest``."""
    if not busybox.exists():
        pytest.skip(f"{busybox} is missing: apt-get install busybox-static")
    tree = dest.with_name(dest.name + ".tree")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "tmp", "root"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    target = tree / "bin" / "busybox"
    target.write_bytes(busybox.read_bytes())
    target.chmod(0o755)
    applets = busybox_applets(busybox)
    if "sbin/init" not in applets:
        pytest.skip(f"{busybox} has no init applet")
    for applet in applets:
        link = tree / applet
        if applet != "bin/busybox" and not (link.exists() or link.is_symlink()):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(target, link.parent))
    for name, text in ETC.items():
        (tree / "etc" / name).write_text(text)
    make_ext4(tree, dest, size_mib=size_mib)
    return dest
