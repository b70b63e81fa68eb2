"""The provider interface: one backend for the machine that runs fc-agent.

Two implementations picked by name (``--provider`` or ``config.json``):
``tart`` (a Linux VM driven through the Tart CLI, the default on macOS) and
``local`` (fc-agent on this Linux machine, the default on Linux); and
``remote`` (:mod:`fc_macos.providers.remote`), an fc-agent on another machine
picked by a context (``--context``), which drives no machine and has no Host.

Each backend is split in two (lima's driver / host-agent split):

* :class:`Provider` owns the machine's lifecycle: status, start, stop, a shell,
  the agent's log, doctor. ``setup`` and ``vm_start`` are the shared pipeline
  (:mod:`fc_macos.providers.pipeline`) run over the provider's host.
* :class:`Host` is the machine as one setup run sees it: the named steps that
  bring it up, then a small interface (run a command, put a file, start the
  agent, the agent's URL). The pipeline installs Firecracker, fc-agent, the
  guest images and the token through it, the same way for every provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fc_macos.config import AgentEndpoint, Config
from fc_macos.progress import Progress

if TYPE_CHECKING:
    from fc_macos.providers.setup_steps import Step


@dataclass(frozen=True)
class SetupOptions:
    cpus: int | None = None
    memory_mib: int | None = None
    force: bool = False
    skip_assets: bool = False
    vm_name: str | None = None
    image: str | None = None
    firecracker_bin: Path | None = None
    firecracker_mirror: str | None = None  # replaces the release host (firecracker_release)
    images: Path | None = None  # an image set made by 'fc-macos images build'
    kernel: Path | None = None
    initrd: Path | None = None
    rootfs: Path | None = None


@dataclass(frozen=True)
class AgentLayout:
    """Where fc-agent's files live on its machine (paths as that machine sees them)."""

    firecracker: str
    token_file: str
    state_dir: str

    @property
    def images_dir(self) -> str:
        return f"{self.state_dir}/images"


@dataclass(frozen=True)
class VMStatus:
    """The Linux VM (or, for ``local``, the agent process) as a provider sees it."""

    name: str
    provider: str
    exists: bool
    running: bool
    state: str  # "running" | "stopped" | "missing" | "suspended" | "unreachable" (remote)
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


@dataclass(frozen=True)
class StopReport:
    """What ``vm_stop`` did: the machine's status after it, and a sentence saying
    what became of the microVMs (stopped with the VM, or still running)."""

    status: VMStatus
    message: str


class Host(Protocol):
    """The machine that runs fc-agent, during one setup (or ``vm start``) run.

    Made by :meth:`Provider.open_host`; :meth:`close` ends the run (stops any
    helper it started, removes its temporary files). Every method but
    ``machine_steps``/``start_steps`` needs those steps to have run.
    """

    layout: AgentLayout
    cleanups: list[Callable[[], None]]

    def machine_steps(self) -> list[Step]:
        """The named steps that make the machine (check, create, start, inspect);
        each one idempotent (``Skipped`` when done)."""

    def start_steps(self) -> list[Step]:
        """The steps that start an existing machine (``vm start``)."""

    def arch(self) -> str:
        """The machine's architecture as ``uname -m`` says it (``x86_64``, ``aarch64``)."""

    def run(self, script: str, *args: str, check: bool = True, timeout: float | None = 120.0) -> tuple[int, str, str]:
        """``sh -c SCRIPT sh ARGS...`` as the agent's user (root in the Tart VM):
        (exit code, stdout, stderr). With ``check`` a non-zero exit raises
        ``ProviderError`` carrying stderr."""

    def put_file(self, src: Path, dest: str, *, mode: str = "0644") -> bool:
        """Copy this machine's ``src`` to ``dest`` unless ``dest`` already holds its
        bytes (checked by SHA-256); atomic. The bytes copied are reported through
        ``progress.transfer`` (named after ``dest``'s file name). True if ``dest`` changed."""

    def put_secret(self, dest: str, text: str) -> None:
        """Write ``text`` to ``dest`` with mode 0600 (never visible in a process list)."""

    def read_secret(self, path: str) -> str | None:
        """The text of ``path`` (stripped), or None when it does not exist."""

    def install_agent(self, force: bool) -> str:
        """Make fc-agent runnable on the machine; ``Skipped`` when it already is."""

    def build_images(self, source: str, force: bool) -> None:
        """``fc-macos images build --source SOURCE`` into the layout's image
        directory, on the machine (ImageError or ProviderError on failure)."""

    def start_agent(self) -> str:
        """(Re)start fc-agent with the layout's files; returns how it runs.
        Does not wait for it to answer."""

    def agent_url(self) -> str:
        """Where fc-agent listens (valid after the machine steps)."""

    def agent_alive(self) -> bool | None:
        """Whether the agent's process runs (None: the host cannot tell)."""

    def agent_log_tail(self, lines: int = 20) -> str:
        """The agent log's last lines, for error messages."""

    def close(self) -> None:
        """End the run; idempotent."""


class Provider(Protocol):
    name: str
    home: Path
    config: Config

    def open_host(self, options: SetupOptions, progress: Progress) -> Host:
        """The machine for one setup or ``vm start`` run (closed by the caller)."""

    def setup(self, options: SetupOptions, progress: Progress) -> AgentEndpoint:
        """Make the agent ready and save its endpoint. Idempotent: steps already
        done are skipped (reported with ``progress.skip``); ``options.force``
        rebuilds from scratch. Holds a lock so that two setups cannot race (the
        second raises ``ConflictError``). On failure raises ``SetupError`` naming the
        step and leaves nothing half-made that a re-run would trip over."""

    def endpoint(self) -> AgentEndpoint:
        """The agent endpoint this provider's setup saved; ``ConfigError`` (hint:
        run setup) when missing or saved by another provider. Never starts anything."""

    def vm_status(self) -> VMStatus:
        """Never raises for a missing or stopped VM: reports it."""

    def vm_start(self, progress: Progress) -> VMStatus:
        """Start the machine and the agent; a no-op when they run. Requires setup."""

    def vm_stop(self, *, force: bool = False) -> StopReport:
        """Stop the agent's machine; a no-op when stopped. What happens to the
        microVMs is the provider's (said in the report): ``tart`` stops the VM and so
        every microVM in it; ``local`` stops only the agent unless ``force``."""

    def vm_shell(self, command: list[str] | None = None) -> int:
        """Interactive shell (or ``command``) on the machine; returns its exit code."""

    def vm_logs(self, *, follow: bool = False) -> Iterator[str]:
        """The agent's log lines (and the VM's, where the provider has them)."""

    def doctor(self) -> list[Check]:
        """Check every prerequisite; never raises."""
