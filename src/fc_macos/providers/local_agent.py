"""fc-agent as a detached process on this machine (used by the ``local`` provider).

The agent runs in its own session (it outlives the command that started it),
writes stdout/stderr to ``agent.log`` and is found again through ``agent.pid``;
a pid counts only while its command line is still fc-agent's for this state
directory (against pid reuse). Probes use the standard library only, so this
module stays light.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fc_macos
from fc_macos.errors import AgentAuthError, AgentRequestError, AgentUnreachable, SetupError

AGENT_MODULE = "fc_macos.agent.main"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


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


def agent_request(url: str, token: str | None, method: str, path: str, body: Any = None, *, timeout: float = 5.0) -> Any:
    """One synchronous call to the agent; typed errors like AgentClient's (in short)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise AgentAuthError("the agent refused the token", hint="run 'fc-macos setup' again") from exc
        raise AgentRequestError(exc.code, "agent", f"the agent answered {exc.code} to {method} {path}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise AgentUnreachable(f"cannot reach fc-agent at {url}: {exc}", hint="run 'fc-macos vm start'") from exc
    return json.loads(text) if text else None


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

    def start(self, port: int, firecracker_bin: str) -> int:
        """Start the agent detached on 127.0.0.1:``port``; returns its pid."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", AGENT_MODULE,
            "--listen", f"127.0.0.1:{port}",
            "--token-file", str(self.token_file),
            "--state-dir", str(self.state_dir),
            "--firecracker-bin", firecracker_bin,
        ]
        env = dict(os.environ)
        package_root = str(Path(fc_macos.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
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

    def wait_ready(self, pid: int, url: str, token: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until /healthz answers and the token works; SetupError (with the
        log's last lines) if the agent exits or does not answer in time."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            _reap(pid)
            if not _proc_cmdline(pid):
                raise SetupError("start-agent", f"fc-agent exited at once:\n{self.log_tail()}",
                                 hint=f"read {self.log_file}; fix the cause and run 'fc-macos setup' again")
            try:
                agent_request(url, None, "GET", "/healthz", timeout=1.0)
                agent_request(url, token, "GET", "/v1/info", timeout=2.0)
                return
            except (AgentUnreachable, AgentRequestError) as exc:
                last = exc
            time.sleep(0.1)
        raise SetupError("start-agent", f"fc-agent did not answer at {url} within {timeout:.0f} s ({last})",
                         hint=f"read {self.log_file}")

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
