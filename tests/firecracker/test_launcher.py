"""The Firecracker launcher, with a small shell script standing in for the
Firecracker binary (a process-boundary double): command line, own session,
console FIFOs, exit status, pid + start time."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import time
from pathlib import Path

import pytest

from fc_macos.errors import FirecrackerError
from fc_macos.firecracker.launcher import VMMPaths, VMMProcess, launch, proc_start_time, read_exit_status, wait_gone

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)

FAKE_VMM = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$2")/argv"
echo "ready"
while read -r line; do
    [ "$line" = quit ] && exit 7
    echo "got $line"
done
exit 3
"""


@pytest.fixture
def workdir(short_tmp: Path) -> Path:
    return short_tmp


@pytest.fixture
def fake_vmm(workdir: Path) -> str:
    script = workdir.parent / f"{workdir.name}-vmm"
    script.write_text(FAKE_VMM)
    script.chmod(0o755)
    yield str(script)
    script.unlink()


def read_until(fd: int, text: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"{text!r} not seen; got {seen!r}"
        seen += os.read(fd, 4096)
    return seen


def wait_exit_status(paths: VMMPaths, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (status := read_exit_status(paths)) is None:
        assert time.monotonic() < deadline, "no exit_status written"
        time.sleep(0.02)
    return status


def test_launch_command_line_session_console_and_exit_status(workdir: Path, fake_vmm: str) -> None:
    paths = VMMPaths(workdir)
    vmm = launch(fake_vmm, "vm-1", paths)
    out = os.open(paths.console_out, os.O_RDONLY | os.O_NONBLOCK)
    try:
        read_until(out, b"ready\n")
        assert (workdir / "argv").read_text().split("\n")[:10] == [
            "--api-sock", str(paths.api_sock), "--id", "vm-1", "--log-path", str(paths.log),
            "--level", "Info", "--metrics-path", str(paths.metrics),
        ]  # fmt: skip
        assert paths.log.exists() and paths.metrics.exists()
        # its own session, not the caller's; pid and start time identify it
        assert os.getsid(vmm.pid) != os.getsid(0)
        assert os.getpgid(vmm.pid) == vmm.pgid
        assert vmm.is_alive() and proc_start_time(vmm.pid) == vmm.start_time
        assert VMMProcess.find(paths, vmm.pid, vmm.start_time, vmm.pgid) == vmm
        assert VMMProcess.find(paths, vmm.pid, vmm.start_time + 1, vmm.pgid) is None
        # the console: stdin from console.in, stdout to console.out (grown to ~1 MiB)
        assert fcntl.fcntl(out, F_GETPIPE_SZ) >= 1024 * 1024
        with open(paths.console_in, "wb", buffering=0) as console_in:
            console_in.write(b"hello\n")
            read_until(out, b"got hello\n")
            # closing our end does not give the VMM EOF (it holds console.in O_RDWR)
        time.sleep(0.2)
        assert vmm.is_alive()
        with open(paths.console_in, "wb", buffering=0) as console_in:
            console_in.write(b"quit\n")
        assert wait_exit_status(paths) == 7
        assert not vmm.is_alive()
        assert vmm.exit_status() == 7
    finally:
        os.close(out)


def test_output_waits_in_the_pipe_while_nobody_reads(workdir: Path, fake_vmm: str) -> None:
    paths = VMMPaths(workdir)
    vmm = launch(fake_vmm, "vm-2", paths)
    with open(paths.console_in, "wb", buffering=0) as console_in:
        for i in range(100):
            console_in.write(f"line{i}\n".encode())
    time.sleep(0.5)
    assert vmm.is_alive()  # no SIGPIPE, no blocking: the output sits in the pipe
    out = os.open(paths.console_out, os.O_RDONLY | os.O_NONBLOCK)
    try:
        read_until(out, b"got line99\n")
    finally:
        os.close(out)
    vmm.signal(signal.SIGTERM)
    assert wait_exit_status(paths) == 128 + signal.SIGTERM
    assert wait_gone(vmm.pid, vmm.start_time, 10)
    assert vmm.signal(signal.SIGKILL) is False


def test_binary_that_exits_at_once_reports_its_stderr_and_status(workdir: Path) -> None:
    script = workdir / "broken"
    script.write_text("#!/bin/sh\necho 'no /dev/kvm here' >&2\nexit 1\n")
    script.chmod(0o755)
    paths = VMMPaths(workdir / "w")
    paths.workdir.mkdir()
    try:
        launch(str(script), "vm-3", paths)
    except FirecrackerError as exc:
        assert "no /dev/kvm here" in exc.message and "status 1" in exc.message
    else:  # it was still alive when its pid was read: the wrapper records how it ended
        assert wait_exit_status(paths) == 1
        assert "no /dev/kvm here" in paths.stderr.read_text()


def test_missing_work_directory_is_firecracker_error(workdir: Path, fake_vmm: str) -> None:
    with pytest.raises(FirecrackerError) as info:
        launch(fake_vmm, "vm-5", VMMPaths(workdir / "missing"))
    assert "missing" in info.value.message


def test_missing_binary_is_firecracker_error(workdir: Path) -> None:
    paths = VMMPaths(workdir)
    with pytest.raises(FirecrackerError) as info:
        launch(str(workdir / "nope"), "vm-4", paths)
    assert info.value.hint


SPIN_THEN_SLEEP = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    pass
time.sleep(600)
"""


def _cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_usage_reports_the_last_interval_not_the_average_since_start(workdir: Path) -> None:
    import subprocess
    import sys

    stop_spinning = workdir / "stop-spinning"
    proc = subprocess.Popen([sys.executable, "-c", SPIN_THEN_SLEEP, str(stop_spinning)])
    try:
        start_time = proc_start_time(proc.pid)
        assert start_time is not None
        vmm = VMMProcess(pid=proc.pid, start_time=start_time, pgid=proc.pid, paths=VMMPaths(workdir))
        first = vmm.usage()
        assert first is not None and first.cpu_percent == first.cpu_percent_avg  # nothing earlier to compare with
        deadline = time.monotonic() + 60
        busy = 0.0
        while busy < 30 or _cpu_seconds(proc.pid) < 1.0:  # spinning: the interval's figure is high
            assert time.monotonic() < deadline, f"the spinner never showed as busy (last {busy}%)"
            time.sleep(0.2)
            usage = vmm.usage()
            assert usage is not None
            busy = usage.cpu_percent
        stop_spinning.touch()
        while True:  # asleep now: the interval's figure drops to nothing, the average remembers
            assert time.monotonic() < deadline, f"the sleeping process never showed as idle: {usage}"
            time.sleep(0.2)
            usage = vmm.usage()
            assert usage is not None and usage.cpu_percent_avg is not None
            if usage.cpu_percent <= 1.0:
                break
        assert usage.cpu_percent_avg > 5.0 and usage.cpu_percent < usage.cpu_percent_avg / 2, usage
        assert usage.memory_rss_mib > 1.0
        assert len(vmm._cpu_samples) <= 12  # the history stays short (one sample per 0.1 s at most, 1 s back)
    finally:
        proc.kill()
        proc.wait()
    assert vmm.usage() is None  # gone
