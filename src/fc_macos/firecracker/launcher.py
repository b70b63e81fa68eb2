"""Start a Firecracker binary so that it outlives the request and the agent.

:func:`launch` runs ``<firecracker> --api-sock <workdir>/api.sock --id <name>
--log-path <workdir>/firecracker.log --level Info --metrics-path
<workdir>/metrics.json`` under a tiny ``/bin/sh`` wrapper started in its own
session (``setsid``). The wrapper records the VMM's pid in ``vmm.pid``, waits
for it and writes its exit status to ``exit_status``. Nothing ties the VMM to
the request or to the agent: killing the agent leaves it running.

The serial console goes through two FIFOs in the work directory:
``console.in`` (the VMM's stdin) and ``console.out`` (its stdout). Both are
opened ``O_RDWR`` on the VMM side, so the VMM never sees EOF on stdin and never
gets SIGPIPE on stdout while no agent reads it; ``console.out``'s pipe is grown
to ~1 MiB so output written while the agent is down waits for it.

:class:`VMMProcess` identifies the VMM by pid *and* start time (field 22 of
``/proc/<pid>/stat``), so a recycled pid is never mistaken for it; after an
agent restart :meth:`VMMProcess.find` rebuilds it from those two numbers.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fc_macos.errors import FirecrackerError
from fc_macos.sampling import RecentSamples

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
CONSOLE_PIPE_BYTES = 1024 * 1024

# fd 0/1 of the wrapper are the console FIFOs. A non-interactive sh points the
# stdin of background jobs at /dev/null, so the FIFOs move to fds 3/4 and the
# VMM gets them through explicit redirections; the wrapper then drops its own
# copies so that it holds nothing but the VMM's pid.
WRAPPER = r"""
dir=$1; shift
exec 3<&0 4>&1 </dev/null >/dev/null
"$@" <&3 >&4 2>>"$dir/stderr.log" 3<&- 4>&- &
vmm=$!
exec 3<&- 4>&-
echo "$vmm" >"$dir/vmm.pid.tmp" && mv "$dir/vmm.pid.tmp" "$dir/vmm.pid"
wait "$vmm"
status=$?
echo "$status" >"$dir/exit_status.tmp" && mv "$dir/exit_status.tmp" "$dir/exit_status"
"""


@dataclass(frozen=True)
class VMMPaths:
    """The files of one microVM's work directory (see docs/design.md)."""

    workdir: Path

    @property
    def api_sock(self) -> Path:
        return self.workdir / "api.sock"

    @property
    def log(self) -> Path:
        return self.workdir / "firecracker.log"

    @property
    def metrics(self) -> Path:
        return self.workdir / "metrics.json"

    @property
    def stderr(self) -> Path:
        return self.workdir / "stderr.log"

    @property
    def console_in(self) -> Path:
        return self.workdir / "console.in"

    @property
    def console_out(self) -> Path:
        return self.workdir / "console.out"

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def exit_status(self) -> Path:
        return self.workdir / "exit_status"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "vmm.pid"

    @property
    def rootfs(self) -> Path:
        return self.workdir / "rootfs.ext4"


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone
    (or a zombie, which is as good as gone)."""
    fields = _proc_stat(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


@dataclass(frozen=True)
class ProcessUsage:
    """``cpu_percent``: percent of one core over the last interval (see
    :meth:`VMMProcess.usage`); ``cpu_percent_avg``: since the process started."""

    cpu_percent: float
    memory_rss_mib: float
    cpu_percent_avg: float | None = None


@dataclass(frozen=True)
class VMMProcess:
    """One running (or once running) VMM: pid, its start time, its files."""

    pid: int
    start_time: int
    pgid: int
    paths: VMMPaths
    #: (monotonic time, (CPU seconds,)) samples taken by :meth:`usage`.
    _cpu_samples: RecentSamples = field(default_factory=RecentSamples, compare=False, repr=False)

    @classmethod
    def find(cls, paths: VMMPaths, pid: int, start_time: int, pgid: int) -> VMMProcess | None:
        """The VMM recorded as ``pid``/``start_time`` if that process still runs, else None."""
        if proc_start_time(pid) != start_time:
            return None
        return cls(pid=pid, start_time=start_time, pgid=pgid, paths=paths)

    def is_alive(self) -> bool:
        return proc_start_time(self.pid) == self.start_time

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the VMM; False if it is no longer running."""
        if not self.is_alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill_leftovers(self) -> None:
        """SIGKILL whatever is left in the VMM's session group (helpers it
        started). Call only right after the VMM has exited and its exit status
        was written, never later (the group id could be reused)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def exit_status(self) -> int | None:
        """What the wrapper wrote when the VMM exited (None while it runs, or
        if the wrapper itself was killed)."""
        return read_exit_status(self.paths)

    def usage(self) -> ProcessUsage | None:
        """CPU use and resident memory; None once the process is gone.

        ``cpu_percent`` (percent of one core) covers the last interval, about
        a second (:class:`fc_macos.sampling.RecentSamples`: since the newest
        earlier call at least 0.8 s ago, or at least 0.5 s), so callers
        polling every second see the last second's use however many of them
        there are; until such a call exists (the first call) it is the average since
        start, also reported as ``cpu_percent_avg``. Samples are kept per
        :class:`VMMProcess` object.
        """
        fields = _proc_stat(self.pid)
        if fields is None or int(fields[19]) != self.start_time:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        now = time.monotonic()
        cpu_s = (int(fields[11]) + int(fields[12])) / ticks
        age_s = max(_uptime_s() - self.start_time / ticks, 1e-3)
        rss_kib = 0
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
                    break
        except OSError:
            return None
        average = 100.0 * cpu_s / age_s
        base = self._cpu_samples.add(now, (cpu_s,))
        if base is None:
            current = average
        else:
            then, (cpu_then,) = base
            current = 100.0 * max(0.0, cpu_s - cpu_then) / (now - then)
        return ProcessUsage(cpu_percent=round(current, 2), memory_rss_mib=round(rss_kib / 1024, 2),
                            cpu_percent_avg=round(average, 2))


def _uptime_s() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def read_exit_status(paths: VMMPaths) -> int | None:
    try:
        return int(paths.exit_status.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def make_fifos(paths: VMMPaths) -> None:
    for fifo in (paths.console_in, paths.console_out):
        if not fifo.exists():
            os.mkfifo(fifo, 0o600)


def launch(firecracker_bin: str, name: str, paths: VMMPaths, *, pid_timeout_s: float = 10.0) -> VMMProcess:
    """Start ``firecracker_bin`` for microVM ``name`` in ``paths.workdir``.

    The work directory must exist; the console FIFOs and the log file are
    created here. Returns once the wrapper has reported the VMM's pid; the API
    socket may not exist yet. Raises FirecrackerError if the process cannot be
    started. Not idempotent: each call starts a new VMM.
    """
    if shutil.which(firecracker_bin) is None:
        raise FirecrackerError(
            f"Firecracker binary {firecracker_bin!r} not found or not executable",
            hint="install Firecracker, or point fc-agent's --firecracker-bin at it",
        )
    try:
        make_fifos(paths)
        paths.log.touch()
        paths.metrics.touch()
        for stale in (paths.api_sock, paths.exit_status, paths.pid_file):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise FirecrackerError(
            f"cannot prepare {paths.workdir} for Firecracker: {exc}",
            hint="check that the agent's state directory exists and is writable",
        ) from exc
    argv = [
        firecracker_bin,
        "--api-sock", str(paths.api_sock),
        "--id", name,
        "--log-path", str(paths.log),
        "--level", "Info",
        "--metrics-path", str(paths.metrics),
    ]  # fmt: skip
    console_in = os.open(paths.console_in, os.O_RDWR)
    console_out = os.open(paths.console_out, os.O_RDWR)
    try:
        try:
            fcntl.fcntl(console_out, F_SETPIPE_SZ, CONSOLE_PIPE_BYTES)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default 64 KiB still works
        with open(paths.stderr, "ab") as stderr:
            wrapper = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, "fc-vmm-wrapper", str(paths.workdir), *argv],
                stdin=console_in,
                stdout=console_out,
                stderr=stderr,
                cwd=paths.workdir,
                start_new_session=True,
                close_fds=True,
            )
        # Reap the wrapper whenever it ends, so it never lingers as a zombie of the agent.
        threading.Thread(target=wrapper.wait, name=f"reap-{name}", daemon=True).start()
    except OSError as exc:
        raise FirecrackerError(
            f"cannot start {firecracker_bin}: {exc}",
            hint="check fc-agent's --firecracker-bin setting",
        ) from exc
    finally:
        os.close(console_in)
        os.close(console_out)
    deadline = time.monotonic() + pid_timeout_s
    while True:
        try:
            pid = int(paths.pid_file.read_text().strip())
            break
        except (FileNotFoundError, ValueError):
            pass
        if wrapper.returncode is not None or time.monotonic() > deadline:
            wrapper.kill()
            raise FirecrackerError(
                f"the wrapper around {firecracker_bin} did not report the VMM's pid",
                hint=f"see {paths.stderr}",
            )
        time.sleep(0.01)
    start_time = proc_start_time(pid)
    if start_time is None:
        # Exited already (e.g. a bad flag): the wrapper writes its status.
        wrapper.wait(timeout=pid_timeout_s)
        status = read_exit_status(paths)
        try:
            said = paths.stderr.read_text(errors="replace").strip()[-300:]
        except OSError:
            said = ""
        raise FirecrackerError(
            f"{firecracker_bin} exited at once with status {status}" + (f": {said}" if said else ""),
            hint=f"check fc-agent's --firecracker-bin and that /dev/kvm is usable; see {paths.log}",
        )
    return VMMProcess(pid=pid, start_time=start_time, pgid=wrapper.pid, paths=paths)


def wait_gone(pid: int, start_time: int, timeout_s: float) -> bool:
    """Poll until the process is gone; True if it went within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while proc_start_time(pid) == start_time:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits), or None where unsupported."""
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.ESRCH):
            return None
        raise
    except AttributeError:
        return None


__all__ = [
    "ProcessUsage", "VMMPaths", "VMMProcess", "launch", "pidfd_open", "proc_start_time", "read_exit_status", "wait_gone",
]
