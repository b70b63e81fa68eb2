"""fc-macos: run Firecracker microVMs on Apple Silicon Macs (through Tart) and on
Linux hosts with KVM.

The public API (locked by tests/test_public_api.py). microVMs as sandboxes::

    import fc_macos

    with fc_macos.connect() as fc:           # the endpoint 'fc-macos setup' saved
        vm = fc.run(name="box")              # booted, guest agent ready
        print(vm.exec(["uname", "-a"]).stdout)
        vm.delete()

The same with ``await`` on ``fc_macos.aio.connect()``. The agent's own API::

    from fc_macos import AgentClient, MicroVMSpec, AgentEndpoint

    endpoint = AgentEndpoint.load()          # saved by 'fc-macos setup'
    async with AgentClient.from_endpoint(endpoint) as agent:
        vm = await agent.create_microvm(MicroVMSpec(name="web", vcpus=2))

``connect``, ``aio``, ``ExecResult``, ``AgentClient`` and ``FirecrackerClient``
pull in aiohttp, so they are imported on first use; ``import fc_macos`` stays
light (the CLI starts fast).
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
    ExecError,
    FcMacosError,
    FirecrackerAPIError,
    FirecrackerError,
    FirecrackerUnavailable,
    GuestAgentUnavailable,
    ImageError,
    NotFoundError,
    ProviderError,
    SetupError,
    TartError,
    UsageError,
    ValidationError,
)

if TYPE_CHECKING:
    from fc_macos import aio
    from fc_macos.agent.client import AgentClient
    from fc_macos.agent.client_streams import ExecResult
    from fc_macos.firecracker.client import FirecrackerClient
    from fc_macos.sync import connect

__version__ = "0.1.0"

#: name -> the module that defines it (a name equal to its module's last part is the module).
_LAZY = {
    "AgentClient": "fc_macos.agent.client",
    "ExecResult": "fc_macos.agent.client_streams",
    "FirecrackerClient": "fc_macos.firecracker.client",
    "aio": "fc_macos.aio",
    "connect": "fc_macos.sync",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        module = import_module(_LAZY[name])
        value = module if _LAZY[name].rpartition(".")[2] == name else getattr(module, name)
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
    "ExecError",
    "ExecResult",
    "FcMacosError",
    "FirecrackerAPIError",
    "FirecrackerClient",
    "FirecrackerError",
    "FirecrackerUnavailable",
    "GuestAgentUnavailable",
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
    "aio",
    "connect",
]
