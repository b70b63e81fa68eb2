"""The named steps of ``fc-macos setup`` for the ``tart`` provider.

Setup is an editable list of :class:`Step` (``STEPS``), run in order by
:func:`run_steps`. Each step either does its work, or raises :class:`Skipped`
when it is already done (re-running setup is safe and quick). A failing step
becomes :class:`~fc_macos.errors.SetupError` naming it, with a hint. Cleanups a
step registers (``ctx.cleanups``) run, newest first, when a later step fails,
and are dropped once a step marked ``commit`` succeeds: a half-started VM is
stopped, a half-cloned VM deleted.

Everything that depends on the VM's architecture (Firecracker release, kernel
format, the Python of the wheels) follows what the VM reports in
``inspect-vm``.

Host checks: on macOS, ``sw_vers`` and ``sysctl machdep.cpu.brand_string``
must show macOS 15+ and an M3 or later chip (nested virtualization). On any
other host (tests, CI) these checks are *not applicable* and are reported as
such; there ``tart run --nested`` itself is the check, and its failure
(Tart's "M3 chip, and later" / "macOS 15" messages) becomes a SetupError with
the same hint.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fc_macos.errors import FcMacosError, SetupError
from fc_macos.progress import Progress
from fc_macos.providers.base import Check

MIN_TART = (2, 27, 0)
MIN_MACOS = 15
MIN_CHIP = 3
MIN_PYTHON = (3, 10)
NESTED_HINT = ("nested virtualization needs a Mac with an M3 chip or later, macOS 15 or later and "
               "Tart >= 2.20 ('tart run --nested'); fc-macos cannot run Firecracker on this Mac otherwise")
TART_UPGRADE = "upgrade Tart: 'brew upgrade cirruslabs/cli/tart'"

# Where things live inside the VM.
AGENT_PORT = 8080
GUEST_LIB = "/opt/fc-agent/lib"
WHEELS_MANIFEST = "/opt/fc-agent/wheels.sha256"
TOKEN_FILE = "/etc/fc-agent/token"
STATE_DIR = "/var/lib/fc-agent"
IMAGES_DIR = f"{STATE_DIR}/images"
AGENT_PID = f"{STATE_DIR}/agent.pid"
AGENT_LOG = "/var/log/fc-agent.log"
FIRECRACKER = "/usr/local/bin/firecracker"
UNIT_FILE = "/etc/systemd/system/fc-agent.service"

FIRECRACKER_VERSION = "v1.16.1"
#: Published SHA-256 of the release tarballs (firecracker-<v>-<arch>.tgz).
FIRECRACKER_SHA256 = {
    "x86_64": "382a02a869e4d6d5cb14c40577f9545e8458021ea8b0b2d3fc10ec14d9c242e6",
    "aarch64": "8d0e69f6d6f9a1724551f607f18504052c16c1828ee3d4d7b6e6c73380871e0e",
}


def firecracker_release(arch: str) -> tuple[str, str, str]:
    """(tarball URL, its sha256, the binary's path inside the tarball) for ``arch``."""
    if arch not in FIRECRACKER_SHA256:
        raise SetupError("install-firecracker", f"no Firecracker release for the VM's architecture {arch!r}",
                         hint="pass --firecracker-bin with a Firecracker built for it")
    v = FIRECRACKER_VERSION
    url = f"https://github.com/firecracker-microvm/firecracker/releases/download/{v}/firecracker-{v}-{arch}.tgz"
    return url, FIRECRACKER_SHA256[arch], f"release-{v}-{arch}/firecracker-{v}-{arch}"


# -- host checks ---------------------------------------------------------------------------


def _command(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def check_macos(platform: str = sys.platform) -> Check:
    """macOS 15 or later (nested virtualization); not applicable elsewhere."""
    if platform != "darwin":
        return Check("macos", True, f"not applicable on {platform}: 'tart run --nested' will tell")
    version = _command(["sw_vers", "-productVersion"]) or ""
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < MIN_MACOS:
        return Check("macos", False, f"macOS {version or 'unknown'}: nested virtualization needs macOS 15+",
                     "upgrade macOS to 15 (Sequoia) or later")
    return Check("macos", True, f"macOS {version}")


def check_chip(platform: str = sys.platform) -> Check:
    """An Apple M3 chip or later; not applicable off macOS."""
    if platform != "darwin":
        return Check("chip", True, f"not applicable on {platform}: 'tart run --nested' will tell")
    brand = _command(["sysctl", "-n", "machdep.cpu.brand_string"]) or "unknown"
    match = re.search(r"\bM(\d+)\b", brand)
    if not match or int(match[1]) < MIN_CHIP:
        return Check("chip", False, f"{brand}: nested virtualization needs an M3 chip or later",
                     "use a Mac with an M3 chip or later (or the 'local' provider on a Linux machine with KVM)")
    return Check("chip", True, brand)


def check_tart_version(version: tuple[int, int, int]) -> Check:
    text = ".".join(map(str, version))
    if version < MIN_TART:
        return Check("tart", False, f"Tart {text} lacks 'tart exec' (needs >= 2.27.0)", TART_UPGRADE)
    return Check("tart", True, f"Tart {text}")


def nested_failure(log_text: str) -> bool:
    """True if ``tart run``'s output says the host cannot do nested virtualization."""
    text = log_text.lower()
    return "m3 chip" in text or "macos 15" in text or "nested virtualization" in text


# -- the step machinery ----------------------------------------------------------------------


class Skipped(Exception):
    """Raised by a step that finds its work already done."""


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[], str | None]  # returns a detail for progress.done
    hint: str = "run 'fc-macos setup' again; 'fc-macos doctor' checks the prerequisites"
    commit: bool = False  # success drops the cleanups registered so far


def run_steps(steps: list[Step], progress: Progress, cleanups: list[Callable[[], None]]) -> None:
    """Run ``steps`` in order (see the module docstring)."""
    for step in steps:
        progress.step(step.name, step.description)
        try:
            detail = step.run()
        except Skipped as skip:
            progress.skip(step.name, str(skip))
            continue
        except BaseException as exc:
            _undo(cleanups)
            if isinstance(exc, SetupError):
                raise
            if isinstance(exc, FcMacosError):
                raise SetupError(step.name, exc.message, hint=exc.hint or step.hint) from exc
            if isinstance(exc, OSError):
                raise SetupError(step.name, str(exc), hint=step.hint) from exc
            raise
        progress.done(step.name, detail or "")
        if step.commit:
            cleanups.clear()


def _undo(cleanups: list[Callable[[], None]]) -> None:
    while cleanups:
        undo = cleanups.pop()
        try:
            undo()
        except Exception:  # noqa: BLE001 - best effort: the step's own error is what matters
            pass


def private_file(content: str, directory: Path) -> Path:
    """A 0600 temporary file holding ``content`` (deleted by the caller)."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=directory, prefix=".serve-", delete=False)
    with handle:
        handle.write(content)
    return Path(handle.name)


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

# $1 pid file: stop the detached agent, if any.
STOP_DETACHED = r"""
[ -f "$1" ] || exit 0
old=$(cat "$1")
if [ -n "$old" ] && grep -q fc_macos.agent.main "/proc/$old/cmdline" 2>/dev/null; then kill "$old"; fi
rm -f "$1"
"""

# $1 tarball URL, $2 sha256, $3 member, $4 destination.
INSTALL_RELEASE = r"""
set -e
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsSL --retry 3 --connect-timeout 20 -o "$work/fc.tgz" "$1"
echo "$2  $work/fc.tgz" | sha256sum -c - >/dev/null
tar -xzf "$work/fc.tgz" -C "$work" "$3"
install -m 0755 "$work/$3" "$4.tmp"
mv -f "$4.tmp" "$4"
"""
