"""``TartHost``: the Tart VM as one setup (or ``vm start``) run sees it.

The machine steps make and start the VM (check-tart, check-host, clone-vm,
configure-vm, start-vm, wait-ip, wait-exec, check-kvm, inspect-vm); the rest of
the :class:`~fc_macos.providers.base.Host` interface works inside it through
``tart exec`` (:class:`~fc_macos.providers.tart_guest.Guest`, as root with
sudo). Files reach the VM from a
:class:`~fc_macos.providers.fileserver.FileServer` bound to the VM's gateway,
started on first need and stopped by :meth:`TartHost.close`.

Inside the VM, fc-agent's Python packages are unpacked from wheels into
``/opt/fc-agent/lib`` and started with the VM's own python3, as the systemd unit
``fc-agent.service`` where the VM has systemd, else as a detached process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fc_macos.config import Config
from fc_macos.errors import SetupError, TartError
from fc_macos.progress import Progress
from fc_macos.providers import tart_checks as T
from fc_macos.providers.base import AgentLayout, SetupOptions
from fc_macos.providers.fileserver import FileServer, ServedFile
from fc_macos.providers.setup_steps import Skipped, Step
from fc_macos.providers.tart_cli import TartCLI
from fc_macos.providers.tart_guest import Guest
from fc_macos.providers.wheels import dependency_wheels, project_wheel

IP_TIMEOUT_S = 180.0
EXEC_TIMEOUT_S = 180.0
MIN_PYTHON = (3, 10)

# Where things live inside the VM.
AGENT_PORT = 8080
GUEST_LIB = "/opt/fc-agent/lib"
WHEELS_MANIFEST = "/opt/fc-agent/wheels.sha256"
TOKEN_FILE = "/etc/fc-agent/token"
STATE_DIR = "/var/lib/fc-agent"
AGENT_PID = f"{STATE_DIR}/agent.pid"
AGENT_LOG = "/var/log/fc-agent.log"
FIRECRACKER = "/usr/local/bin/firecracker"
UNIT_FILE = "/etc/systemd/system/fc-agent.service"
LAYOUT = AgentLayout(firecracker=FIRECRACKER, token_file=TOKEN_FILE, state_dir=STATE_DIR)


def agent_wrapper(module: str) -> str:
    """The sh wrapper installed as /usr/local/bin/fc-agent (or fc-macos)."""
    return f'#!/bin/sh\nexec env PYTHONPATH={GUEST_LIB} python3 -m {module} "$@"\n'


def agent_command() -> str:
    return (f"/usr/local/bin/fc-agent --listen 0.0.0.0:{AGENT_PORT} --token-file {TOKEN_FILE} "
            f"--state-dir {STATE_DIR} --firecracker-bin {FIRECRACKER}")


def systemd_unit() -> str:
    """fc-agent's unit. ``KillMode=process``: stopping or restarting the agent
    leaves the Firecracker processes (its children, in its cgroup) running; a
    new agent takes them over from its state directory."""
    return (
        "[Unit]\nDescription=fc-agent: Firecracker microVMs over HTTP (fc-macos)\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        f"[Service]\nExecStart={agent_command()}\nRestart=on-failure\nRestartSec=2\nKillMode=process\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


# $1 pid file, $2 log, $3.. the agent command. Stops a previous agent started this
# way (only if its command line is fc-agent's), then starts a new one detached:
# `tart exec` returns only when the command's output closes, so redirect all of it.
START_DETACHED = r"""
pidfile=$1; log=$2; shift 2
if [ -f "$pidfile" ]; then
  old=$(cat "$pidfile")
  if [ -n "$old" ] && grep -q fc_macos.agent.main "/proc/$old/cmdline" 2>/dev/null; then
    kill "$old" 2>/dev/null
    i=0
    while kill -0 "$old" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    kill -9 "$old" 2>/dev/null
  fi
