"""The deliberate public API of ``fc_macos``: changes to it must be seen here."""

from __future__ import annotations

import subprocess
import sys

import fc_macos

PUBLIC = [
    "AgentAuthError", "AgentClient", "AgentEndpoint", "AgentError", "AgentRequestError", "AgentTLSError",
    "AgentUnreachable", "BootError", "Config", "ConfigError", "ConflictError", "DriveSpec", "ExecError", "ExecResult",
    "FcMacosError",
    "FirecrackerAPIError", "FirecrackerClient", "FirecrackerError", "FirecrackerUnavailable", "GuestAgentUnavailable",
    "ImageError", "MicroVMInfo", "MicroVMSpec", "NotFoundError", "ProviderError", "SetupError", "SnapshotSpec",
    "TartError", "UsageError", "ValidationError", "__version__", "aio", "connect",
]


def test_all_is_locked() -> None:
    assert sorted(fc_macos.__all__) == sorted(PUBLIC)


def test_every_public_name_resolves_to_the_real_thing() -> None:
    import fc_macos.aio
    import fc_macos.sync
    from fc_macos.agent.client import AgentClient
    from fc_macos.agent.client_streams import ExecResult
    from fc_macos.errors import FcMacosError
    from fc_macos.firecracker.client import FirecrackerClient

    for name in PUBLIC:
        assert getattr(fc_macos, name) is not None, name
    assert fc_macos.AgentClient is AgentClient
    assert fc_macos.FirecrackerClient is FirecrackerClient
    assert fc_macos.ExecResult is ExecResult
    assert fc_macos.connect is fc_macos.sync.connect
    assert fc_macos.aio is sys.modules["fc_macos.aio"] and fc_macos.aio.connect is not fc_macos.connect
    assert issubclass(fc_macos.NotFoundError, FcMacosError)
    assert fc_macos.__version__ == "0.1.0"


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        fc_macos.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("fc_macos.NoSuchThing resolved")


def test_importing_the_package_does_not_import_aiohttp() -> None:
    code = "import sys, fc_macos; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
