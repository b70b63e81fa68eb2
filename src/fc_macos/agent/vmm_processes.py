"""Finding the VMM processes of this agent's work directories, on any record.

Every VMM the agent starts (see :mod:`fc_macos.firecracker.launcher`) names its
work directory on its command line: the wrapper runs as ``/bin/sh -c WRAPPER
fc-vmm-wrapper <workdir> <firecracker> ...`` and Firecracker as ``<firecracker>
--api-sock <workdir>/api.sock ...``. Both live in the process group the wrapper
leads (its own session), with any helpers Firecracker starts. So whatever a
crash left unrecorded, :func:`find` recovers from ``/proc`` which microVM work
directory (under ``microvms_dir``) each such group belongs to, and
:func:`kill` ends a group for good. The manager keeps the groups its records
account for and kills the others (:meth:`MicroVMManager.start`), and kills a
microVM's groups before its work directory goes (delete, failed create).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

WRAPPER_NAME = "fc-vmm-wrapper"


@dataclass(frozen=True)
class VMMGroup:
    """One process group started for the work directory ``microvms_dir/name``."""

    name: str
    pgid: int
    pids: tuple[int, ...]


def _workdir_of(argv: list[str]) -> str | None:
    """The work directory named by a wrapper's or a VMM's command line, if any."""
    if len(argv) > 4 and argv[3] == WRAPPER_NAME and argv[1] == "-c":
        return argv[4]
    for i, arg in enumerate(argv[:-1]):
        if arg == "--api-sock":
            return os.path.dirname(argv[i + 1])
    return None


def _read(pid: str) -> tuple[list[str], str, int] | None:
    """(argv, state, pgid) of ``pid``, or None if it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return raw.rstrip(b"\0").decode(errors="replace").split("\0"), fields[0], int(fields[2])


def find(microvms_dir: Path) -> list[VMMGroup]:
    """The live process groups whose wrapper or VMM names a work directory
    directly under ``microvms_dir`` (zombies are left out), sorted by name."""
    root = os.path.abspath(microvms_dir)
    groups: dict[int, tuple[str, list[int]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        found = _read(entry)
        if found is None:
            continue
        argv, state, pgid = found
        workdir = _workdir_of(argv)
        if state == "Z" or workdir is None or os.path.dirname(os.path.abspath(workdir)) != root:
            continue
        name = os.path.basename(workdir)
        groups.setdefault(pgid, (name, []))[1].append(int(entry))
    return sorted(
        (VMMGroup(name, pgid, tuple(sorted(pids))) for pgid, (name, pids) in groups.items()),
        key=lambda g: (g.name, g.pgid),
    )


def kill(group: VMMGroup, timeout_s: float = 10.0) -> bool:
    """SIGKILL the whole group (only its own processes if it is somehow the
    agent's own group) and wait until they are gone; True if they went."""
    if group.pgid > 1 and group.pgid != os.getpgrp():
        try:
            os.killpg(group.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        for pid in group.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in group.pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    found = _read(str(pid))
    return found is not None and found[1] != "Z"


__all__ = ["VMMGroup", "find", "kill"]
