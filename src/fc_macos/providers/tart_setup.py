"""``TartSetup``: the work behind each named setup step of the ``tart`` provider.

One instance per ``setup`` (or ``vm start``) run; the step list and its rules
are in :mod:`fc_macos.providers.setup_steps`. Files reach the VM from a
:class:`~fc_macos.providers.fileserver.FileServer` bound to the VM's gateway,
started on first need and stopped by :meth:`close`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fc_macos.config import AgentEndpoint, Config
from fc_macos.errors import AgentError, SetupError, TartError
from fc_macos.providers import setup_steps as S
from fc_macos.progress import Progress
from fc_macos.providers.base import SetupOptions
from fc_macos.providers.fileserver import FileServer, ServedFile
from fc_macos.providers.local import IMAGE_NAMES
from fc_macos.providers.local_agent import agent_request
from fc_macos.providers.tart_cli import TartCLI
from fc_macos.providers.tart_guest import Guest
from fc_macos.providers.wheels import dependency_wheels, project_wheel

IP_TIMEOUT_S = 180.0
EXEC_TIMEOUT_S = 180.0
AGENT_TIMEOUT_S = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TartSetup:
    def __init__(self, tart: TartCLI, home: Path, config: Config, name: str, progress: Progress,
                 options: SetupOptions | None = None) -> None:
        self.tart = tart
        self.home = home
        self.config = config
        self.name = name
        self.progress = progress
        self.options = options or SetupOptions()
        self.guest = Guest(tart, name)
        self.cleanups: list[Callable[[], None]] = []
        self.address: str | None = None
        self.gateway: str | None = None
        self.arch = ""
        self.python = ""
        self.token: str | None = None
        self.agent_changed = False
        self._server: FileServer | None = None
        self._tmp_dir: Path | None = None
        self._run_pid: int | None = None  # the `tart run` this session started
        self._run_offset = 0  # where its output starts in run_log

    @property
    def _tmp(self) -> Path:
        """This run's private scratch directory under FC_MACOS_HOME (made on first use)."""
        if self._tmp_dir is None:
            self.home.mkdir(parents=True, exist_ok=True)
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="setup-", dir=self.home))
        return self._tmp_dir

    @property
    def run_log(self) -> Path:
        return self.home / "tart-run.log"

    def close(self) -> None:
        """Stop the file server and remove this run's temporary files."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def serve(self, path: Path, name: str | None = None) -> ServedFile:
        if self._server is None:
            if not self.gateway:
                self.learn_gateway()
            assert self.gateway
            self._server = FileServer(self.gateway).start()
        return self._server.add(path, name)

    @property
    def agent_url(self) -> str:
        return f"http://{self.address}:{S.AGENT_PORT}"

    # -- checks -------------------------------------------------------------------------------

    def check_tart(self) -> str:
        check = S.check_tart_version(self.tart.version())
        if not check.ok:
            raise SetupError("check-tart", check.detail, hint=check.fix)
        return check.detail

    def check_host(self) -> str:
        details = []
        for check in (S.check_macos(), S.check_chip()):
            if not check.ok:
                raise SetupError("check-host", check.detail, hint=check.fix)
            details.append(check.detail)
        return "; ".join(dict.fromkeys(details))

    # -- the VM -------------------------------------------------------------------------------

    def clone_vm(self) -> str:
        existing = self.tart.find(self.name)
        if existing and self.options.force:
            self.progress.info(f"--force: deleting the VM '{self.name}'")
            if existing.running:
                self.tart.stop(self.name, timeout=0)
            self.tart.delete(self.name)
            existing = None
        if existing:
            raise S.Skipped(f"the VM '{self.name}' exists")
        image = self.options.image or self.config.image
        self.progress.info(f"cloning {image} (the first pull downloads several GB)")
        try:
            self.tart.clone(image, self.name, timeout=None)
        except BaseException:
            if self.tart.find(self.name):
                self.tart.delete(self.name)
            raise
        self.cleanups.append(lambda: self.tart.delete(self.name))
        return f"{image} -> {self.name}"

    def configure_vm(self) -> str:
        cpus = self.options.cpus or self.config.cpus
        memory = self.options.memory_mib or self.config.memory_mib
        info = self.tart.get(self.name)
        if (info.cpus, info.memory_mib) == (cpus, memory):
            raise S.Skipped(f"{cpus} CPUs, {memory} MiB")
        if info.running:
            self.progress.info(f"stopping the VM to give it {cpus} CPUs and {memory} MiB")
            self.tart.stop(self.name)
        self.tart.set(self.name, cpus=cpus, memory_mib=memory)
        self.config.cpus, self.config.memory_mib = cpus, memory
        return f"{cpus} CPUs, {memory} MiB"

    def start_vm(self) -> str:
        vm = self.tart.find(self.name)
        if vm is None:
            raise SetupError("start-vm", f"the VM '{self.name}' does not exist", hint="run 'fc-macos setup'")
        if vm.running:
            raise S.Skipped(f"the VM '{self.name}' runs")
        offset = self.run_log.stat().st_size if self.run_log.exists() else 0
        pid = self.tart.run_detached(self.name, log_path=self.run_log, nested=True)
        self._run_pid, self._run_offset = pid, offset
        self.cleanups.append(lambda: self._stop_run(pid))
        return f"tart run (pid {pid}), output in {self.run_log}"

    def _stop_run(self, pid: int) -> None:
        try:
            self.tart.stop(self.name, timeout=0)
        except TartError:
            pass
        if _pid_alive(pid):
            os.kill(pid, 15)

    def _run_output(self) -> str:
        try:
            with open(self.run_log, "rb") as fh:
                fh.seek(self._run_offset)
                return fh.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def _check_run_alive(self, step: str) -> None:
        pid = self._run_pid
        if pid is None or _pid_alive(pid):
            return
        output = self._run_output()
        if S.nested_failure(output):
            raise SetupError(step, f"'tart run --nested' failed: {output[-600:]}", hint=S.NESTED_HINT)
        raise SetupError(step, f"'tart run' ended: {output[-600:] or 'no output'}",
                         hint=f"see {self.run_log}; 'tart run {self.name}' shows Tart's own error")

    def wait_ip(self) -> str:
        deadline = time.monotonic() + IP_TIMEOUT_S
        while True:
            self._check_run_alive("wait-ip")
            self.address = self.tart.ip(self.name, wait=2)
            if self.address:
                return self.address
            if time.monotonic() > deadline:
                raise SetupError("wait-ip", f"the VM '{self.name}' got no IP address in {IP_TIMEOUT_S:.0f} s",
                                 hint=f"see {self.run_log}; try 'fc-macos vm stop' then 'fc-macos setup'")

    def wait_exec(self) -> str:
        deadline = time.monotonic() + EXEC_TIMEOUT_S
        while True:
            self._check_run_alive("wait-exec")
            try:
                self.guest.run(["true"], timeout=30)
                return "tart exec works"
            except TartError as exc:
                if time.monotonic() > deadline:
                    raise SetupError("wait-exec", f"'tart exec' does not work in the VM: {exc.message}",
                                     hint="the image needs the tart-guest-agent (the cirruslabs images have it) "
                                     "and Tart >= 2.27") from exc
            time.sleep(1)

    def check_kvm(self) -> str:
        if not self.guest.ok("test -e /dev/kvm"):
            raise SetupError("check-kvm", "/dev/kvm does not exist inside the VM", hint=S.NESTED_HINT)
        return "/dev/kvm present"

    def learn_gateway(self) -> str:
        route = self.guest.output("ip route show default")
        parts = route.split()
        if "via" not in parts:
            raise SetupError("inspect-vm", f"the VM has no default route ({route!r})",
                             hint="the VM needs Tart's default (shared NAT) network")
        self.gateway = parts[parts.index("via") + 1]
        return self.gateway

    def inspect_vm(self) -> str:
        self.arch = self.guest.output("uname -m")
        self.python = self.guest.output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
        major, _, minor = self.python.partition(".")
        if not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) < S.MIN_PYTHON:
            raise SetupError("inspect-vm", f"the VM's python3 is {self.python or 'missing'}; fc-agent needs 3.10+",
                             hint="use an image with Python 3.10 or later (the default ubuntu:latest has it)")
        if not self.guest.ok("command -v curl && command -v sha256sum"):
            raise SetupError("inspect-vm", "the VM lacks curl or sha256sum",
                             hint="install them in the VM ('fc-macos vm shell', then 'sudo apt-get install curl')")
        self.learn_gateway()
        if not self.address:
            self.address = self.tart.ip(self.name)
        return f"{self.arch}, Python {self.python}, gateway {self.gateway}, address {self.address}"

    # -- what gets installed ------------------------------------------------------------------

    def install_firecracker(self) -> str:
        given = self.options.firecracker_bin
        if given is not None:
            if not Path(given).is_file():
                raise SetupError("install-firecracker", f"{given} is not a file", hint="check --firecracker-bin")
            if not self.guest.ensure(self.serve(Path(given), "firecracker"), S.FIRECRACKER, mode="0755"):
                raise S.Skipped(f"{S.FIRECRACKER} is {given}")
            self.agent_changed = True
            return f"{given} -> {S.FIRECRACKER}"
        url, sha, member = S.firecracker_release(self.arch)
        installed = self.guest.sh(f"{S.FIRECRACKER} --version 2>/dev/null | head -n1", check=False).stdout
        if S.FIRECRACKER_VERSION in installed and not self.options.force:
            raise S.Skipped(installed.strip())
        self.guest.sh(S.INSTALL_RELEASE, url, sha, member, S.FIRECRACKER, sudo=True, timeout=900)
        self.agent_changed = True
        return f"Firecracker {S.FIRECRACKER_VERSION} ({self.arch}), sha256 verified"

    def install_agent(self) -> str:
        wheels = [project_wheel(self._tmp / "wheel"),
                  *dependency_wheels(self.python, self.home / "wheelhouse", machine=self.arch)]
        served = [self.serve(w) for w in wheels]
        manifest = "".join(f"{s.sha256}  {s.name}\n" for s in served)
        current = self.guest.sh(f"cat {S.WHEELS_MANIFEST} 2>/dev/null || true").stdout
        if current == manifest and not self.options.force:
            raise S.Skipped(f"{len(wheels)} wheels already in {S.GUEST_LIB}")
        staging = "/opt/fc-agent/wheels"
        self.guest.fetch_all([(item, f"{staging}/{item.name}") for item in served])
        unpack = (f'set -e; rm -rf {S.GUEST_LIB}.new; mkdir -p {S.GUEST_LIB}.new; '
                  f'for w in "$@"; do python3 -m zipfile -e "{staging}/$w" {S.GUEST_LIB}.new; done; '
                  f'chmod -R a+rX {S.GUEST_LIB}.new; chmod 755 /opt/fc-agent; rm -rf {S.GUEST_LIB}.old; '
                  f'if [ -d {S.GUEST_LIB} ]; then mv {S.GUEST_LIB} {S.GUEST_LIB}.old; fi; '
                  f'mv {S.GUEST_LIB}.new {S.GUEST_LIB}; rm -rf {S.GUEST_LIB}.old {staging}')
        self.guest.sh(unpack, *(s.name for s in served), sudo=True, timeout=300)
        self.guest.write_text("/usr/local/bin/fc-agent", S.agent_wrapper("fc_macos.agent.main"), mode="0755")
        self.guest.write_text("/usr/local/bin/fc-macos", S.agent_wrapper("fc_macos.cli.main"), mode="0755")
        probe = self.guest.sh("/usr/local/bin/fc-agent --version", check=False)
        if probe.returncode != 0:
            raise SetupError("install-agent", f"the installed fc-agent does not start: {probe.stderr.strip()[-600:]}",
                             hint=f"the VM's Python {self.python} may lack something; see 'fc-macos vm shell'")
        self.guest.write_text(S.WHEELS_MANIFEST, manifest)
        self.agent_changed = True
        return f"{len(wheels)} wheels unpacked into {S.GUEST_LIB}; {probe.stdout.strip()}"

    def install_images(self) -> str:
        given = {kind: getattr(self.options, kind) for kind in IMAGE_NAMES if getattr(self.options, kind)}
        for kind, path in given.items():
            if not Path(path).is_file():
                raise SetupError("install-images", f"{kind} file {path} does not exist", hint=f"check --{kind}")
        if given:
            changed = []
            for kind, path in given.items():
                dest = f"{S.IMAGES_DIR}/{IMAGE_NAMES[kind]}"
                if self.guest.ensure(self.serve(Path(path), IMAGE_NAMES[kind]), dest):
                    changed.append(IMAGE_NAMES[kind])
            if "kernel" in given and "initrd" not in given:
                self.guest.sh(f'rm -f {S.IMAGES_DIR}/{IMAGE_NAMES["initrd"]}', sudo=True)
            if not changed:
                raise S.Skipped("the given images are installed")
            self.guest.sh(f"rm -f {S.IMAGES_DIR}/manifest.json", sudo=True)
            return ", ".join(changed)
        present = self.guest.ok(f'test -f {S.IMAGES_DIR}/{IMAGE_NAMES["kernel"]} -a '
                                f'-f {S.IMAGES_DIR}/{IMAGE_NAMES["rootfs"]}')
        if present and not self.options.force:
            raise S.Skipped(f"images already in {S.IMAGES_DIR}")
        if self.options.skip_assets:
            raise S.Skipped("--skip-assets given")
        self.progress.info("building guest images inside the VM (downloads the Firecracker CI kernel)")
        build = f"fc-macos images build --source online --out {S.IMAGES_DIR}"
        if self.options.force:
            build += " --force"
        try:
            self.guest.sh(build, sudo=True, timeout=1800)
        except TartError as exc:
            raise SetupError("install-images", f"cannot build guest images in the VM: {exc.message}",
                             hint="check the VM's internet access, or pass --kernel/--rootfs (and --initrd) "
                             "to install your own images, or --skip-assets to install none") from exc
        return f"built from the online source into {S.IMAGES_DIR}"

    def write_token(self) -> str:
        saved = AgentEndpoint.saved(self.home)
        if saved and not self.options.force:
            current = self.guest.sh(f"cat {S.TOKEN_FILE} 2>/dev/null || true", sudo=True).stdout.strip()
            if current and secrets.compare_digest(current, saved.token):
                self.token = saved.token
                raise S.Skipped(f"{S.TOKEN_FILE} holds the saved token")
        token = secrets.token_urlsafe(32)
        path = S.private_file(token + "\n", self._tmp)
        self.guest.fetch(self.serve(path, "token"), S.TOKEN_FILE, mode="0600")
        self.token = token
        self.agent_changed = True
        return f"new token in {S.TOKEN_FILE} (0600)"

    # -- the agent ----------------------------------------------------------------------------

    def _agent_answers(self) -> bool:
        if not self.address or not self.token:
            return False
        try:
            agent_request(self.agent_url, self.token, "GET", "/v1/info", timeout=5)
        except AgentError:
            return False
        return True

    def has_systemd(self) -> bool:
        return self.guest.ok("test -d /run/systemd/system")

    def start_agent(self) -> str:
        if not self.agent_changed and self._agent_answers():
            raise S.Skipped(f"fc-agent answers at {self.agent_url} with the saved token")
        if self.has_systemd():
            self.guest.write_text(S.UNIT_FILE, S.systemd_unit())
            self.guest.sh("systemctl daemon-reload && systemctl enable fc-agent >/dev/null 2>&1 && "
                          "systemctl restart fc-agent", sudo=True)
            how = "systemd unit fc-agent.service"
        else:
            self.guest.sh(S.START_DETACHED, S.AGENT_PID, S.AGENT_LOG, *S.agent_command().split(), sudo=True)
            how = f"detached, log in {S.AGENT_LOG}"
        self._wait_agent()
        return f"{how}; listening at {self.agent_url}"

    def _wait_agent(self) -> None:
        deadline = time.monotonic() + AGENT_TIMEOUT_S
        while not self._agent_answers():
            if time.monotonic() > deadline:
                raise SetupError("start-agent",
                                 f"fc-agent does not answer at {self.agent_url}:\n{self.agent_log_tail()}",
                                 hint="see the whole log with 'fc-macos vm logs'")
            time.sleep(0.5)

    def agent_log_tail(self, lines: int = 20) -> str:
        if self.has_systemd():
            cmd = f"journalctl -u fc-agent -n {lines} --no-pager"
        else:
            cmd = f"tail -n {lines} {S.AGENT_LOG}"
        return self.guest.sh(cmd, sudo=True, check=False).stdout.strip()

    def check_agent(self) -> str:
        assert self.token is not None
        health = agent_request(self.agent_url, None, "GET", "/healthz")
        info = agent_request(self.agent_url, self.token, "GET", "/v1/info")
        AgentEndpoint(self.agent_url, self.token).save(self.home)
        return f"fc-agent {health.get('version', '?')} ({info.get('arch', '?')}) at {self.agent_url}"

    # -- step lists ---------------------------------------------------------------------------

    def start_steps(self) -> list[S.Step]:
        """Start the VM and wait until it can be used (shared by setup and 'vm start')."""
        return [
            S.Step("start-vm", f"starting the VM '{self.name}' (tart run --nested)", self.start_vm),
            S.Step("wait-ip", "waiting for the VM's IP address", self.wait_ip),
            S.Step("wait-exec", "waiting for 'tart exec' to work in the VM", self.wait_exec, commit=True),
        ]

    def setup_steps(self) -> list[S.Step]:
        return [
            S.Step("check-tart", "checking Tart's version", self.check_tart),
            S.Step("check-host", "checking macOS and the chip (nested virtualization)", self.check_host),
            S.Step("clone-vm", f"creating the VM '{self.name}'", self.clone_vm),
            S.Step("configure-vm", "setting the VM's CPUs and memory", self.configure_vm, commit=True),
            *self.start_steps(),
            S.Step("check-kvm", "checking /dev/kvm inside the VM", self.check_kvm),
            S.Step("inspect-vm", "learning the VM's architecture, Python and gateway", self.inspect_vm),
            S.Step("install-firecracker", "installing Firecracker in the VM", self.install_firecracker),
            S.Step("install-agent", "installing fc-agent in the VM", self.install_agent),
            S.Step("install-images", "installing guest images in the VM", self.install_images),
            S.Step("write-token", "writing the agent's token", self.write_token),
            S.Step("start-agent", "starting fc-agent in the VM", self.start_agent),
            S.Step("check-agent", "checking that fc-agent answers from this Mac", self.check_agent),
        ]
