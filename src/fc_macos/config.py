"""Host-side configuration and state under ``FC_MACOS_HOME``.

``config.json`` holds user choices (provider, VM name, sizes); ``agent.json``
holds the agent endpoint (URL and token) written by setup, mode 0600.
Writes are atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fc_macos.errors import ConfigError
from fc_macos.fsutil import write_json_atomic

DEFAULT_VM_NAME = "fc-macos"
DEFAULT_IMAGE = "ghcr.io/cirruslabs/ubuntu:latest"
PROVIDERS = ("tart", "local")


def home_dir() -> Path:
    """``FC_MACOS_HOME``, else the platform's config directory."""
    env = os.environ.get("FC_MACOS_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "fc-macos"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "fc-macos"


def default_provider() -> str:
    return "tart" if sys.platform == "darwin" else "local"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}",
            hint=f"fix or delete {path}, then run 'fc-macos setup' again",
        ) from exc


@dataclass
class Config:
    """User choices, saved in ``config.json``. Unknown keys are kept as ``extra``."""

    provider: str = field(default_factory=default_provider)
    vm_name: str = DEFAULT_VM_NAME
    image: str = DEFAULT_IMAGE
    cpus: int = 4
    memory_mib: int = 8192
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, home: Path | None = None) -> Config:
        data = read_json((home or home_dir()) / "config.json") or {}
        if not isinstance(data, dict):
            raise ConfigError("config.json must hold a JSON object", hint="delete it and run 'fc-macos setup'")
        known = {k: data[k] for k in ("provider", "vm_name", "image", "cpus", "memory_mib") if k in data}
        extra = {k: v for k, v in data.items() if k not in known}
        cfg = cls(**known, extra=extra)
        if cfg.provider not in PROVIDERS:
            raise ConfigError(
                f"unknown provider {cfg.provider!r} in config.json",
                hint=f"use one of: {', '.join(PROVIDERS)}",
            )
        return cfg

    def save(self, home: Path | None = None) -> None:
        data = asdict(self)
        data.update(data.pop("extra"))
        write_json_atomic((home or home_dir()) / "config.json", data)


@dataclass(frozen=True)
class AgentEndpoint:
    """Where fc-agent listens, the token it wants, and the provider whose setup
    saved it (None in files written before fc-macos recorded it). An endpoint
    of a context (:mod:`fc_macos.contexts`) names it in ``context`` and pins
    the agent's certificate with ``fingerprint`` (``SHA256:...``)."""

    url: str
    token: str
    provider: str | None = None
    fingerprint: str | None = None
    context: str | None = None

    @classmethod
    def load(cls, home: Path | None = None, *, provider: str | None = None) -> AgentEndpoint:
        """The endpoint saved by ``fc-macos setup`` in ``<home>/agent.json``.
        ``ConfigError`` (hint: run setup) when there is none yet, when the file
        is unreadable or incomplete, or, with ``provider``, when another
        provider's setup saved it. Never returns None."""
        endpoint = cls.saved(home)
        path = (home or home_dir()) / "agent.json"
        if endpoint is None:
            raise ConfigError(f"no agent endpoint in {path}: fc-macos is not set up yet",
                              hint="run 'fc-macos setup' first")
        if provider and endpoint.provider and endpoint.provider != provider:
            raise ConfigError(
                f"{path} belongs to the '{endpoint.provider}' provider, not '{provider}': "
                f"'{provider}' is not set up",
                hint=f"drop --provider {provider} to use the '{endpoint.provider}' agent, "
                f"or run 'fc-macos --provider {provider} setup'",
            )
        return endpoint

    @classmethod
    def saved(cls, home: Path | None = None) -> AgentEndpoint | None:
        """Like :meth:`load`, but None when no endpoint was saved yet."""
        data = read_json((home or home_dir()) / "agent.json")
        if not data:
            return None
        try:
            provider = data.get("provider")
            return cls(url=str(data["url"]), token=str(data["token"]),
                       provider=str(provider) if provider else None)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError("agent.json is incomplete", hint="run 'fc-macos setup' again") from exc

    def save(self, home: Path | None = None) -> None:
        data = {"url": self.url, "token": self.token}
        if self.provider:
            data["provider"] = self.provider
        write_json_atomic((home or home_dir()) / "agent.json", data, mode=0o600)
