"""The PID-1 shim, run as PID 1 of a new PID namespace inside a tiny busybox root.

This is the shim's real code path (getpid() == 1): it mounts /proc, starts the supervisor
in the background and execs the real init with its own arguments. What a real guest adds
(vsock, the kernel's fc_macos.init= parameter) is covered by the guest tests of the images.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox")

pytestmark = pytest.mark.skipif(
    BUSYBOX is None or shutil.which("unshare") is None,
    reason="needs busybox (static) and unshare: apt-get install busybox-static util-linux",
)


def make_root(root: Path, agent_binary: Path, init_script: str | None) -> Path:
    for d in ["bin", "sbin", "proc", "dev", "tmp"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    assert BUSYBOX is not None
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in ["sh", "cat", "sleep", "ls"]:
        (root / "bin" / applet).symlink_to("busybox")
    shutil.copy(agent_binary, root / "sbin" / "fc-guest-agent")
    if init_script is not None:
        (root / "sbin" / "init").write_text(init_script)
        (root / "sbin" / "init").chmod(0o755)
    return root


def run_as_pid1(root: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--pid", "--mount", "--kill-child", "chroot", str(root), "/sbin/fc-guest-agent", *args],
        capture_output=True, text=True, timeout=timeout,
    )


INIT = """#!/bin/sh
echo "init: pid=$$ args=$*"
sleep 0.5
for p in /proc/[0-9]*; do
    echo "proc: $(cat $p/cmdline | tr '\\0' ' ')"
done
"""


def test_shim_mounts_proc_starts_the_supervisor_and_execs_init_with_its_args(
        agent_binary: Path, tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", agent_binary, INIT)
    proc = run_as_pid1(root, "single", "quiet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "init: pid=1 args=single quiet" in lines  # exec'd in place of PID 1, argv[1..] kept
    procs = [line for line in lines if line.startswith("proc: ")]
    # /proc was mounted by the shim (the chroot's /proc was an empty directory), and the
    # supervisor (and, on this vsock-less host, its restarting server) runs beside init.
    assert any("fc-guest-agent" in line for line in procs), lines


def test_shim_without_any_init_keeps_pid1_alive_and_says_why(agent_binary: Path, tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", agent_binary, None)
    (root / "bin" / "sh").unlink()  # nothing left to exec
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_as_pid1(root, timeout=3)
    stderr = info.value.stderr
    text = stderr.decode() if isinstance(stderr, bytes) else (stderr or "")
    assert "no init found" in text
