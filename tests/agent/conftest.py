"""Fixtures for fc-agent tests: a short state directory (Unix socket paths are
limited to 107 bytes), the app served in-process on a real TCP port, the test
VMM (tests/doubles/firecracker_vmm.py) as the Firecracker binary, and the
offline guest images as an image directory. The helpers they use live in
tests/helpers/agent.py (import them from there)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import (  # noqa: F401  (re-exported for the modules that import them from here)
    AUTH,
    GUEST_BOOT_ARGS,
    PROMPT_TIMEOUT_S,
    REPO,
    SHELL_PROMPT,
    TEST_VMM,
    TOKEN,
    ConsoleReader,
    kill_recorded_vmms,
    live_processes_mentioning,
    needs_net_admin,
    serve,
    served,
)


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
        nat=False,  # tests never touch this machine's firewall or ip_forward
    )


@pytest.fixture
async def client(settings: AgentSettings) -> AsyncIterator[TestClient]:
    """The agent app on a local port; requests carry no token unless given ``headers=AUTH``."""
    async with served(settings) as c:
        yield c


@pytest.fixture
def guest_settings(settings: AgentSettings) -> AgentSettings:
    """Settings whose image directory holds the offline guest images
    (vmlinux, initrd.img, rootfs.ext4): the defaults boot a real guest."""
    from dataclasses import replace

    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    return replace(settings, image_dirs=(images.kernel.parent,))
