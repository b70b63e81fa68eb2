"""Where spec file names resolve: bare names in the image dirs, absolute paths only inside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fc_macos.agent.paths import find_default, resolve_file
from fc_macos.errors import NotFoundError, ValidationError


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "images", tmp_path / "more"
    first.mkdir()
    second.mkdir()
    (first / "vmlinux").write_text("k1")
    (second / "vmlinux").write_text("k2")
    (second / "other.ext4").write_text("r")
    (second / "sub").mkdir()
    (second / "sub" / "disk.img").write_text("d")
    (tmp_path / "secret").write_text("s")
    (second / "link.img").symlink_to(tmp_path / "secret")
    return first, second


def test_bare_names_resolve_in_order(dirs: tuple[Path, Path]) -> None:
    first, second = dirs
    assert resolve_file("kernel", "vmlinux", dirs) == first / "vmlinux"
    assert resolve_file("rootfs", "other.ext4", dirs) == second / "other.ext4"
    assert resolve_file("drive", "sub/disk.img", dirs) == second / "sub" / "disk.img"


def test_absolute_paths_inside_are_accepted(dirs: tuple[Path, Path]) -> None:
    assert resolve_file("rootfs", str(dirs[1] / "other.ext4"), dirs) == dirs[1] / "other.ext4"


def test_symlink_placed_in_an_image_dir_is_trusted(dirs: tuple[Path, Path]) -> None:
    assert resolve_file("drive", "link.img", dirs) == dirs[1] / "link.img"


@pytest.mark.parametrize("value", ["../secret", "sub/../../secret", "/etc/hostname"])
def test_escaping_paths_are_refused_listing_the_dirs(dirs: tuple[Path, Path], value: str) -> None:
    with pytest.raises(ValidationError) as info:
        resolve_file("rootfs", value, dirs)
    assert "outside the directories the agent serves images from" in info.value.message
    assert str(dirs[0]) in info.value.hint and str(dirs[1]) in info.value.hint


def test_missing_file_names_the_file(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(NotFoundError) as info:
        resolve_file("initrd", "initrd.img", dirs)
    assert "initrd.img" in info.value.message
    with pytest.raises(NotFoundError):
        resolve_file("rootfs", str(dirs[0] / "gone.ext4"), dirs)


def test_find_default(dirs: tuple[Path, Path]) -> None:
    assert find_default("vmlinux", dirs) == dirs[0] / "vmlinux"
    assert find_default("initrd.img", dirs) is None
