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

    endpoint = AgentEndpoint.load()          # saved by 'fc-macos setup' (ConfigError before)
    async with AgentClient.from_endpoint(endpoint) as agent:
        vm = await agent.create_microvm(MicroVMSpec(name="web", vcpus=2))

Every name is imported on first use (``_LAZY``): ``import fc_macos`` loads
nothing but the version, so the CLI starts fast; ``connect``, ``aio`` and
``AgentClient`` pull in aiohttp only when a program uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fc_macos._version import __version__

if TYPE_CHECKING:
    from fc_macos import aio
    from fc_macos.agent.client import AgentClient
    from fc_macos.agent.client_streams import ExecResult
    from fc_macos.agent.wire import DriveSpec, MicroVMInfo, MicroVMSpec, SnapshotSpec
    from fc_macos.config import AgentEndpoint, Config
    from fc_macos.errors import (
        AgentAuthError,
        AgentError,
        AgentRequestError,
        AgentTLSError,
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
    from fc_macos.firecracker.client import FirecrackerClient
    from fc_macos.sync import connect

_ERRORS = (
    "AgentAuthError", "AgentError", "AgentRequestError", "AgentTLSError", "AgentUnreachable", "BootError",
    "ConfigError", "ConflictError", "ExecError", "FcMacosError", "FirecrackerAPIError", "FirecrackerError",
    "FirecrackerUnavailable", "GuestAgentUnavailable", "ImageError", "NotFoundError", "ProviderError",
    "SetupError", "TartError", "UsageError", "ValidationError",
)

#: Public name -> the module that defines it, imported on first access (a name equal to
#: its module's last part is the module itself).
_LAZY = {
    **{name: "fc_macos.errors" for name in _ERRORS},
    "AgentClient": "fc_macos.agent.client",
    "AgentEndpoint": "fc_macos.config",
    "Config": "fc_macos.config",
    "DriveSpec": "fc_macos.agent.wire",
    "ExecResult": "fc_macos.agent.client_streams",
    "FirecrackerClient": "fc_macos.firecracker.client",
    "MicroVMInfo": "fc_macos.agent.wire",
    "MicroVMSpec": "fc_macos.agent.wire",
    "SnapshotSpec": "fc_macos.agent.wire",
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


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AgentAuthError",
    "AgentClient",
    "AgentEndpoint",
    "AgentError",
    "AgentRequestError",
    "AgentTLSError",
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
