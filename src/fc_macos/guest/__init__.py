"""The fc-macos guest agent: constants and the bundled binaries.

``fc-guest-agent`` is a small static Linux program (C, built by ``zig cc`` for x86_64 and
aarch64, source in ``guest-agent/`` at the repository root) that runs inside every microVM
and serves exec, files, port connections and info over vsock port
:data:`GUEST_AGENT_PORT`. The wire format is described in ``docs/guest-agent-protocol.md``;
:mod:`fc_macos.guest.protocol` is its Python (asyncio) implementation.

This module stays import-light (no asyncio): the CLI imports it to find binaries.
"""

from __future__ import annotations

import platform
from pathlib import Path

from ..errors import NotFoundError, UsageError

GUEST_AGENT_PORT = 10240
"""The vsock port the guest agent listens on (any CID)."""

PROTOCOL_VERSION = 1
"""The wire protocol version this package speaks (``"v"`` in every request)."""

ARCHES = ("x86_64", "aarch64")
"""The architectures a guest agent binary is built for."""

BIN_DIR = Path(__file__).resolve().parent / "bin"

_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def normalize_arch(arch: str | None = None) -> str:
    """``arch`` (default: this machine's) as one of :data:`ARCHES` (``arm64`` -> ``aarch64``).

    Raises :class:`~fc_macos.errors.UsageError` for an architecture with no guest agent.
    """
    name = (arch or platform.machine()).lower()
    try:
        return _ALIASES[name]
    except KeyError:
        raise UsageError(
            f"no guest agent for architecture {name!r}",
            hint=f"use one of {', '.join(ARCHES)}",
        ) from None


def binary_path(arch: str | None = None) -> Path:
    """The bundled ``fc-guest-agent`` binary for ``arch`` (default: this machine's).

    Raises :class:`~fc_macos.errors.NotFoundError` with a hint when it has not been built
    (an editable install from a fresh checkout), and ``UsageError`` for an unknown arch.
    """
    name = normalize_arch(arch)
    path = BIN_DIR / f"fc-guest-agent-{name}"
    if not path.is_file():
        raise NotFoundError(
            f"the guest agent binary for {name} is missing ({path})",
            hint="build it with `python -m fc_macos.guest.build` (needs `pip install ziglang`), "
            "or reinstall fc-macos with `python3 -m pip install .`",
        )
    return path


__all__ = ["ARCHES", "BIN_DIR", "GUEST_AGENT_PORT", "PROTOCOL_VERSION", "binary_path", "normalize_arch"]
