"""Root file systems: a directory tree with the fc-macos ``/init``, packed into an
ext4 image without root privileges or mounts (``mkfs.ext4 -d``).

The ``/init`` (``rootfs-init.sh``, also linked as ``/sbin/init`` so kernels
booted without an initramfs find it) mounts proc/sys/dev, sets the hostname,
starts the guest agent, prints a banner and keeps a shell on the serial console
through busybox ``getty -n -l /bin/sh``; see the script for the signals it
handles and for why the shell is started the way it is (Ctrl+C).

Every fc-macos rootfs holds the guest agent at ``/sbin/fc-guest-agent``
(:data:`GUEST_AGENT_PATH`, a static binary for the image's architecture) and the
marker file ``/etc/fc-macos-image`` (:data:`MARKER_PATH`). The marker says "this
rootfs's ``/init`` starts the guest agent itself": fc-agent then boots it as it is,
while a rootfs without the marker gets the agent as its ``init=`` shim
(``fc_macos.agent.guest_install``). Its content is informative only::

    # Made by fc-macos: /init starts /sbin/fc-guest-agent --supervise.
    format=1
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from fc_macos.errors import ImageError, NotFoundError
from fc_macos.images.elf import EM_AARCH64, EM_X86_64, ElfFile
from fc_macos.images.initramfs import check_static_busybox, init_script

DEFAULT_HOSTNAME = "fc-microvm"
GUEST_AGENT_PATH = "/sbin/fc-guest-agent"
MARKER_PATH = "/etc/fc-macos-image"
MARKER_TEXT = "# Made by fc-macos: /init starts /sbin/fc-guest-agent --supervise.\nformat=1\n"
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


def populate_busybox_tree(root: Path, busybox: Path, *, hostname: str = DEFAULT_HOSTNAME,
                          guest_agent: Path | None = None) -> None:
    """Lay out a minimal root tree in ``root``: directories, ``/etc`` basics, a static
    busybox at ``/bin/busybox`` with its applet links, and the fc-macos ``/init``
    (with ``guest_agent``, see :func:`install_init`)."""
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
    install_init(root, hostname=hostname, guest_agent=guest_agent)


def install_init(root: Path, *, hostname: str = DEFAULT_HOSTNAME, guest_agent: Path | None = None) -> None:
    """Write the fc-macos ``/init`` into ``root``, point ``/sbin/init`` at it (replacing
    whatever was there, e.g. Alpine's busybox init), set ``/etc/hostname`` and write the
    marker ``/etc/fc-macos-image``. With ``guest_agent`` (the static binary for the
    image's architecture, see :func:`check_guest_agent`) it is copied to
    ``/sbin/fc-guest-agent`` (0755); ``fc-macos images build`` always gives one."""
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
    (root / MARKER_PATH.lstrip("/")).write_text(MARKER_TEXT)
    if guest_agent is not None:
        target = root / GUEST_AGENT_PATH.lstrip("/")
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(guest_agent, target)
        target.chmod(0o755)


def check_guest_agent(binary: Path, arch: str) -> None:
    """``ImageError`` unless ``binary`` is a static executable for ``arch``
    (``x86_64`` or ``aarch64``): it has to run in any rootfs of that architecture.
    ``NotFoundError`` when there is no such file."""
    if not binary.is_file():
        raise NotFoundError(f"the guest agent binary {binary} does not exist",
                            hint="build it with 'python -m fc_macos.guest.build', or give the path of a built one")
    try:
        elf = ElfFile(binary.read_bytes(), what=str(binary))
    except OSError as exc:
        raise ImageError(f"cannot read the guest agent {binary}: {exc}",
                         hint="build it with 'python -m fc_macos.guest.build'") from exc
    if elf.machine != {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}[arch]:
        raise ImageError(f"the guest agent {binary} is not built for {arch}",
                         hint=f"build it with 'python -m fc_macos.guest.build --arch {arch}'")
    if not elf.is_static():
        raise ImageError(f"the guest agent {binary} is dynamically linked",
                         hint="build it with 'python -m fc_macos.guest.build' (a static musl binary)")


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
