"""The provider interface: one backend for the Linux VM that hosts fc-agent.

Two implementations, picked by name (``--provider`` or ``config.json``):
``tart`` (a Linux VM driven through the Tart CLI, the default on macOS) and
``local`` (fc-agent on this Linux machine, the default on Linux).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from fc_macos.config import AgentEndpoint, Config
from fc_macos.progress import Progress


@dataclass(frozen=True)
class SetupOptions:
    cpus: int | None = None
    memory_mib: int | None = None
    force: bool = False
    skip_assets: bool = False
    vm_name: str | None = None
    image: str | None = None
    firecracker_bin: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    rootfs: Path | None = None


@dataclass(frozen=True)
class VMStatus:
    """The Linux VM (or, for ``local``, the agent process) as a provider sees it."""

    name: str
    provider: str
    exists: bool
    running: bool
    state: str  # "running" | "stopped" | "missing" | "suspended"
    address: str | None = None
    agent_url: str | None = None
    agent_ok: bool = False
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One prerequisite checked by ``doctor``; ``fix`` says what to do when it fails."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None


class Provider(Protocol):
    name: str
    home: Path
    config: Config

    def setup(self, options: SetupOptions, progress: Progress) -> AgentEndpoint:
        """Make the agent ready and save its endpoint. Idempotent: steps already
        done are skipped (reported with ``progress.skip``); ``options.force``
        rebuilds from scratch. Holds a lock so that two setups cannot race (the
        second raises ``ConflictError``). On failure raises ``SetupError`` naming the
        step and leaves nothing half-made that a re-run would trip over."""

    def endpoint(self) -> AgentEndpoint:
        """The saved agent endpoint; ``ConfigError`` (hint: run setup) when missing.
        Never starts anything."""

    def vm_status(self) -> VMStatus:
        """Never raises for a missing or stopped VM: reports it."""

    def vm_start(self, progress: Progress) -> VMStatus:
        """Start the VM and the agent; a no-op when running. Requires setup."""

    def vm_stop(self, *, force: bool = False) -> VMStatus:
        """Stop the VM (and so every microVM in it); a no-op when stopped."""

    def vm_shell(self, command: list[str] | None = None) -> int:
        """Interactive shell (or ``command``) in the VM; returns its exit code."""

    def vm_logs(self, *, follow: bool = False) -> Iterator[str]:
        """The agent's log lines (and the VM's, where the provider has them)."""

    def doctor(self) -> list[Check]:
        """Check every prerequisite; never raises."""
