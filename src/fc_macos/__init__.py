"""fc-macos: run Firecracker microVMs on Apple Silicon Macs (through Tart) and on
Linux hosts with KVM.

The public API (locked by tests/test_public_api.py)::

    from fc_macos import AgentClient, MicroVMSpec, AgentEndpoint

    endpoint = AgentEndpoint.load()          # saved by 'fc-macos setup'
    async with AgentClient.from_endpoint(endpoint) as agent:
        vm = await agent.create_microvm(MicroVMSpec(name="web", vcpus=2))

``AgentClient`` and ``FirecrackerClient`` pull in aiohttp, so they are imported
on first use; ``import fc_macos`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fc_macos.agent.wire import DriveSpec, MicroVMInfo, MicroVMSpec, SnapshotSpec
from fc_macos.config import AgentEndpoint, Config
from fc_macos.errors import (
    AgentAuthError,
    AgentError,
    AgentRequestError,
    AgentUnreachable,
    BootError,
    ConfigError,
    ConflictError,
    FcMacosError,
    FirecrackerAPIError,
    FirecrackerError,
    FirecrackerUnavailable,
    ImageError,
    NotFoundError,
    ProviderError,
    SetupError,
    TartError,
    UsageError,
    ValidationError,
)

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient
    from fc_macos.firecracker.client import FirecrackerClient

__version__ = "0.1.0"

_LAZY = {
    "AgentClient": "fc_macos.agent.client",
    "FirecrackerClient": "fc_macos.firecracker.client",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fc_macos' has no attribute {name!r}")


__all__ = [
    "AgentAuthError",
    "AgentClient",
    "AgentEndpoint",
    "AgentError",
    "AgentRequestError",
    "AgentUnreachable",
    "BootError",
    "Config",
    "ConfigError",
    "ConflictError",
    "DriveSpec",
    "FcMacosError",
    "FirecrackerAPIError",
    "FirecrackerClient",
    "FirecrackerError",
    "FirecrackerUnavailable",
    "ImageError",
    "MicroVMInfo",
    "MicroVMSpec",
    "NotFoundError",
    "ProviderError",
    "SetupError",
    "SnapshotSpec",
    "TartError",
    "UsageError",
    "ValidationError",
    "__version__",
]
