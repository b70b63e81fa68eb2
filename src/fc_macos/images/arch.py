"""Guest architectures: the two Firecracker supports, under their several names."""

from __future__ import annotations

import platform

from fc_macos.errors import UsageError

ARCHES = ("x86_64", "aarch64")
_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def normalize_arch(arch: str | None = None) -> str:
    """``"x86_64"`` or ``"aarch64"`` for ``arch`` (any usual spelling); the host's when None."""
    name = (arch or platform.machine()).lower()
    try:
        return _ALIASES[name]
    except KeyError:
        raise UsageError(f"unsupported architecture {name!r}", hint="use x86_64 or aarch64") from None


def debian_arch(arch: str) -> str:
    """Debian's name for ``arch``: ``amd64`` or ``arm64``."""
    return {"x86_64": "amd64", "aarch64": "arm64"}[normalize_arch(arch)]
