"""Finding VMM process groups by the work directory their command lines name,
and killing a group whole (the wrapper, the VMM and whatever it started)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.agent import vmm_processes
from fc_macos.firecracker.launcher import WRAPPER, proc_start_time

#: Stands in for Firecracker: sleeps, with a child of its own in the same group.
VMM = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def start_wrapped(workdir: Path, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """The launcher's wrapper around a stand-in VMM, in its own session, as the agent starts it."""
    workdir.mkdir(parents=True)
    argv = [sys.executable, "-c", VMM, "--api-sock", str(workdir / "api.sock")]
    proc = subprocess.Popen(["/bin/sh", "-c", WRAPPER, vmm_processes.WRAPPER_NAME, str(workdir), *argv],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    procs.append(proc)
    for _ in range(500):
        if (workdir / "vmm.pid").exists():
            break
        time.sleep(0.01)
    return proc


def group_members(pgid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def test_groups_are_found_by_work_directory_and_killed_whole(short_tmp: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    microvms = short_tmp / "microvms"
    a = start_wrapped(microvms / "a", procs)
    start_wrapped(microvms / "b", procs)
    start_wrapped(short_tmp / "elsewhere" / "c", procs)  # another agent's: never found
    groups = {g.name: g for g in vmm_processes.find(microvms)}
    assert set(groups) == {"a", "b"}
    assert groups["a"].pgid == a.pid and a.pid in groups["a"].pids
    vmm_pid = int((microvms / "a" / "vmm.pid").read_text())
    assert vmm_pid in groups["a"].pids

    # the group goes whole, the sleep child the "VMM" started included
    for _ in range(500):  # wrapper, VMM, its child (once the stand-in's Python is up)
        members = group_members(a.pid)
        if len(members) >= 3:
            break
        time.sleep(0.01)
    assert len(members) >= 3, members
    assert vmm_processes.kill(groups["a"])
    a.wait(timeout=10)
    assert all(proc_start_time(pid) is None for pid in members if pid != a.pid)
    assert [g.name for g in vmm_processes.find(microvms)] == ["b"]
