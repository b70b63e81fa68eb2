"""Module load order (from .modinfo), the newc cpio writer, and the initramfs
built from the real Debian modules."""

from __future__ import annotations

import gzip
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from fc_macos.errors import ImageError
from fc_macos.images.initramfs import CpioEntry, build_initramfs, load_order, read_newc, write_newc
from tests.helpers.guest_images import find_kernel_deb, default_cache_dir

BUSYBOX = Path("/bin/busybox")


def fake_module(name: str, depends: list[str]) -> bytes:
    """A minimal ELF64 relocatable with a .modinfo section, as modinfo(8) reads it."""
    modinfo = b"license=GPL\0" + f"depends={','.join(depends)}\0name={name}\0".encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    modinfo_off = 64
    shstr_off = modinfo_off + len(modinfo)
    sh_off = (shstr_off + len(shstrtab) + 7) & ~7
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 3, 2
    )
    sections = bytes(64)  # the null section
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, modinfo_off, len(modinfo), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0)
    body = header + modinfo + shstrtab
    return body + bytes(sh_off - len(body)) + sections


def module_tree(tmp_path: Path, modules: dict[str, list[str]], builtin: list[str] = ()) -> Path:
    root = tmp_path / "lib" / "modules" / "6.1.0-test"
    for i, (name, depends) in enumerate(modules.items()):
        path = root / "kernel" / f"dir{i % 2}" / f"{name.replace('_', '-') if i == 0 else name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fake_module(name, depends))
    (root / "modules.builtin").write_text("".join(f"kernel/x/{b}.ko\n" for b in builtin))
    return root


def test_dependencies_load_first_each_once(tmp_path: Path) -> None:
    root = module_tree(tmp_path, {
        "virtio_blk": ["virtio", "virtio_ring"],
        "virtio_mmio": ["virtio", "virtio_ring"],
        "virtio": ["virtio_ring"],
        "virtio_ring": [],
        "unrelated": [],
    })
    names = [m.name for m in load_order(root, ["virtio_mmio", "virtio_blk"])]
    assert names == ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk"]


def test_builtin_modules_and_absent_optional_ones_are_left_out(tmp_path: Path) -> None:
    root = module_tree(tmp_path, {"virtio_blk": ["virtio"], "virtio_net": []}, builtin=["virtio"])
    names = [m.name for m in load_order(root, ["virtio_blk"], optional=["virtio_net", "not_there"])]
    assert names == ["virtio_blk", "virtio_net"]


def test_missing_dependency_names_who_needs_it(tmp_path: Path) -> None:
    root = module_tree(tmp_path, {"virtio_blk": ["virtio"]})
    with pytest.raises(ImageError, match=r"virtio \(needed by virtio_blk\)"):
        load_order(root, ["virtio_blk"])


def test_dependency_cycle_is_reported(tmp_path: Path) -> None:
    root = module_tree(tmp_path, {"a": ["b"], "b": ["a"]})
    with pytest.raises(ImageError, match="cycle: a -> b -> a"):
        load_order(root, ["a"])


def test_newc_round_trips_and_cpio_agrees(tmp_path: Path) -> None:
    entries = [
        CpioEntry("bin", stat.S_IFDIR | 0o755),
        CpioEntry("bin/tool", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        CpioEntry("bin/link", stat.S_IFLNK | 0o777, b"tool"),
        CpioEntry("dev", stat.S_IFDIR | 0o755),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("odd", stat.S_IFREG | 0o644, b"x" * 5),
    ]
    archive = tmp_path / "a.cpio"
    with archive.open("wb") as fh:
        write_newc(entries, fh)
    assert read_newc(archive.read_bytes()) == entries
    if shutil.which("cpio") is None:
        pytest.skip("cpio is missing (apt-get install cpio)")
    listing = subprocess.run(["cpio", "-itv", "--quiet"], stdin=archive.open("rb"), capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing] == [e.path for e in entries]
    assert listing[4].startswith("crw-------") and "5," in listing[4]


def test_initramfs_from_the_debian_modules(tmp_path: Path) -> None:
    deb = find_kernel_deb(default_cache_dir())
    if deb is None:
        pytest.skip("no Debian kernel package: run scripts/fetch-test-kernel")
    if not BUSYBOX.exists():
        pytest.skip("/bin/busybox is missing: apt-get install busybox-static")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "deb")], check=True)
    modules_dir = next((tmp_path / "deb" / "lib" / "modules").iterdir())
    modules = load_order(modules_dir, ["virtio_mmio", "virtio_blk"])
    names = [m.name for m in modules]
    # The order guest-images.md found to work (virtio before virtio_ring fails).
    assert names == ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk"]

    build_initramfs(BUSYBOX, modules, tmp_path / "initrd.img")
    members = {e.path: e for e in read_newc(gzip.decompress((tmp_path / "initrd.img").read_bytes()))}
    assert members["bin/busybox"].data == BUSYBOX.read_bytes()
    assert members["init"].mode == stat.S_IFREG | 0o755
    assert members["init"].data.startswith(b"#!/bin/busybox sh")
    assert members["dev/console"].rdev == (5, 1)
    assert members["modules.load"].data.decode().split() == [f"{n}.ko" for n in names]
    assert all(f"lib/modules/{n}.ko" in members for n in names)
