"""The ext4 rootfs: contents checked with debugfs (e2fsprogs), built without root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fc_macos.errors import ImageError
from fc_macos.images.arch import normalize_arch
from fc_macos.images.initramfs import init_script
from fc_macos.images.rootfs import MARKER_TEXT, check_guest_agent, install_init, make_ext4, populate_busybox_tree
from tests.helpers.guest_images import guest_agent_binary

BUSYBOX = Path("/bin/busybox")


def debugfs(image: Path, request: str) -> str:
    tool = shutil.which("debugfs") or shutil.which("debugfs", path="/sbin:/usr/sbin")
    if tool is None:
        pytest.skip("debugfs is missing: apt-get install e2fsprogs")
    return subprocess.run([tool, "-R", request, str(image)], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def busybox() -> Path:
    if not BUSYBOX.exists():
        pytest.skip("/bin/busybox is missing: apt-get install busybox-static")
    return BUSYBOX


def test_busybox_rootfs_has_init_busybox_links_and_console(tmp_path: Path, busybox: Path) -> None:
    tree = tmp_path / "tree"
    agent = guest_agent_binary()
    populate_busybox_tree(tree, busybox, hostname="guest-one", guest_agent=agent)
    image = tmp_path / "rootfs.ext4"
    make_ext4(tree, image, size_mib=40)
    assert image.stat().st_size == 40 << 20

    top = debugfs(image, "ls -l /")
    names = {line.split()[-1] for line in top.splitlines() if line.strip()}
    assert {"init", "bin", "sbin", "etc", "dev", "proc", "sys", "tmp"} <= names
    assert debugfs(image, "cat /init") == init_script("rootfs-init.sh").decode()
    assert "Welcome to Firecracker microVM!" in debugfs(image, "cat /init")
    assert debugfs(image, "cat /etc/hostname") == "guest-one\n"
    assert f"Size: {busybox.stat().st_size}" in debugfs(image, "stat /bin/busybox")
    assert "Fast link dest: \"../init\"" in debugfs(image, "stat /sbin/init")
    assert "busybox" in debugfs(image, "stat /sbin/getty")  # an applet link
    assert "busybox" in debugfs(image, "stat /bin/sh")
    console = debugfs(image, "stat /dev/console")
    assert "Type: character special" in console and "Mode:  0600" in console
    stat = debugfs(image, "stat /sbin/fc-guest-agent")
    assert "Type: regular" in stat and "Mode:  0755" in stat and f"Size: {agent.stat().st_size}" in stat
    assert "User:     0   Group:     0" in stat
    assert debugfs(image, "cat /etc/fc-macos-image") == MARKER_TEXT
    assert "/sbin/fc-guest-agent --supervise" in debugfs(image, "cat /init")


def test_install_init_replaces_an_existing_sbin_init(tmp_path: Path) -> None:
    (tmp_path / "sbin").mkdir()
    (tmp_path / "sbin" / "init").symlink_to("/bin/busybox")  # what Alpine ships
    (tmp_path / "sbin" / "fc-guest-agent").symlink_to("/nowhere")
    agent = tmp_path / "agent-build"
    agent.write_bytes(b"agent bytes")
    agent.chmod(0o600)
    install_init(tmp_path, guest_agent=agent)
    assert (tmp_path / "sbin" / "init").readlink() == Path("../init")
    assert (tmp_path / "init").read_bytes() == init_script("rootfs-init.sh")
    assert (tmp_path / "init").stat().st_mode & 0o111
    installed = tmp_path / "sbin" / "fc-guest-agent"
    assert not installed.is_symlink() and installed.read_bytes() == b"agent bytes"
    assert installed.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "etc" / "fc-macos-image").read_text() == MARKER_TEXT


def test_guest_agent_must_be_a_static_binary_for_the_arch(tmp_path: Path, busybox: Path) -> None:
    agent = guest_agent_binary("x86_64")
    check_guest_agent(agent, "x86_64")
    with pytest.raises(ImageError, match="not built for aarch64") as info:
        check_guest_agent(agent, "aarch64")
    assert "--arch aarch64" in (info.value.hint or "")
    check_guest_agent(guest_agent_binary("aarch64"), "aarch64")
    with pytest.raises(ImageError, match="dynamically linked"):
        check_guest_agent(Path("/bin/true"), normalize_arch())  # a dynamic executable on Debian/Ubuntu hosts
    not_elf = tmp_path / "script"
    not_elf.write_text("#!/bin/sh\n")
    with pytest.raises(ImageError):
        check_guest_agent(not_elf, "x86_64")


def test_default_size_leaves_room_for_the_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "data").mkdir(parents=True)
    (tree / "data" / "blob").write_bytes(b"\1" * (30 << 20))
    make_ext4(tree, tmp_path / "r.ext4")
    assert (tmp_path / "r.ext4").stat().st_size >= 45 << 20
    assert "Size: 31457280" in debugfs(tmp_path / "r.ext4", "stat /data/blob")
