"""``TartCLI``: a typed runner of the ``tart`` program (see Tart's CLI contract).

fc-macos never links to Tart; it runs ``tart`` and reads what it prints. Every
call goes through a :class:`CommandRunner` (the swappable I/O boundary: tests
either pass a Tart double as the program, or a runner of their own). Tart's
exit codes become :class:`~fc_macos.errors.TartError` with a hint:
2 = the VM does not exist / is not running / is already running, 64 = usage
error (this Tart does not speak the command line fc-macos uses), 1 = anything
else.

The program is found, in order, from ``FC_MACOS_TART``, ``PATH``, then
``~/Applications/tart.app/Contents/MacOS/tart`` and ``/Applications/...``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fc_macos.errors import NotFoundError, TartError

INSTALL_HINT = "install Tart with 'brew install cirruslabs/cli/tart' (or set FC_MACOS_TART to its path)"
UPGRADE_HINT = "upgrade Tart with 'brew upgrade cirruslabs/cli/tart'"
EXIT_VM_STATE = 2  # VM does not exist / is not running / is already running
EXIT_USAGE = 64


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    """How TartCLI starts processes. Implementations never raise for a non-zero
    exit; they raise ``OSError`` when the program cannot be started and
    ``subprocess.TimeoutExpired`` on timeout."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        """Run to completion, capturing stdout and stderr as text."""

    def spawn_detached(self, argv: Sequence[str], *, log_path: Path) -> int:
        """Start ``argv`` in its own session, not a child of this process, with
        stdin from /dev/null and stdout+stderr appended to ``log_path``. Returns its pid."""

    def interactive(self, argv: Sequence[str]) -> int:
        """Run with this process's terminal; returns the exit code."""

    def stream(self, argv: Sequence[str]) -> Iterator[str]:
        """Yield stdout lines while the program runs; stops it when the consumer stops."""


_DETACH = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab')\n"
    "p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log,"
    " start_new_session=True, close_fds=True)\n"
    "print(p.pid)\n"
)


class SubprocessRunner:
    """The real runner, on :mod:`subprocess`."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        proc = subprocess.run(
            list(argv),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def spawn_detached(self, argv: Sequence[str], *, log_path: Path) -> int:
        # A short-lived intermediate starts the program and exits, so the
        # program is re-parented (never our zombie) and outlives this process.
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [sys.executable, "-c", _DETACH, str(log_path), *argv],
            capture_output=True, text=True, check=False, timeout=30,
        )
        if out.returncode != 0:
            raise OSError(f"cannot start {argv[0]}: {out.stderr.strip()}")
        return int(out.stdout.strip())

    def interactive(self, argv: Sequence[str]) -> int:
        return subprocess.run(list(argv), check=False).returncode

    def stream(self, argv: Sequence[str]) -> Iterator[str]:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        try:
            yield from proc.stdout
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.stdout.close()
            proc.wait()


def find_tart(env: Mapping[str, str] | None = None) -> Path:
    """The ``tart`` program: ``FC_MACOS_TART``, else ``PATH``, else the app bundle."""
    env = os.environ if env is None else env
    explicit = env.get("FC_MACOS_TART")
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NotFoundError(
                f"FC_MACOS_TART={explicit} is not an executable file",
                hint="point FC_MACOS_TART at the tart program, or unset it to use the one on PATH",
            )
        return path
    found = shutil.which("tart", path=env.get("PATH"))
    if found:
        return Path(found)
    for app in (Path.home() / "Applications", Path("/Applications")):
        candidate = app / "tart.app" / "Contents" / "MacOS" / "tart"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise NotFoundError("the tart program was not found (FC_MACOS_TART, PATH, ~/Applications/tart.app)",
                        hint=INSTALL_HINT)


def parse_version(text: str) -> tuple[int, int, int]:
    """``"2.32.1"`` (possibly with a prefix or suffix) -> ``(2, 32, 1)``."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise TartError(f"cannot read Tart's version from {text.strip()!r}", hint=UPGRADE_HINT)
    return int(match[1]), int(match[2]), int(match[3] or 0)


@dataclass(frozen=True)
class TartVM:
    """One row of ``tart list --format json``."""

    name: str
    source: str  # "local" | "OCI"
    state: str
    running: bool
    disk_gb: int
    size_gb: int

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> TartVM:
        return cls(
            name=str(row["Name"]),
            source=str(row.get("Source", "local")),
            state=str(row.get("State", "running" if row.get("Running") else "stopped")),
            running=bool(row.get("Running", False)),
            disk_gb=int(row.get("Disk", 0)),
            size_gb=int(row.get("Size", 0)),
        )


