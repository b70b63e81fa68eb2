"""``TartProvider``: fc-agent in a Linux VM driven through Tart (the default on macOS).

The VM (default name ``fc-macos``, image ``ghcr.io/cirruslabs/ubuntu:latest``)
runs with ``tart run --nested`` so that it has /dev/kvm. Setup is the shared
pipeline (:mod:`fc_macos.providers.pipeline`) over
:class:`~fc_macos.providers.tart_host.TartHost`: it makes and starts the VM,
then installs Firecracker, fc-agent (from wheels, with the VM's own python3),
guest images and a token inside it, and starts the agent (a systemd unit, or a
detached process where the VM has no systemd). The host talks to the agent at
``http://<VM address>:8080`` with the token saved in ``FC_MACOS_HOME/agent.json``.

Files under ``FC_MACOS_HOME``: ``agent.json`` (URL + token + provider, 0600),
``setup.lock``, ``tart-run.log`` (what ``tart run`` printed, quoted on
failure), ``wheelhouse/<python>/`` (cached dependency wheels).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from fc_macos.agent_sync import BlockingAgent
from fc_macos.config import AgentEndpoint, Config
from fc_macos.errors import AgentAuthError, AgentError, ConfigError, ConflictError, FcMacosError, NotFoundError
from fc_macos.progress import NullProgress, Progress
from fc_macos.providers import image_install, pipeline
from fc_macos.providers import tart_checks as T
from fc_macos.providers.base import Check, SetupOptions, StopReport, VMStatus
from fc_macos.providers.tart_cli import TartCLI
from fc_macos.providers.tart_host import AGENT_LOG, AGENT_PORT, TartHost


class TartProvider:
    """The ``tart`` provider; see :class:`fc_macos.providers.base.Provider` for the contract."""

    name = "tart"

    def __init__(self, home: Path, config: Config, tart: TartCLI | None = None) -> None:
        self.home = home
        self.config = config
        self.tart = tart or TartCLI()

    @property
    def vm_name(self) -> str:
        return self.config.vm_name

    def open_host(self, options: SetupOptions, progress: Progress) -> TartHost:
        return TartHost(self.tart, self.home, self.config, self.vm_name, progress, options)

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, options: SetupOptions, progress: Progress) -> AgentEndpoint:
        """See Provider.setup; the steps are in :mod:`fc_macos.providers.pipeline`."""
        if options.vm_name:
            self.config.vm_name = options.vm_name
        if options.image:
            self.config.image = options.image
        return pipeline.run_setup(self, options, progress)

    # -- the rest of the Provider interface ----------------------------------------------------

    def endpoint(self) -> AgentEndpoint:
        return AgentEndpoint.load(self.home, provider=self.name)

    def vm_status(self) -> VMStatus:
        try:
            vm = self.tart.find(self.vm_name)
        except FcMacosError as exc:
            return VMStatus(self.vm_name, self.name, False, False, "missing", details={"error": exc.message})
        if vm is None:
            return VMStatus(self.vm_name, self.name, False, False, "missing")
        details: dict[str, object] = {}
        try:
            info = self.tart.get(self.vm_name)
            details.update(cpus=info.cpus, memory_mib=info.memory_mib)
        except FcMacosError as exc:
            details["error"] = exc.message
        address = None
        if vm.running:
            try:
                address = self.tart.ip(self.vm_name)
            except FcMacosError as exc:
                details["error"] = exc.message
        url = f"http://{address}:{AGENT_PORT}" if address else None
        agent_ok = False
        if url:
            try:
                with BlockingAgent(url, timeout=3) as agent:
                    agent.health()
                agent_ok = True
            except AgentError:
                pass
        return VMStatus(self.vm_name, self.name, True, vm.running, vm.state, address, url, agent_ok, details)

    def vm_start(self, progress: Progress) -> VMStatus:
        """Start the VM and the agent (a no-op when they run); keeps agent.json's
        URL in step with the VM's address."""
        self.endpoint()
        if self.tart.find(self.vm_name) is None:
            raise NotFoundError(f"the VM '{self.vm_name}' does not exist", hint="run 'fc-macos setup'")
        pipeline.run_start(self, progress)
        return self.vm_status()

    def vm_stop(self, *, force: bool = False) -> StopReport:
        """Stops the VM, and so every microVM in it (they are gone, not paused)."""
        vm = self.tart.find(self.vm_name)
        if vm is None or not vm.running:
            return StopReport(self.vm_status(), f"the VM '{self.vm_name}' is not running")
        self.tart.stop(self.vm_name, timeout=0 if force else None)
        return StopReport(self.vm_status(), f"stopped the VM '{self.vm_name}' and every microVM in it; "
                          "'fc-macos vm start' starts it and fc-agent again")

    def _need_running(self) -> None:
        vm = self.tart.find(self.vm_name)
        if vm is None:
            raise NotFoundError(f"the VM '{self.vm_name}' does not exist", hint="run 'fc-macos setup'")
        if not vm.running:
            raise ConflictError(f"the VM '{self.vm_name}' is not running", hint="start it with 'fc-macos vm start'")

    def vm_shell(self, command: list[str] | None = None) -> int:
        self._need_running()
        return self.tart.exec_interactive(self.vm_name, command or ["bash", "-l"], tty=sys.stdin.isatty())

    def vm_logs(self, *, follow: bool = False) -> Iterator[str]:
        """fc-agent's log: ``journalctl -u fc-agent`` where the VM has systemd,
        else its log file; ``follow`` keeps streaming."""
        self._need_running()
        host = self.open_host(SetupOptions(), NullProgress())
        try:
            if host.has_systemd():
                argv = ["sudo", "journalctl", "-u", "fc-agent", "--no-pager", *(["-f"] if follow else [])]
            else:
                argv = ["sudo", "tail", "-n", "200", *(["-F"] if follow else []), AGENT_LOG]
        finally:
            host.close()
        for line in self.tart.exec_stream(self.vm_name, argv):
            yield line.rstrip("\n")

    def doctor(self) -> list[Check]:
        checks = [T.check_macos(), T.check_chip()]
        try:
            program = self.tart.program
            version = self.tart.version()
        except FcMacosError as exc:
            return [*checks, Check("tart", False, exc.message, exc.hint)]
        tart_check = T.check_tart_version(version)
        checks.append(Check("tart", tart_check.ok, f"{tart_check.detail} at {program}", tart_check.fix))
        status = self.vm_status()
        exists = "exists" if status.exists else "is missing"
        checks.append(Check("vm-exists", status.exists, f"VM '{self.vm_name}' {exists}",
                            None if status.exists else "run 'fc-macos setup'"))
        if not status.exists:
            return checks
        checks.append(Check("vm-running", status.running, f"VM '{self.vm_name}' is {status.state}",
                            None if status.running else "run 'fc-macos vm start'"))
        if not status.running:
            return checks
        checks.append(Check("agent", status.agent_ok, f"fc-agent at {status.agent_url} "
                            f"{'answers' if status.agent_ok else 'does not answer'}",
                            None if status.agent_ok else "run 'fc-macos vm start' (or 'fc-macos setup')"))
        checks.append(self._token_check(status))
        checks.append(self._images_check())
        return checks

    def _images_check(self) -> Check:
        images = TartHost.layout.images_dir
        script = 'cd "$1" 2>/dev/null && for f in *; do [ -f "$f" ] && echo "$f"; done; echo ---; cat manifest.json 2>/dev/null || true'
        try:
            out = self.tart.exec(self.vm_name, ["sudo", "sh", "-c", script, "sh", images], timeout=30).stdout
        except FcMacosError as exc:
            return Check("images", False, f"cannot look into {images}: {exc.message}", exc.hint)
        names, _, manifest_text = out.partition("---\n")
        try:
            manifest = json.loads(manifest_text) if manifest_text.strip() else None
        except ValueError:
            manifest = None
        return image_install.describe_images(images, set(names.split()), manifest if isinstance(manifest, dict) else None)

    def _token_check(self, status: VMStatus) -> Check:
        try:
            endpoint = self.endpoint()
        except ConfigError as exc:
            return Check("token", False, exc.message, exc.hint)
        if status.agent_url and endpoint.url != status.agent_url:
            return Check("token", False, f"agent.json points at {endpoint.url}, the VM is at {status.agent_url}",
                         "run 'fc-macos vm start' to update it")
        try:
            with BlockingAgent.from_endpoint(endpoint, timeout=5) as agent:
                agent.info()
        except AgentAuthError:
            return Check("token", False, "fc-agent refuses the saved token", "run 'fc-macos setup' again")
        except AgentError as exc:
            return Check("token", False, exc.message, "run 'fc-macos vm start'")
        return Check("token", True, "fc-agent accepts the saved token")
