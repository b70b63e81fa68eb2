"""A TartProvider set up end to end against the Tart double, shared by the
provider tests (one VM per test module: a setup takes ~30 s here).

    @pytest.fixture(scope="module")
    def world(tmp_path_factory):
        with tart_world(tmp_path_factory.mktemp("tart-x"), "fc-x", World) as w:
            yield w
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fc_macos.agent_sync import BlockingAgent
from fc_macos.config import AgentEndpoint, Config
from fc_macos.providers.base import SetupOptions
from fc_macos.providers.tart import TartProvider
from tests.doubles.tart_double.fixtures import TART, TartDouble, cannot_run_vms
from tests.helpers.progress import RecordingProgress

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"


def agent_health(url: str) -> dict[str, Any]:
    """``GET /healthz`` of the agent at ``url``."""
    with BlockingAgent(url, timeout=5) as agent:
        return agent.health()


def agent_info(url: str, token: str) -> dict[str, Any]:
    """``GET /v1/info`` of the agent at ``url`` with ``token`` (AgentAuthError when refused)."""
    with BlockingAgent(url, token, timeout=5) as agent:
        return agent.info()


@dataclass
class World:
    home: Path
    tart: TartDouble
    provider: TartProvider
    options: SetupOptions
    endpoint: AgentEndpoint
    progress: RecordingProgress

    @property
    def root(self) -> Path:
        return self.tart.vm_root(self.provider.vm_name)


W = TypeVar("W", bound=World)


@contextmanager
def tart_world(base: Path, vm_name: str, world: type[W], **env: str) -> Iterator[W]:
    """Set up VM ``vm_name`` of a private Tart double under ``base`` (test VMM as
    Firecracker, the offline guest images), with ``env`` set for the double, and
    describe it as a ``world``; skips when this machine cannot run the double's
    VMs; stops them all at the end."""
    reason = cannot_run_vms()
    if reason:
        pytest.skip(reason)
    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TART_HOME", str(base / "tart-home"))
        mp.setenv("FC_MACOS_TART", str(TART))
        for key, value in env.items():
            mp.setenv(key, value)
        tart = TartDouble(TART, base / "tart-home")
        home = base / "fc-home"
        provider = TartProvider(home, Config(provider="tart", vm_name=vm_name))
        options = SetupOptions(cpus=2, memory_mib=2048, firecracker_bin=TEST_VMM,
                               kernel=images.kernel, initrd=images.initrd, rootfs=images.rootfs)
        progress = RecordingProgress()
        try:
            endpoint = provider.setup(options, progress)
            yield world(home, tart, provider, options, endpoint, progress)
        finally:
            tart.stop_all()
