"""Root file systems: a directory tree with the fc-macos ``/init``, packed into an
ext4 image without root privileges or mounts (``mkfs.ext4 -d``).

The ``/init`` (``rootfs-init.sh``, also linked as ``/sbin/init`` so kernels
booted without an initramfs find it) mounts proc/sys/dev, sets the hostname,
prints a banner and keeps a shell on the serial console through busybox
``getty -n -l /bin/sh``; see the script for the signals it handles.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from fc_macos.errors import ImageError
from fc_macos.images.initramfs import check_static_busybox, init_script

DEFAULT_HOSTNAME = "fc-microvm"
# mkfs.ext4 is in /sbin on Linux; Homebrew's e2fsprogs is keg-only on macOS.
E2FS_DIRS = ("/sbin", "/usr/sbin", "/opt/homebrew/opt/e2fsprogs/sbin", "/usr/local/opt/e2fsprogs/sbin")

DEV_NODES = (("console", 5, 1, 0o600), ("null", 1, 3, 0o666))
TREE_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "tmp", "root", "var", "mnt")
ETC_FILES = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "group": "root:x:0:\ntty:x:5:\n",
    "shadow": "root::1::::::\n",
    "profile": "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
    "fstab": "",
}


def find_e2fs_tool(name: str) -> str:
    """The path of an e2fsprogs program (``mkfs.ext4``, ``debugfs``)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(E2FS_DIRS))
    if found is None:
        raise ImageError(
            f"'{name}' (e2fsprogs) is not installed",
            hint="install e2fsprogs ('apt-get install e2fsprogs', or 'brew install e2fsprogs' on macOS)",
        )
    return found


def _run(command: list[str], what: str) -> str:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ImageError(f"{what}: cannot run {command[0]}: {exc}", hint="check the e2fsprogs install") from exc
    if proc.returncode != 0:
        raise ImageError(f"{what} failed: {(proc.stderr or proc.stdout).strip()}", hint="check free space and the inputs")
    return proc.stdout


def busybox_applets(busybox: Path) -> list[str]:
    """``busybox --list-full`` (``bin/sh``, ``sbin/getty`` ...), or ``[]`` when this busybox
    cannot run here (another architecture): ``/init`` then installs the links at boot."""
    try:
        proc = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


def populate_busybox_tree(root: Path, busybox: Path, *, hostname: str = DEFAULT_HOSTNAME) -> None:
    """Lay out a minimal root tree in ``root``: directories, ``/etc`` basics, a static
    busybox at ``/bin/busybox`` with its applet links, and the fc-macos ``/init``."""
    data = check_static_busybox(busybox)
    for d in TREE_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    for name, text in ETC_FILES.items():
        (root / "etc" / name).write_text(text)
    (root / "etc" / "shadow").chmod(0o600)
    target = root / "bin" / "busybox"
    target.write_bytes(data)
    target.chmod(0o755)
    for applet in busybox_applets(busybox):
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))
    install_init(root, hostname=hostname)


def install_init(root: Path, *, hostname: str = DEFAULT_HOSTNAME) -> None:
    """Write the fc-macos ``/init`` into ``root``, point ``/sbin/init`` at it (replacing
    whatever was there, e.g. Alpine's busybox init) and set ``/etc/hostname``."""
    init = root / "init"
    init.write_bytes(init_script("rootfs-init.sh"))
    init.chmod(0o755)
    sbin_init = root / "sbin" / "init"
    sbin_init.parent.mkdir(parents=True, exist_ok=True)
    if sbin_init.is_symlink() or sbin_init.exists():
        sbin_init.unlink()
    sbin_init.symlink_to("../init")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "hostname").write_text(hostname + "\n")


def tree_size(root: Path) -> int:
    """Bytes used by the regular files below ``root`` (symlinks not followed)."""
    return sum(p.lstat().st_size for p in root.rglob("*") if stat.S_ISREG(p.lstat().st_mode))


def make_ext4(root: Path, dest: Path, *, size_mib: int | None = None, label: str = "rootfs") -> None:
    """Pack ``root`` into a new ext4 image ``dest`` of ``size_mib`` MiB (default: room
    for the tree plus half again, at least 32 MiB). Needs no root and no mounts.
    ``/dev/console`` and ``/dev/null`` are added as device nodes (for kernels
    that do not mount devtmpfs before starting init). Overwrites ``dest``."""
    if size_mib is None:
        size_mib = max(32, (tree_size(root) * 3 // 2) // (1 << 20) + 16)
    dest.unlink(missing_ok=True)
    mkfs = find_e2fs_tool("mkfs.ext4")
    _run(
        [mkfs, "-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0", "-d", str(root), str(dest), f"{size_mib}M"],
        "mkfs.ext4",
    )
    nodes = [(n, maj, mi, mode) for n, maj, mi, mode in DEV_NODES if not (root / "dev" / n).exists()]
    if nodes:
        # debugfs takes a bare name in the current directory, and mknod leaves the mode at 0.
        requests = ["cd /dev"]
        for name, major, minor, mode in nodes:
            requests += [f"mknod {name} c {major} {minor}", f"sif {name} mode 0{stat.S_IFCHR | mode:o}"]
        debugfs = find_e2fs_tool("debugfs")
        script = dest.with_name(dest.name + ".debugfs")
        script.write_text("\n".join(requests) + "\n")
        try:
            _run([debugfs, "-w", "-f", str(script), str(dest)], "debugfs mknod")
        finally:
            script.unlink(missing_ok=True)
