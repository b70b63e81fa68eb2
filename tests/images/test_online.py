"""The online source against a local HTTP server: the happy path with a test pin
table, and the real pin table refusing bytes whose checksum does not match."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.errors import ImageError
from fc_macos.images import build_images
from fc_macos.images.online import PINS, Pin, build_online, download, extract_rootfs_tarball
from fc_macos.progress import NullProgress
from tests.helpers.progress import RecordingProgress
from tests.helpers.guest_images import guest_agent_binary
from tests.helpers.http_files import serving
from tests.images.test_rootfs import debugfs

BUSYBOX = Path("/bin/busybox")
FAKE_KERNEL = b"\x7fELF\x02\x01\x01" + bytes(9) + b"ci kernel" * 1000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving the files under the returned directory."""
    root = tmp_path / "www"
    root.mkdir()
    with serving(root) as base_url:
        yield base_url, root


def publish(root: Path, path: str, data: bytes) -> Pin:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return Pin("https://unused.invalid", path, hashlib.sha256(data).hexdigest())


def alpine_like_tarball() -> bytes:
    """A minirootfs-shaped tarball: busybox, applet links with absolute targets, Alpine's /sbin/init."""
    if not BUSYBOX.exists():
        pytest.skip("/bin/busybox is missing: apt-get install busybox-static")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for d in ("./", "./bin", "./sbin", "./etc", "./dev", "./proc", "./sys", "./tmp"):
            tar.addfile(_dir(d))
        info = tarfile.TarInfo("./bin/busybox")
        data = BUSYBOX.read_bytes()
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for link, target in (("./bin/sh", "/bin/busybox"), ("./sbin/init", "/bin/busybox"), ("./sbin/getty", "/bin/busybox")):
            tar.addfile(_symlink(link, target))
    return out.getvalue()


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_happy_path_downloads_verifies_and_builds(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    pins = {
        "kernel": publish(root, "fc/x86_64/vmlinux-test", FAKE_KERNEL),
        "rootfs": publish(root, "alpine/alpine-minirootfs-test.tar.gz", alpine_like_tarball()),
    }
    out = tmp_path / "out"
    out.mkdir()
    progress = RecordingProgress()
    agent = guest_agent_binary("x86_64")
    fmt = build_online(out, "x86_64", progress, base_url=base, download_dir=tmp_path / "dl", pins=pins,
                       guest_agent=agent)
    assert fmt == "elf"
    assert (out / "vmlinux").read_bytes() == FAKE_KERNEL
    assert f"Size: {agent.stat().st_size}" in debugfs(out / "rootfs.ext4", "stat /sbin/fc-guest-agent")
    assert "fc-macos" in debugfs(out / "rootfs.ext4", "cat /etc/fc-macos-image")
    assert "Fast link dest: \"../init\"" in debugfs(out / "rootfs.ext4", "stat /sbin/init")  # not Alpine's
    assert not (out / "initrd.img").exists()
    assert "download-kernel" in progress.names("step")
    kernel_bytes = [(done, total) for name, done, total in progress.transfers if name == "vmlinux-test"]
    assert kernel_bytes[-1] == (len(FAKE_KERNEL), len(FAKE_KERNEL))  # the bar ends full
    assert [done == total for done, total in kernel_bytes].count(True) == 1  # ... once: a second bar would show
    assert all(done <= len(FAKE_KERNEL) for done, _ in kernel_bytes)
    # A second build reuses the verified downloads instead of fetching again.
    (root / "fc/x86_64/vmlinux-test").unlink()
    build_online(out, "x86_64", NullProgress(), base_url=base, download_dir=tmp_path / "dl", pins=pins)


def test_checksum_mismatch_is_refused_and_leaves_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    # Serve wrong bytes at the real pinned kernel path.
    publish(root, PINS["x86_64"]["kernel"].path, FAKE_KERNEL)
    out = tmp_path / "images"
    with pytest.raises(ImageError) as info:
        build_images("online", out, "x86_64", base_url=base, guest_agent=guest_agent_binary("x86_64"))
    assert "checksum mismatch" in info.value.message
    assert PINS["x86_64"]["kernel"].sha256 in info.value.message
    assert info.value.hint
    assert not (out / "manifest.json").exists()
    assert not (out / "vmlinux").exists()
    assert not any((out / "downloads").glob("vmlinux*"))
    assert [p.name for p in out.iterdir() if p.name.startswith(".build-")] == []


def test_missing_file_names_the_url(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(ImageError, match=r"cannot download http://127\.0\.0\.1:\d+/nothing/here.*404"):
        download(f"{base}/nothing/here", tmp_path / "x", "0" * 64, NullProgress())
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "./link/inside"])
def test_unsafe_tarball_members_are_refused(tmp_path: Path, name: str) -> None:
    tarball = tmp_path / "bad.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.addfile(_symlink("./link", "/"))
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ImageError):
        extract_rootfs_tarball(tarball, tmp_path / "tree")


def test_every_pin_has_a_url_and_a_sha256() -> None:
    for arch, pins in PINS.items():
        assert set(pins) == {"kernel", "rootfs"}
        for pin in pins.values():
            assert pin.url().startswith("https://") and arch in pin.path
            assert len(pin.sha256) == 64 and int(pin.sha256, 16) >= 0
