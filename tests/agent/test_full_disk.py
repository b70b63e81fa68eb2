"""A full disk refuses a create with 507 ``no_space`` (how much is free and
needed, how to grow the disk) and leaves nothing of it behind: no microVM in
the list (none stuck ``starting``), no work directory, no partial rootfs copy.
The state directory is a small tmpfs mounted for the test (root only)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent import disk_space
from fc_macos.agent.settings import AgentSettings
from fc_macos.errors import NoSpaceError
from tests.agent.test_app import error_of
from tests.helpers.agent import AUTH, live_processes_mentioning, served

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root: run the tests as root")

MIB = 1024 * 1024


@contextmanager
def tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of ``size_mib`` MiB mounted at ``path`` for the block; unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(settings: AgentSettings, short_tmp: Path) -> Iterator[AgentSettings]:
    """``settings`` whose state directory is a 24 MiB tmpfs."""
    with tmpfs(settings.state_dir, 24):
        yield settings


def fill(directory: Path, leave_bytes: int = 0) -> Path:
    """Fill the filesystem of ``directory`` up to ``leave_bytes`` free; the filler file."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        try:
            while (free := disk_space.free_bytes(directory)) > leave_bytes:
                out.write(b"\xff" * min(MIB, free - leave_bytes))
                out.flush()
        except OSError:
            pass  # full
    return filler


def nothing_left_of(settings: AgentSettings) -> None:
    assert sorted(p.name for p in settings.microvms_dir.iterdir()) == []
    assert live_processes_mentioning(str(settings.microvms_dir)) == []


async def assert_no_space(client: TestClient, spec: dict[str, object]) -> dict[str, object]:
    body = await error_of(await client.post("/v1/microvms", json=spec, headers=AUTH), 507)
    assert body["error"] == "no_space"
    assert "MiB free" in str(body["message"])
    assert "tart set fc-macos --disk-size" in str(body["hint"]) and "fc-macos microvm rm" in str(body["hint"])
    listed = (await (await client.get("/v1/microvms", headers=AUTH)).json())["microvms"]
    assert listed == []
    return body


async def test_a_rootfs_that_does_not_fit_is_refused_before_the_copy(
    small_disk: AgentSettings, image_dir: Path
) -> None:
    (image_dir / "big.ext4").write_bytes(b"\0" * (20 * MIB))
    async with served(small_disk) as client:
        body = await assert_no_space(client, {"name": "big", "rootfs": "big.ext4", "start": False})
        assert "rootfs copy of microVM 'big'" in str(body["message"]) and "28.0 MiB needed" in str(body["message"])
        nothing_left_of(small_disk)
        # the agent goes on: a rootfs that fits is created
        resp = await client.post("/v1/microvms", json={"name": "small", "start": False}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        assert (await client.delete("/v1/microvms/small", params={"force": "true"}, headers=AUTH)).status == 204
        nothing_left_of(small_disk)


async def test_a_disk_too_full_for_the_record_refuses_the_create_and_recovers_once_freed(
    small_disk: AgentSettings,
) -> None:
    async with served(small_disk) as client:
        filler = fill(small_disk.state_dir)
        body = await assert_no_space(client, {"name": "full", "start": False})
        assert "record of microVM 'full'" in str(body["message"])
        nothing_left_of(small_disk)
        filler.unlink()
        resp = await client.post("/v1/microvms", json={"name": "full", "start": False}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["state"] == "created"


def test_a_copy_that_fills_the_disk_half_way_leaves_no_partial_file(short_tmp: Path) -> None:
    source = short_tmp / "source.ext4"
    source.write_bytes(b"\1" * (6 * MIB))
    with tmpfs(short_tmp / "disk", 4) as disk:
        with pytest.raises(NoSpaceError) as info:
            disk_space.copy_file(source, disk / "copy.ext4", "the rootfs copy of microVM 'x'")
        assert list(disk.iterdir()) == []
        assert "6.0 MiB needed" in info.value.message and "tart set" in str(info.value.hint)


def test_ensure_free_counts_the_reserve(short_tmp: Path) -> None:
    with tmpfs(short_tmp / "disk", 16) as disk:
        disk_space.ensure_free("a small file", disk, MIB)
        with pytest.raises(NoSpaceError) as info:
            disk_space.ensure_free("a large file", disk, 10 * MIB)
        assert "16.0 MiB free, 18.0 MiB needed" in info.value.message
