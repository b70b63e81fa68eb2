"""``LocalProvider``: fc-agent on this Linux machine (needs /dev/kvm); no VM in between.

Files under ``<home>/local/``::

    local.json          the agent's port
    agent.token         the agent's token (0600)
    agent.pid, agent.log
    bin/firecracker     the Firecracker binary the agent runs
    state/              the agent's state directory; state/images/ holds the guest images

Setup is the shared pipeline (:mod:`fc_macos.providers.pipeline`) over
:class:`~fc_macos.providers.local_host.LocalHost`. microVMs run in their own
sessions, so they keep running when the agent stops (``vm stop``) and a new
agent finds them again; ``vm stop --force`` stops them first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fc_macos import image_names
from fc_macos.agent_sync import BlockingAgent
from fc_macos.config import AgentEndpoint, Config, read_json
from fc_macos.errors import AgentError, ConfigError
from fc_macos.progress import Progress
from fc_macos.providers import image_install, pipeline
from fc_macos.providers.base import Check, SetupOptions, StopReport, VMStatus
from fc_macos.providers.local_host import AgentProcess, LocalHost, agent_url, check_kvm

class LocalProvider:
    """The ``local`` provider; see :class:`fc_macos.providers.base.Provider` for the contract."""

    name = "local"

    def __init__(self, home: Path, config: Config) -> None:
        self.home = home
        self.config = config
        self.run_dir = home / "local"
        self.agent = AgentProcess(self.run_dir)

    def open_host(self, options: SetupOptions, progress: Progress) -> LocalHost:
        return LocalHost(self.run_dir, progress)

    def setup(self, options: SetupOptions, progress: Progress) -> AgentEndpoint:
        return pipeline.run_setup(self, options, progress)

    def endpoint(self) -> AgentEndpoint:
        return AgentEndpoint.load(self.home, provider=self.name)

    def _token(self) -> str | None:
        try:
            return self.agent.token_file.read_text().strip() or None
        except OSError:
            return None

    def vm_status(self) -> VMStatus:
        port = self.agent.saved_port()
        url = agent_url(port) if port else None
        pid = self.agent.pid()
        agent_ok = False
        if pid and url:
            with BlockingAgent(url, self._token(), timeout=2.0) as agent:
                agent_ok = agent.answers()
        exists = port is not None and self._token() is not None
        details: dict[str, object] = {"pid": pid, "log": str(self.agent.log_file),
                                      "state_dir": str(self.agent.state_dir),
                                      "firecracker_bin": str(self.agent.firecracker)}
        return VMStatus(name="local", provider=self.name, exists=exists, running=pid is not None,
                        state="running" if pid else ("stopped" if exists else "missing"),
                        address="127.0.0.1", agent_url=url, agent_ok=agent_ok, details=details)

    def vm_start(self, progress: Progress) -> VMStatus:
        if not self._token() or not self.agent.firecracker.exists():
            raise ConfigError("the local agent is not set up", hint="run 'fc-macos --provider local setup' first")
        pipeline.run_start(self, progress)
        return self.vm_status()

    def vm_stop(self, *, force: bool = False) -> StopReport:
        """Stops fc-agent. Its microVMs run in their own sessions and keep running
        (a new agent finds them again); with ``force`` they are stopped first."""
        status = self.vm_status()
        stopped: list[str] = []
        running: list[str] = []
        if status.agent_ok and status.agent_url:
            with BlockingAgent(status.agent_url, self._token(), timeout=30.0) as agent:
                for vm in agent.list_microvms():
                    if vm.pid is None:  # stopped or failed: no VMM runs
                        continue
                    if force:
                        agent.stop_microvm(vm.name, force=True, timeout_s=0)
                        stopped.append(vm.name)
                    else:
                        running.append(vm.name)
        was_running = self.agent.stop()
        after = self.vm_status()
        if not was_running:
            return StopReport(after, "fc-agent is not running")
        message = "stopped fc-agent"
        if stopped:
            message += f" and {len(stopped)} microVM(s): {', '.join(stopped)}"
        if running:
            message += (f"; {len(running)} microVM(s) keep running without it: {', '.join(running)} "
                        "('fc-macos vm start' brings the agent back to them; 'fc-macos vm stop --force' "
                        "stops them too)")
        return StopReport(after, message)

    def vm_shell(self, command: list[str] | None = None) -> int:
        """A shell (or ``command``) on this machine, in the agent's state directory."""
        argv = command or [os.environ.get("SHELL", "/bin/sh")]
        cwd = self.agent.state_dir if self.agent.state_dir.is_dir() else None
        try:
            return subprocess.call(argv, cwd=cwd)
        except OSError as exc:
            raise ConfigError(f"cannot run {argv[0]}: {exc}", hint="check the command") from exc

    def vm_logs(self, *, follow: bool = False) -> Iterator[str]:
        log = self.agent.log_file
        if not log.exists():
            raise ConfigError(f"no agent log at {log}", hint="run 'fc-macos setup' first")
        with log.open(errors="replace") as fh:
            yield from fh
            while follow:
                line = fh.readline()
                if line:
                    yield line
                else:
                    time.sleep(0.2)

    def doctor(self) -> list[Check]:
        version = sys.version_info
        checks = [Check("python", version >= (3, 10), f"Python {version.major}.{version.minor}.{version.micro}",
                        "install Python 3.10 or newer")]
        checks.append(check_kvm())
        firecracker = self.agent.firecracker
        if firecracker.is_file() and os.access(firecracker, os.X_OK):
            checks.append(Check("firecracker", True, str(firecracker)))
        else:
            checks.append(Check("firecracker", False, f"not installed ({firecracker})",
                                "run 'fc-macos setup' (give --firecracker-bin PATH, or put 'firecracker' on PATH)"))
        images = self.agent.images_dir
        present = {p.name for p in images.iterdir() if p.is_file()} if images.is_dir() else set()
        manifest = read_json(images / image_names.MANIFEST) if image_names.MANIFEST in present else None
        checks.append(image_install.describe_images(str(images), present,
                                                    manifest if isinstance(manifest, dict) else None))
        status = self.vm_status()
        if status.agent_ok:
            checks.append(Check("agent", True, f"answers at {status.agent_url}"))
        else:
            detail = "not running" if not status.running else f"not answering at {status.agent_url}"
            checks.append(Check("agent", False, detail,
                                "run 'fc-macos vm start' (or 'fc-macos setup' if it was never set up)"))
        try:
            self.endpoint()
        except ConfigError as exc:
            checks.append(Check("endpoint", False, exc.message, exc.hint))
        return checks
