"""``fc-macos images``: invoked in-process with CliRunner, standalone and in the root group."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fc_macos.cli.images import images
from fc_macos.cli.main import cli
from tests.helpers.guest_images import build_test_images, default_cache_dir, find_kernel_deb


def test_build_then_list_as_json(tmp_path: Path) -> None:
    built = build_test_images()  # skips with the reason when the kernel package is absent
    deb = find_kernel_deb(default_cache_dir())
    out = tmp_path / "imgs"
    result = CliRunner().invoke(images, ["build", "--source", "debian", "--out", str(out), "--kernel-deb", str(deb), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["kernel"] == str(out / "vmlinux")
    assert data["initrd"] == str(out / "initrd.img")
    assert data["kernel_format"] == built.kernel_format and data["source"] == "debian"
    assert data["install"] == f"fc-macos setup --images {out.resolve()}"

    result = CliRunner().invoke(cli, ["images", "list", str(out)])
    assert result.exit_code == 0, result.output
    assert f"rootfs:  {out / 'rootfs.ext4'}" in result.output

    result = CliRunner().invoke(images, ["build", "--source", "debian", "--out", str(out), "--kernel-deb", str(deb)])
    assert result.exit_code == 0
    assert "up to date (skipped)" in result.output
    assert result.output.rstrip().endswith(f"Install them with: fc-macos setup --images {out.resolve()}")


def test_errors_show_hint_and_exit_code(tmp_path: Path) -> None:
    result = CliRunner().invoke(images, ["list", str(tmp_path), "--json"])
    assert result.exit_code == 1
    first_line = result.stdout.splitlines()[0]
    assert json.loads(first_line)["error"] == "image"
    assert "Hint: build the images with 'fc-macos images build'" in result.output

    result = CliRunner().invoke(cli, ["images", "build", "--source", "online", "--out", str(tmp_path),
                                      "--kernel-deb", __file__])
    assert result.exit_code == 2
    assert "--kernel-deb only applies to the debian source" in result.output


def test_help_has_examples() -> None:
    result = CliRunner().invoke(images, ["build", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "--source" in result.output