fi
mkdir -p "$(dirname "$pidfile")" "$(dirname "$log")"
nohup setsid "$@" >>"$log" 2>&1 </dev/null &
echo $! > "$pidfile"
"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TartHost:
    """The Tart VM ``name``; see :class:`fc_macos.providers.base.Host` for the contract."""

    layout = LAYOUT

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
        self._arch = ""
        self.python = ""
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
            self._server = FileServer(self.gateway, progress=self.progress).start()
        return self._server.add(path, name)

    def agent_url(self) -> str:
        if not self.address:
            self.address = self.tart.ip(self.name)
        return f"http://{self.address}:{AGENT_PORT}"

    # -- checks -------------------------------------------------------------------------------

    def check_tart(self) -> str:
        check = T.check_tart_version(self.tart.version())
        if not check.ok:
            raise SetupError("check-tart", check.detail, hint=check.fix)
        return check.detail

    def check_host(self) -> str:
        details = []
        for check in (T.check_macos(), T.check_chip()):
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
            raise Skipped(f"the VM '{self.name}' exists")
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
            raise Skipped(f"{cpus} CPUs, {memory} MiB")
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
            raise Skipped(f"the VM '{self.name}' runs")
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
        if T.nested_failure(output):
            raise SetupError(step, f"'tart run --nested' failed: {output[-600:]}", hint=T.NESTED_HINT)
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
            raise SetupError("check-kvm", "/dev/kvm does not exist inside the VM", hint=T.NESTED_HINT)
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
        self._arch = self.guest.output("uname -m")
        self.python = self.guest.output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
        major, _, minor = self.python.partition(".")
        if not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) < MIN_PYTHON:
            raise SetupError("inspect-vm", f"the VM's python3 is {self.python or 'missing'}; fc-agent needs 3.10+",
                             hint="use an image with Python 3.10 or later (the default ubuntu:latest has it)")
        if not self.guest.ok("command -v curl && command -v sha256sum"):
            raise SetupError("inspect-vm", "the VM lacks curl or sha256sum",
                             hint="install them in the VM ('fc-macos vm shell', then 'sudo apt-get install curl')")
        self.learn_gateway()
        if not self.address:
            self.address = self.tart.ip(self.name)
        return f"{self._arch}, Python {self.python}, gateway {self.gateway}, address {self.address}"

    # -- the host interface ---------------------------------------------------------------

    def arch(self) -> str:
        if not self._arch:
            self._arch = self.guest.output("uname -m")
        return self._arch

    def run(self, script: str, *args: str, check: bool = True, timeout: float | None = 120.0) -> tuple[int, str, str]:
        result = self.guest.sh(script, *args, sudo=True, check=check, timeout=timeout)
        return result.returncode, result.stdout, result.stderr

    def put_file(self, src: Path, dest: str, *, mode: str = "0644") -> bool:
        return self.guest.ensure(self.serve(src, Path(dest).name), dest, mode=mode)

    def put_secret(self, dest: str, text: str) -> None:
        path = self._tmp / f"secret-{len(os.listdir(self._tmp))}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        self.guest.fetch(self.serve(path, Path(dest).name), dest, mode="0600")

    def read_secret(self, path: str) -> str | None:
        return self.guest.sh('cat "$1" 2>/dev/null || true', path, sudo=True).stdout.strip() or None

    def install_agent(self, force: bool) -> str:
        wheels = [project_wheel(self._tmp / "wheel"),
                  *dependency_wheels(self.python, self.home / "wheelhouse", machine=self.arch())]
        served = [self.serve(w) for w in wheels]
        manifest = "".join(f"{s.sha256}  {s.name}\n" for s in served)
        current = self.guest.sh(f"cat {WHEELS_MANIFEST} 2>/dev/null || true").stdout
        if current == manifest and not force:
            raise Skipped(f"{len(wheels)} wheels already in {GUEST_LIB}")
        staging = "/opt/fc-agent/wheels"
        self.guest.fetch_all([(item, f"{staging}/{item.name}") for item in served])
        unpack = (f'set -e; rm -rf {GUEST_LIB}.new; mkdir -p {GUEST_LIB}.new; '
                  f'for w in "$@"; do python3 -m zipfile -e "{staging}/$w" {GUEST_LIB}.new; done; '
                  f'chmod -R a+rX {GUEST_LIB}.new; chmod 755 /opt/fc-agent; rm -rf {GUEST_LIB}.old; '
                  f'if [ -d {GUEST_LIB} ]; then mv {GUEST_LIB} {GUEST_LIB}.old; fi; '
                  f'mv {GUEST_LIB}.new {GUEST_LIB}; rm -rf {GUEST_LIB}.old {staging}')
        self.guest.sh(unpack, *(s.name for s in served), sudo=True, timeout=300)
        self.guest.write_text("/usr/local/bin/fc-agent", agent_wrapper("fc_macos.agent.main"), mode="0755")
        self.guest.write_text("/usr/local/bin/fc-macos", agent_wrapper("fc_macos.cli.main"), mode="0755")
        probe = self.guest.sh("/usr/local/bin/fc-agent --version", check=False)
        if probe.returncode != 0:
            raise SetupError("install-agent", f"the installed fc-agent does not start: {probe.stderr.strip()[-600:]}",
                             hint=f"the VM's Python {self.python} may lack something; see 'fc-macos vm shell'")
        self.guest.write_text(WHEELS_MANIFEST, manifest)
        return f"{len(wheels)} wheels unpacked into {GUEST_LIB}; {probe.stdout.strip()}"

    def build_images(self, source: str, force: bool) -> None:
        build = f"fc-macos images build --source {source} --out {self.layout.images_dir}"
        try:
            self.guest.sh(build + (" --force" if force else ""), sudo=True, timeout=1800)
        except TartError as exc:
            raise TartError(f"in the VM: {exc.message}", stderr=exc.stderr,
                            hint="check the VM's internet access ('fc-macos vm shell')") from exc

    def has_systemd(self) -> bool:
        return self.guest.ok("test -d /run/systemd/system")

    def start_agent(self) -> str:
        if self.has_systemd():
            self.guest.write_text(UNIT_FILE, systemd_unit())
            self.guest.sh("systemctl daemon-reload && systemctl enable fc-agent >/dev/null 2>&1 && "
                          "systemctl restart fc-agent", sudo=True)
            return "systemd unit fc-agent.service"
        self.guest.sh(START_DETACHED, AGENT_PID, AGENT_LOG, *agent_command().split(), sudo=True)
        return f"detached, log in {AGENT_LOG}"

    def agent_alive(self) -> bool | None:
        return None

    def agent_log_tail(self, lines: int = 20) -> str:
        if self.has_systemd():
            cmd = f"journalctl -u fc-agent -n {lines} --no-pager"
        else:
            cmd = f"tail -n {lines} {AGENT_LOG}"
        return self.guest.sh(cmd, sudo=True, check=False).stdout.strip()

    # -- step lists ---------------------------------------------------------------------------

    def start_steps(self) -> list[Step]:
        """Start the VM and wait until it can be used (shared by setup and 'vm start')."""
        return [
            Step("start-vm", f"starting the VM '{self.name}' (tart run --nested)", self.start_vm),
            Step("wait-ip", "waiting for the VM's IP address", self.wait_ip),
            Step("wait-exec", "waiting for 'tart exec' to work in the VM", self.wait_exec, commit=True),
        ]

    def machine_steps(self) -> list[Step]:
        return [
            Step("check-tart", "checking Tart's version", self.check_tart),
            Step("check-host", "checking macOS and the chip (nested virtualization)", self.check_host),
            Step("clone-vm", f"creating the VM '{self.name}'", self.clone_vm),
            Step("configure-vm", "setting the VM's CPUs and memory", self.configure_vm, commit=True),
            *self.start_steps(),
            Step("check-kvm", "checking /dev/kvm inside the VM", self.check_kvm),
            Step("inspect-vm", "learning the VM's architecture, Python and gateway", self.inspect_vm),
        ]