@dataclass(frozen=True)
class TartVMInfo:
    """``tart get NAME --format json``."""

    os: str
    cpus: int
    memory_mib: int
    disk_gb: int
    running: bool
    state: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TartVMInfo:
        return cls(
            os=str(data.get("OS", "")),
            cpus=int(data["CPU"]),
            memory_mib=int(data["Memory"]),
            disk_gb=int(data.get("Disk", 0)),
            running=bool(data.get("Running", False)),
            state=str(data.get("State", "running" if data.get("Running") else "stopped")),
        )


def _state_hint(name: str, stderr: str) -> str:
    text = stderr.lower()
    if "does not exist" in text:
        return f"the VM '{name}' does not exist: run 'fc-macos setup' to create it ('tart list' shows the VMs)"
    if "already running" in text:
        return f"the VM '{name}' is already running: use it, or stop it with 'fc-macos vm stop'"
    if "not running" in text:
        return f"the VM '{name}' is not running: start it with 'fc-macos vm start'"
    return "see Tart's message above ('tart list' shows the VMs and their states)"


class TartCLI:
    """Typed calls of the ``tart`` program. Stateless; safe to share."""

    def __init__(self, program: Path | None = None, runner: CommandRunner | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._program = program
        self._env = env
        self.runner: CommandRunner = runner or SubprocessRunner()

    @property
    def program(self) -> Path:
        """The ``tart`` program (found on first use; ``NotFoundError`` if absent)."""
        if self._program is None:
            self._program = find_tart(self._env)
        return self._program

    # -- plumbing ---------------------------------------------------------------------------

    def _argv(self, *args: str) -> list[str]:
        return [str(self.program), *args]

    def _run(self, *args: str, timeout: float | None = 120.0, check: bool = True,
             stdin: str | None = None, vm: str = "") -> CommandResult:
        argv = self._argv(*args)
        try:
            result = self.runner.run(argv, timeout=timeout, stdin=stdin)
        except subprocess.TimeoutExpired as exc:
            raise TartError(
                f"'tart {' '.join(args[:2])}' did not finish within {timeout:.0f} s",
                hint="check the VM with 'tart list' and try again",
            ) from exc
        except OSError as exc:
            raise TartError(f"cannot run {argv[0]}: {exc}", hint=INSTALL_HINT) from exc
        if check and result.returncode != 0:
            raise self.error(args, result, vm=vm)
        return result

    def error(self, args: Sequence[str], result: CommandResult, *, vm: str = "") -> TartError:
        """The TartError for a failed ``tart ARGS`` (``result.returncode != 0``)."""
        code = result.returncode
        stderr = result.stderr.strip()
        what = f"'tart {args[0]}'" if args else "tart"
        message = f"{what} failed (exit {code}): {stderr or result.stdout.strip() or 'no message'}"
        if code == EXIT_VM_STATE:
            hint = _state_hint(vm, stderr)
        elif code == EXIT_USAGE:
            hint = f"this Tart does not accept the command line fc-macos uses: {UPGRADE_HINT} ('tart --version')"
        else:
            hint = "see Tart's message above; 'tart --help' lists the commands"
        return TartError(message, tart_exit_code=code, stderr=stderr, hint=hint)

    # -- commands ---------------------------------------------------------------------------

    def version(self) -> tuple[int, int, int]:
        """``tart --version`` as a tuple, e.g. ``(2, 32, 1)``."""
        return parse_version(self._run("--version", timeout=30).stdout)

    def list_all(self) -> list[TartVM]:
        """Every row of ``tart list``, including pulled OCI images."""
        out = self._run("list", "--format", "json", timeout=60).stdout
        try:
            rows = json.loads(out or "[]")
            return [TartVM.from_json(row) for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise TartError(f"cannot parse 'tart list --format json': {exc}", hint=UPGRADE_HINT) from exc

    def list_vms(self) -> list[TartVM]:
        """The local VMs (``"Source": "local"``)."""
        return [vm for vm in self.list_all() if vm.source == "local"]

    def find(self, name: str) -> TartVM | None:
        """The local VM ``name``, or None."""
        return next((vm for vm in self.list_vms() if vm.name == name), None)

    def get(self, name: str) -> TartVMInfo:
        out = self._run("get", name, "--format", "json", timeout=60, vm=name).stdout
        try:
            return TartVMInfo.from_json(json.loads(out))
        except (ValueError, KeyError, TypeError) as exc:
            raise TartError(f"cannot parse 'tart get {name} --format json': {exc}", hint=UPGRADE_HINT) from exc

    def clone(self, source: str, name: str, *, timeout: float | None = None) -> None:
        """``tart clone SOURCE NAME`` (pulls an OCI image first: may take long)."""
        self._run("clone", source, name, timeout=timeout, vm=name)

    def set(self, name: str, *, cpus: int | None = None, memory_mib: int | None = None,
            disk_gb: int | None = None) -> None:
        """``tart set``; the VM must be stopped."""
        args = ["set", name]
        if cpus is not None:
            args += ["--cpu", str(cpus)]
        if memory_mib is not None:
            args += ["--memory", str(memory_mib)]
        if disk_gb is not None:
            args += ["--disk-size", str(disk_gb)]
        self._run(*args, timeout=60, vm=name)

    def run_detached(self, name: str, *, log_path: Path, nested: bool = True) -> int:
        """Start ``tart run NAME --no-graphics [--nested]`` in its own session,
        stdout/stderr appended to ``log_path``. Returns its pid; the VM is not
        necessarily up yet (wait with :meth:`ip`)."""
        argv = self._argv("run", name, "--no-graphics", *(["--nested"] if nested else []))
        try:
            return self.runner.spawn_detached(argv, log_path=log_path)
        except OSError as exc:
            raise TartError(f"cannot start 'tart run {name}': {exc}", hint=INSTALL_HINT) from exc

    def ip(self, name: str, *, wait: int | None = None) -> str | None:
        """The VM's IPv4 address, or None when it has none (yet). Raises
        TartError when the VM does not exist."""
        args = ["ip", name] + (["--wait", str(wait)] if wait else [])
        result = self._run(*args, timeout=(wait or 0) + 30, check=False, vm=name)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip().splitlines()[-1].strip()
        if result.returncode == 1:
            return None
        raise self.error(args, result, vm=name)

    def exec(self, name: str, argv: Sequence[str], *, check: bool = True, timeout: float | None = 120.0,
             stdin: str | None = None) -> CommandResult:
        """``tart exec [-i] NAME ARGV...``: runs in the guest as ``admin``.

        Returns the guest command's result; with ``check`` a non-zero exit
        raises TartError quoting the command's stderr. Never feed files through
        ``stdin``: use the file server. Tart's own "VM is not running/does not
        exist" (exit 2 with its message) always raises."""
        args = ["exec", *(["-i"] if stdin is not None else []), name, *argv]
        result = self._run(*args, timeout=timeout, check=False, stdin=stdin, vm=name)
        if result.returncode == EXIT_VM_STATE and _state_hint(name, result.stderr).startswith("the VM"):
            raise self.error(args, result, vm=name)
        if check and result.returncode != 0:
            raise TartError(
                f"'{' '.join(argv)}' failed in the VM '{name}' (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip() or 'no message'}",
                tart_exit_code=result.returncode, stderr=result.stderr,
                hint=f"look inside with 'fc-macos vm shell' (or 'tart exec -i -t {name} bash -l')",
            )
        return result

    def exec_interactive(self, name: str, argv: Sequence[str], *, tty: bool = True) -> int:
        """``tart exec -i [-t] NAME ARGV...`` on this terminal; the guest's exit code."""
        try:
            return self.runner.interactive(self._argv("exec", "-i", *(["-t"] if tty else []), name, *argv))
        except OSError as exc:
            raise TartError(f"cannot run tart: {exc}", hint=INSTALL_HINT) from exc

    def exec_stream(self, name: str, argv: Sequence[str]) -> Iterator[str]:
        """Lines printed by ``tart exec NAME ARGV...`` while it runs."""
        try:
            yield from self.runner.stream(self._argv("exec", name, *argv))
        except OSError as exc:
            raise TartError(f"cannot run tart: {exc}", hint=INSTALL_HINT) from exc

    def stop(self, name: str, *, timeout: int | None = None) -> None:
        """``tart stop NAME [--timeout SECS]`` (0 = kill at once)."""
        args = ["stop", name] + (["--timeout", str(timeout)] if timeout is not None else [])
        self._run(*args, timeout=(timeout if timeout is not None else 30) + 60, vm=name)

    def delete(self, name: str) -> None:
        """``tart delete NAME``; the VM must be stopped."""
        self._run("delete", name, timeout=120, vm=name)
