"""A small initramfs for kernels whose virtio drivers are modules.

Distribution cloud kernels build ``virtio_mmio``/``virtio_blk`` as modules, so
they cannot mount a Firecracker root drive alone. The initramfs holds a static
busybox, the modules (loaded in dependency order, read from each module's
``.modinfo`` ``depends=`` field) and an ``/init`` (``initramfs-init.sh``) that
loads them, waits for the root device, mounts it and ``switch_root``\\ s.

The archive is a gzip'd newc cpio written here in Python, so no root and no
``cpio`` program are needed; device nodes (``/dev/console``) go in as entries.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Iterable

from fc_macos.errors import ImageError
from fc_macos.images.elf import ElfFile, modinfo

# What a Firecracker guest needs: the root drive (required) and, when the kernel
# has them, the network and vsock devices.
REQUIRED_MODULES = ("virtio_mmio", "virtio_blk")
OPTIONAL_MODULES = ("virtio_net", "vmw_vsock_virtio_transport", "virtio_rng")

MODULE_SUFFIXES = (".ko", ".ko.xz")


# --- newc cpio ---------------------------------------------------------------


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``mode`` includes the file type bits (``stat.S_IFREG | 0o755``)."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes
    mtime: int = 0


def _cpio_header(ino: int, entry: CpioEntry, name: bytes) -> bytes:
    fields = (ino, entry.mode, 0, 0, 1, entry.mtime, len(entry.data), 0, 0, *entry.rdev, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % v for v in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_newc(entries: Iterable[CpioEntry], out: BinaryIO) -> None:
    """Write ``entries`` as a newc ("070701") cpio archive with its ``TRAILER!!!``.
    Owners are root; parent directories must be listed before their children."""
    ino = 1
    for entry in [*entries, CpioEntry("TRAILER!!!", 0)]:
        name = entry.path.lstrip("/").encode() or b"."
        header = _cpio_header(0 if entry.path == "TRAILER!!!" else ino, entry, name) + name + b"\0"
        out.write(header + _pad(len(header)))
        out.write(entry.data + _pad(len(entry.data)))
        ino += 1


def read_newc(data: bytes) -> list[CpioEntry]:
    """Parse a newc cpio archive (the inverse of :func:`write_newc`, without the trailer)."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise ImageError(f"not a newc cpio archive at offset {pos}", hint="check the initramfs file")
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, mtime, filesize, rmaj, rmin, namesize = fields[1], fields[5], fields[6], fields[9], fields[10], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append(CpioEntry(name, mode, data[body : body + filesize], (rmaj, rmin), mtime))
        pos = body + filesize + (-filesize % 4)


# --- kernel modules ------------------------------------------------------------


@dataclass
class KernelModule:
    name: str
    path: Path
    depends: list[str] = field(default_factory=list)


def _module_name(path: Path) -> str:
    name = path.name
    for suffix in MODULE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def index_modules(modules_dir: Path) -> dict[str, Path]:
    """Every module file below ``modules_dir`` (``lib/modules/<version>``) by module name."""
    found = {}
    for path in sorted(modules_dir.rglob("*.ko*")):
        if path.name.endswith(MODULE_SUFFIXES):
            found[_module_name(path)] = path
    return found


def builtin_modules(modules_dir: Path) -> set[str]:
    """Names listed in ``modules.builtin`` (built into the kernel: nothing to load)."""
    listing = modules_dir / "modules.builtin"
    if not listing.exists():
        return set()
    return {_module_name(Path(line.strip())) for line in listing.read_text().splitlines() if line.strip()}


def load_order(modules_dir: Path, wanted: Iterable[str], optional: Iterable[str] = ()) -> list[KernelModule]:
    """The modules to load for ``wanted`` (and for those of ``optional`` that exist),
    dependencies first, each once. Modules built into the kernel are left out.
    Raises ``ImageError`` for a missing required module or a dependency cycle."""
    available = index_modules(modules_dir)
    builtin = builtin_modules(modules_dir)
    order: list[KernelModule] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in builtin:
            return
        if name in chain:
            raise ImageError(f"module dependency cycle: {' -> '.join((*chain, name))}", hint="check the kernel package")
        path = available.get(name)
        if path is None:
            needed_by = f" (needed by {chain[-1]})" if chain else ""
            raise ImageError(
                f"kernel module {name}{needed_by} is not in {modules_dir}",
                hint="use a kernel package that builds virtio drivers as modules or into the kernel",
            )
        info = modinfo(_module_bytes(path), what=str(path))
        module = KernelModule(name, path, info.get("depends", []))
        for dep in module.depends:
            visit(dep.replace("-", "_"), (*chain, name))
        done.add(name)
        order.append(module)

    for name in wanted:
        visit(name, ())
    for name in optional:
        if name in available:
            visit(name, ())
    return order


# --- the archive -------------------------------------------------------------------


def init_script(name: str) -> bytes:
    """One of the shell scripts shipped beside this module (``initramfs-init.sh`` ...)."""
    return resources.files("fc_macos.images").joinpath(name).read_bytes()


def check_static_busybox(busybox: Path) -> bytes:
    """The bytes of ``busybox``, which must be a static executable."""
    try:
        data = busybox.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read busybox at {busybox}: {exc}", hint="apt-get install busybox-static") from exc
    if not ElfFile(data, what=str(busybox)).is_static():
        raise ImageError(f"{busybox} is dynamically linked", hint="use a static busybox (apt-get install busybox-static)")
    return data


def initramfs_entries(busybox: Path, modules: list[KernelModule]) -> list[CpioEntry]:
    """The members of the initramfs: directories, /dev/console, busybox, the modules
    under /lib/modules with /modules.load listing them in order, and /init."""
    dirs = ["dev", "proc", "sys", "newroot", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "lib/modules"]
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in dirs]
    entries += [
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)),
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, check_static_busybox(busybox)),
        CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
    ]
    listing = []
    for module in modules:
        filename = f"{module.name}.ko"
        entries.append(CpioEntry(f"lib/modules/{filename}", stat.S_IFREG | 0o644, _module_bytes(module.path)))
        listing.append(filename)
    entries.append(CpioEntry("modules.load", stat.S_IFREG | 0o644, "".join(f"{n}\n" for n in listing).encode()))
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, init_script("initramfs-init.sh")))
    return entries


def build_initramfs(busybox: Path, modules: list[KernelModule], dest: Path) -> None:
    """Write the gzip'd newc initramfs to ``dest`` (overwritten)."""
    raw = io.BytesIO()
    write_newc(initramfs_entries(busybox, modules), raw)
    try:
        with dest.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
            gz.write(raw.getvalue())
    except OSError as exc:
        raise ImageError(f"cannot write {dest}: {exc}", hint="check free space and permissions") from exc
