"""``LocalHost``: this Linux machine as one setup (or ``vm start``) run of the ``local`` provider sees it.

fc-agent runs as a detached process (:class:`AgentProcess`): in its own session
(it outlives the command that started it), writing stdout/stderr to
``agent.log``, found again through ``agent.pid``; a pid counts only while its
command line is still fc-agent's for this state directory (against pid reuse).
It runs from this Python's own ``fc_macos`` package, so installing the agent is
checking that it starts. Commands run as this user; files are copied.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import fc_macos
from fc_macos.config import read_json
from fc_macos.errors import ProviderError, SetupError
from fc_macos.fsutil import copy_reporting, write_json_atomic, write_private_text
from fc_macos.progress import Progress
from fc_macos.providers.base import AgentLayout, Check
from fc_macos.providers.setup_steps import Skipped, Step

AGENT_MODULE = "fc_macos.agent.main"
KVM = Path("/dev/kvm")
STOP_TIMEOUT_S = 10.0


def check_kvm(path: Path = KVM) -> Check:
    if not path.exists():
        return Check("kvm", False, f"{path} does not exist",
                     "enable KVM: load kvm_intel or kvm_amd (or turn on nested virtualization for this VM)")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("kvm", False, f"{path} is not readable and writable by this user",
                     f"add yourself to its group: sudo usermod -aG $(stat -c %G {path}) $USER, then log in again")
    return Check("kvm", True, f"{path} is usable")


def agent_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether the agent could listen on ``port`` (it binds with SO_REUSEADDR, as aiohttp does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # exited, not yet reaped
        return []
    return raw.decode(errors="replace").split("\0")


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child and has exited (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass(frozen=True)
class AgentProcess:
    """The agent process whose files live in ``run_dir``."""

    run_dir: Path

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "agent.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "agent.pid"

    @property
    def token_file(self) -> Path:
        return self.run_dir / "agent.token"

    @property
    def settings_file(self) -> Path:
        return self.run_dir / "local.json"

    def saved_port(self) -> int | None:
        """The port the last start used (``local.json``), or None before the first."""
        data = read_json(self.settings_file)
        port = data.get("port") if isinstance(data, dict) else None
        return port if isinstance(port, int) else None

    @property
    def firecracker(self) -> Path:
        return self.run_dir / "bin" / "firecracker"

    @property
    def layout(self) -> AgentLayout:
        return AgentLayout(firecracker=str(self.firecracker), token_file=str(self.token_file),
                           state_dir=str(self.state_dir))

    def command(self, *args: str) -> list[str]:
        """fc-agent's command line with ``args``, run by this Python."""
        return [sys.executable, "-m", AGENT_MODULE, *args]

    @staticmethod
    def env() -> dict[str, str]:
        """The environment the agent runs in: this process's, with this fc_macos package first."""
        env = dict(os.environ)
        package_root = str(Path(fc_macos.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env

    def pid(self) -> int | None:
        """The running agent's pid, or None (no pid file, dead, or someone else's pid)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        _reap(pid)
        cmdline = _proc_cmdline(pid)
        if AGENT_MODULE in cmdline and str(self.state_dir) in cmdline:
            return pid
        return None

    def start(self, port: int) -> int:
        """Start the agent detached on 127.0.0.1:``port``; returns its pid."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = self.command("--listen", f"127.0.0.1:{port}", "--token-file", str(self.token_file),
                               "--state-dir", str(self.state_dir), "--firecracker-bin", str(self.firecracker))
        env = self.env()
        with self.log_file.open("ab") as log:
            log.write(f"--- fc-macos: starting fc-agent at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, cwd=self.run_dir, env=env,
                )
            except OSError as exc:
                raise SetupError("start-agent", f"cannot start fc-agent: {exc}", hint=f"is {sys.executable} usable?") from exc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM the agent, SIGKILL after ``timeout``; returns whether one ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not _proc_cmdline(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            while _proc_cmdline(pid):
                _reap(pid)
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class LocalHost:
    """This machine for one run; see :class:`fc_macos.providers.base.Host` for the contract.
    The agent's port is kept in ``<run_dir>/local.json``."""

    def __init__(self, run_dir: Path, progress: Progress) -> None:
        self.agent = AgentProcess(run_dir)
        self.layout = self.agent.layout
        self.progress = progress
        self.cleanups: list[Callable[[], None]] = []

    # -- steps -------------------------------------------------------------------------------

    def check_kvm(self) -> str:
        kvm = check_kvm()
        if not kvm.ok:
            raise SetupError("check-kvm", kvm.detail, hint=kvm.fix)
        return kvm.detail

    def machine_steps(self) -> list[Step]:
        return [Step("check-kvm", f"checking {KVM}", self.check_kvm)]

    def start_steps(self) -> list[Step]:
        return []

    # -- the host interface ------------------------------------------------------------------

    def arch(self) -> str:
        return os.uname().machine

    def run(self, script: str, *args: str, check: bool = True, timeout: float | None = 120.0) -> tuple[int, str, str]:
        try:
            done = subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProviderError(f"cannot run a shell command: {exc}", hint="check /bin/sh") from exc
        if check and done.returncode != 0:
            raise ProviderError(f"command failed (exit {done.returncode}): {done.stderr.strip()[-600:]}",
                                hint="see the message above")
        return done.returncode, done.stdout, done.stderr

    def put_file(self, src: Path, dest: str, *, mode: str = "0644") -> bool:
        from fc_macos.images.digest import sha256_file

        target = Path(dest)
        if target.is_file() and target.stat().st_size == src.stat().st_size and sha256_file(target) == sha256_file(src):
            if oct(target.stat().st_mode & 0o7777) != oct(int(mode, 8)):
                target.chmod(int(mode, 8))
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            with open(src, "rb") as reader, open(tmp, "wb") as writer:
                copy_reporting(reader, writer, name=target.name, total=os.fstat(reader.fileno()).st_size,
                               progress=self.progress)
            tmp.chmod(int(mode, 8))
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ProviderError(f"cannot copy {src} to {target}: {exc}",
                             hint="check free space and permissions") from exc
        return True

    def put_secret(self, dest: str, text: str) -> None:
        write_private_text(Path(dest), text)

    def read_secret(self, path: str) -> str | None:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            return None

    def install_agent(self, force: bool) -> str:
        try:
            done = subprocess.run(self.agent.command("--version"), capture_output=True, text=True,
                                  timeout=60, env=self.agent.env(), check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SetupError("install-agent", f"cannot run fc-agent: {exc}", hint=f"is {sys.executable} usable?") from exc
        if done.returncode != 0:
            raise SetupError("install-agent", f"fc-agent does not start: {done.stderr.strip()[-600:]}",
                             hint="reinstall fc-macos: python3 -m pip install --force-reinstall fc-macos")
        package = Path(fc_macos.__file__).resolve().parent
        raise Skipped(f"{done.stdout.strip()} runs from {package} with {sys.executable}")

    def build_images(self, source: str, force: bool) -> None:
        from fc_macos.images import build_images

        build_images(source, Path(self.layout.images_dir), force=force, progress=self.progress)

    def start_agent(self) -> str:
        if self.agent.pid():
            self.progress.info(f"stopping fc-agent (pid {self.agent.pid()})")
            self.agent.stop()
        port = self.agent.saved_port()
        if port is None or not port_is_free(port):
            port = free_port()
        pid = self.agent.start(port)

        def stop() -> None:
            self.agent.stop()

        self.cleanups.append(stop)
        write_json_atomic(self.agent.settings_file, {"port": port})
        return f"pid {pid}, log in {self.agent.log_file}"

    def agent_url(self) -> str:
        return agent_url(self.agent.saved_port() or 0)

    def agent_alive(self) -> bool | None:
        return self.agent.pid() is not None

    def agent_log_tail(self, lines: int = 20) -> str:
        return self.agent.log_tail(lines)

    def close(self) -> None:
        pass
