"""One microVM as the manager holds it: its persistent record (its
``microvm.json``, see :mod:`fc_macos.agent.state`) plus, while it runs, the live parts (VMM process, console broker,
guest agent tracker, exit watcher); :func:`damaged_microvm`, what stands
for a work directory whose record is lost; and :func:`wait_exit`, how the
manager learns that a VMM process ended."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from fc_macos.agent.console import ConsoleBroker, resolve_once
from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.agent.wire import CREATED, PAUSED, RUNNING, STOPPING, PortSpec
from fc_macos.firecracker.launcher import VMMProcess, pidfd_open

#: States in which the VMM process runs (``created``: configured, guest not started).
RUNNING_STATES = (CREATED, RUNNING, PAUSED, STOPPING)


@dataclass(eq=False)
class MicroVM:
    """One microVM: its persistent record plus, while it runs, the live parts."""

    name: str
    spec: dict[str, Any]
    state: str
    created_at: float
    started_at: float | None = None
    stopped_at: float | None = None
    pid: int | None = None
    start_time: int | None = None
    pgid: int | None = None
    exit_status: int | None = None
    error: str | None = None
    network: dict[str, Any] | None = None
    vsock: dict[str, Any] | None = None
    #: Published ports (PortSpec dicts) to publish again after an agent restart.
    ports: list[dict[str, Any]] | None = None
    #: What the guest agent tracker keeps across agent restarts (version, ready_s, absent).
    guest_agent: dict[str, Any] | None = None
    vmm: VMMProcess | None = None
    broker: ConsoleBroker | None = None
    guest: GuestAgent | None = None
    watcher: asyncio.Task[None] | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    RECORD_FIELDS = (
        "name", "spec", "state", "created_at", "started_at", "stopped_at",
        "pid", "start_time", "pgid", "exit_status", "error", "network", "vsock", "ports", "guest_agent",
    )  # fmt: skip

    def to_record(self) -> dict[str, Any]:
        if self.guest is not None:
            self.guest_agent = self.guest.saved()
        return {k: getattr(self, k) for k in self.RECORD_FIELDS}

    def port_specs(self) -> list[PortSpec]:
        return [PortSpec.from_dict(p) for p in self.ports or []]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MicroVM:
        fields: dict[str, Any] = {k: record.get(k) for k in cls.RECORD_FIELDS}
        return cls(**fields)


def damaged_microvm(name: str, reason: str, workdir: Path) -> MicroVM:
    """A microVM in state ``damaged``: its work directory is there but its
    record cannot be read. ``error`` says why and what to do; nothing of it is
    ever written or removed but by an explicit delete."""
    try:
        created_at = workdir.stat().st_mtime
    except OSError:
        created_at = 0.0
    error = (
        f"damaged: {reason}. Its files are kept in {workdir}: copy out what you need "
        f"(its disk is rootfs.ext4), then remove it with 'fc-macos microvm rm --name {name}'"
    )
    vm = MicroVM(name=name, spec={"name": name}, state="damaged", created_at=created_at, error=error)
    vm.exited.set()
    return vm


async def wait_exit(vmm: VMMProcess) -> None:
    """Return when the VMM process has exited (pidfd readiness; a slow poll
    where pidfds are unavailable)."""
    fd = pidfd_open(vmm.pid)
    if fd is None:
        while vmm.is_alive():
            await asyncio.sleep(0.5)
        return
    loop = asyncio.get_running_loop()
    try:
        if not vmm.is_alive():  # gone (or pid reused) before the pidfd was taken
            return
        done = loop.create_future()
        loop.add_reader(fd, resolve_once, done)
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


__all__ = ["RUNNING_STATES", "MicroVM", "damaged_microvm", "wait_exit"]
