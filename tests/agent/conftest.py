"""Fixtures for fc-agent tests: a short state directory (Unix socket paths are
limited to 107 bytes), the app served in-process on a real TCP port, the test
VMM (tests/doubles/firecracker_vmm.py) as the Firecracker binary, and the
offline guest images as an image directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fc_macos.agent.app import create_app
from fc_macos.agent.settings import AgentSettings
from fc_macos.firecracker.launcher import proc_start_time

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fca-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def image_dir(short_tmp: Path) -> Path:
    """An extra image directory holding a small non-kernel 'vmlinux' and a rootfs."""
    d = short_tmp / "img"
    d.mkdir()
    (d / "vmlinux").write_bytes(b"not an ELF kernel\n")
    (d / "rootfs.ext4").write_bytes(b"\0" * 4096)
    return d


@pytest.fixture
def settings(short_tmp: Path, image_dir: Path) -> AgentSettings:
    return AgentSettings(
        token=TOKEN,
        state_dir=short_tmp / "state",
        firecracker_bin=str(TEST_VMM),
        image_dirs=(image_dir,),
    )


async def serve(settings: AgentSettings) -> TestClient:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


def kill_recorded_vmms(state_dir: Path) -> None:
    """Safety net: SIGKILL every VMM state.json still names (a test that failed
    half-way must not leave QEMU guests behind)."""
    try:
        state = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return
    for record in state.get("microvms", {}).values():
        pid, start = record.get("pid"), record.get("start_time")
        if pid and start and proc_start_time(pid) == start:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def client(settings: AgentSettings) -> AsyncIterator[TestClient]:
    """The agent app on a local port; requests carry no token unless given ``headers=AUTH``."""
    c = await serve(settings)
    try:
        yield c
    finally:
        await c.close()
        kill_recorded_vmms(settings.state_dir)
