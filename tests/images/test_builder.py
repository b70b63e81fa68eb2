"""build_images: manifest, idempotence, rebuilds, failures that leave the old set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fc_macos.images
from fc_macos.errors import ImageError, NotFoundError, UsageError
from fc_macos.images import build_images, verify_images
from fc_macos.images.digest import sha256_file
from fc_macos.providers.base import NullProgress
from tests.helpers.guest_images import build_test_images, default_cache_dir, find_kernel_deb, guest_agent_binary


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.skipped: list[str] = []
        self.steps: list[str] = []

    def step(self, name: str, description: str) -> None:
        self.steps.append(name)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(name)


@pytest.fixture(scope="module")
def kernel_deb() -> Path:
    build_test_images()  # skips with the reason when the package or a tool is missing
    deb = find_kernel_deb(default_cache_dir())
    assert deb is not None
    return deb


def test_build_writes_manifest_and_is_idempotent(tmp_path: Path, kernel_deb: Path) -> None:
    first = build_images("debian", tmp_path, kernel_deb=kernel_deb)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["arch"] == first.arch
    assert manifest["source"] == "debian" and manifest["kernel_format"] == first.kernel_format
    assert manifest["inputs"]["kernel_deb_sha256"] == sha256_file(kernel_deb)
    assert manifest["files"] == {n: sha256_file(tmp_path / n) for n in ("vmlinux", "initrd.img", "rootfs.ext4")}
    assert first.kernel == tmp_path / "vmlinux" and first.initrd == tmp_path / "initrd.img"
    inode = (tmp_path / "vmlinux").stat().st_ino

    again = Recorder()
    assert build_images("debian", tmp_path, kernel_deb=kernel_deb, progress=again) == first
    assert again.skipped == ["images"] and again.steps == []
    # Without a .deb, an existing debian set is accepted whichever package built it.
    assert build_images("debian", tmp_path, progress=again) == first
    assert (tmp_path / "vmlinux").stat().st_ino == inode

    # A changed file is noticed and the set rebuilt.
    with (tmp_path / "rootfs.ext4").open("r+b") as fh:
        fh.write(b"garbage")
    with pytest.raises(ImageError, match="changed since it was built"):
        verify_images(tmp_path)
    rebuilt = Recorder()
    build_images("debian", tmp_path, kernel_deb=kernel_deb, progress=rebuilt)
    assert "rootfs" in rebuilt.steps
    assert verify_images(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".build-")] == []


def test_failed_build_keeps_the_previous_set(tmp_path: Path, kernel_deb: Path) -> None:
    good = build_images("debian", tmp_path, kernel_deb=kernel_deb)
    bogus = tmp_path.parent / "not-a-package.deb"
    bogus.write_bytes(b"this is not a deb")
    with pytest.raises(ImageError) as info:
        build_images("debian", tmp_path, kernel_deb=bogus)
    assert info.value.hint
    assert verify_images(tmp_path) == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".build-")] == []


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        build_images("floppy", tmp_path)
    with pytest.raises(UsageError):
        build_images("online", tmp_path, kernel_deb=tmp_path / "x.deb")
    with pytest.raises(UsageError):
        build_images("online", tmp_path, "mips")
    with pytest.raises(ImageError, match="does not exist"):
        build_images("debian", tmp_path, kernel_deb=tmp_path / "missing.deb")


def test_public_api_is_locked() -> None:
    assert sorted(fc_macos.images.__all__) == ["ImageSet", "SOURCES", "build_images", "read_manifest", "verify_images"]


def test_debian_source_refuses_a_foreign_architecture(tmp_path: Path, kernel_deb: Path) -> None:
    foreign = "aarch64" if build_test_images().arch == "x86_64" else "x86_64"
    with pytest.raises(ImageError, match=f"not built for {foreign}") as info:
        build_images("debian", tmp_path, foreign, kernel_deb=kernel_deb)
    assert "--source online" in (info.value.hint or "")
    assert not (tmp_path / "manifest.json").exists()


def test_the_guest_agent_is_an_input(tmp_path: Path, kernel_deb: Path) -> None:
    agent = tmp_path / "agent-v1"
    agent.write_bytes(guest_agent_binary().read_bytes())
    out = tmp_path / "images"
    build_images("debian", out, kernel_deb=kernel_deb, guest_agent=agent)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["guest_agent_sha256"] == sha256_file(agent)
    same = Recorder()
    build_images("debian", out, kernel_deb=kernel_deb, guest_agent=agent, progress=same)
    assert same.skipped == ["images"]
    # A new agent (another build) makes a new rootfs.
    agent.write_bytes(agent.read_bytes() + b"\0")
    rebuilt = Recorder()
    build_images("debian", out, kernel_deb=kernel_deb, guest_agent=agent, progress=rebuilt)
    assert "rootfs" in rebuilt.steps
    assert json.loads((out / "manifest.json").read_text())["files"]["rootfs.ext4"] != manifest["files"]["rootfs.ext4"]


def test_a_missing_guest_agent_fails_before_building(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="guest agent") as info:
        build_images("online", tmp_path / "images", "x86_64", guest_agent=tmp_path / "no-such-agent")
    assert "fc_macos.guest.build" in (info.value.hint or "")
    assert not (tmp_path / "images" / "downloads").exists()
