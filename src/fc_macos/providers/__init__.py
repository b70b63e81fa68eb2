"""Providers: the backends that run fc-agent (see :mod:`fc_macos.providers.base`).

:func:`get_provider` picks one by name and imports only that one. The
``remote`` provider is not picked by name but by a context
(:class:`fc_macos.providers.remote.RemoteProvider`, made by the CLI's AppState).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from fc_macos.config import PROVIDERS, Config
from fc_macos.errors import ConfigError

if TYPE_CHECKING:
    from fc_macos.providers.base import Provider

_CLASSES = {
    "tart": ("fc_macos.providers.tart", "TartProvider"),
    "local": ("fc_macos.providers.local", "LocalProvider"),
}


def get_provider(name: str, home: Path, config: Config) -> Provider:
    """The provider called ``name`` (``tart`` or ``local``) for ``home``/``config``.
    ``ConfigError`` for an unknown name."""
    if name not in _CLASSES:
        raise ConfigError(f"unknown provider {name!r}", hint=f"use one of: {', '.join(PROVIDERS)}")
    module, cls = _CLASSES[name]
    provider_cls = getattr(import_module(module), cls)
    return provider_cls(home=home, config=config)  # type: ignore[no-any-return]


__all__ = ["get_provider"]
