"""Host-side configuration and state under ``FC_MACOS_HOME``.

``config.json`` holds user choices (provider, VM name, sizes); ``agent.json``
holds the agent endpoint (URL and token) written by setup, mode 0600.
Writes are atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fc_macos.errors import ConfigError

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


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write ``data`` as JSON to ``path`` atomically, with permission ``mode``:
    a temporary file is written and fsynced, renamed over ``path``, and the
    directory is fsynced so that the rename itself survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    """Where fc-agent listens and the token it wants."""

    url: str
    token: str

    @classmethod
    def load(cls, home: Path | None = None) -> AgentEndpoint | None:
        data = read_json((home or home_dir()) / "agent.json")
        if not data:
            return None
        try:
            return cls(url=str(data["url"]), token=str(data["token"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError("agent.json is incomplete", hint="run 'fc-macos setup' again") from exc

    @classmethod
    def require(cls, home: Path | None = None) -> AgentEndpoint:
        """The saved endpoint; ``ConfigError`` saying to run setup when there is none."""
        endpoint = cls.load(home)
        if endpoint is None:
            path = (home or home_dir()) / "agent.json"
            raise ConfigError(f"no agent endpoint in {path}", hint="run 'fc-macos setup' first")
        return endpoint

    def save(self, home: Path | None = None) -> None:
        write_json_atomic((home or home_dir()) / "agent.json", {"url": self.url, "token": self.token}, mode=0o600)
