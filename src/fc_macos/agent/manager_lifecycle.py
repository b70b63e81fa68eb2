"""The lifecycle part of :class:`~fc_macos.agent.manager.MicroVMManager` (a
mixin): starting a stopped microVM again from its own disk, restarting it,
telling a guest that panicked or died at boot from one that runs, and the
snapshots its microVMs made.

A stopped microVM keeps its work directory (its rootfs copy, logs and
sockets' places) and its record (spec, network lease, vsock CID) until it is
deleted, so :meth:`Lifecycle.start_again` boots it with the same spec on the
same disk: the plan is the create's, with ``reuse_workdir`` in place of
``prepare_workdir`` (nothing is copied; the previous console log is kept as
``serial.log.1``) and ``resolve_for_start`` in place of ``resolve_images``
(the rootfs image it was copied from may be gone).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fc_macos.agent import boot_diagnosis as diagnosis
from fc_macos.agent import drive_copies
from fc_macos.agent import network as guest_net
from fc_macos.agent import paths as image_paths
from fc_macos.agent import vsock as guest_vsock
from fc_macos.agent.boot import BootContext, BootStep, plan, run_boot
from fc_macos.agent.microvm import RUNNING_STATES, MicroVM
from fc_macos.agent.ports import PortPublisher
from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.snapshots import SnapshotIndex
from fc_macos.agent.wire import (
    DAMAGED, DEFAULT_WAIT_TIMEOUT_S, FAILED, RUNNING, STARTING, STOPPED, MicroVMInfo, MicroVMSpec, SnapshotSpec,
)
from fc_macos.errors import BootError, ConflictError, FcMacosError, NotFoundError, UsageError, ValidationError
from fc_macos.firecracker.client import FirecrackerClient
from fc_macos.firecracker.launcher import VMMPaths, VMMProcess

log = logging.getLogger("fc_agent.manager")

PANIC_POLL_S = 0.5
NUMBERS = re.compile(r"\d+")


async def resolve_for_start(ctx: BootContext) -> None:
    """Check the kernel, initrd and drives of a recorded spec again (they are
    absolute paths in the image directories; one may have been removed)."""
    dirs = ctx.settings.all_image_dirs
    spec = ctx.spec
    kernel = str(image_paths.resolve_file("kernel", spec.kernel, dirs)) if spec.kernel else None
    initrd = str(image_paths.resolve_file("initrd", spec.initrd, dirs)) if spec.initrd else None
    drives = tuple(
        d if d.path == str(drive_copies.copy_path(ctx.paths.workdir, d.id))  # its private copy (reuse_workdir checks it)
        else replace(d, path=str(image_paths.resolve_file(f"drive {d.id}", d.path, dirs)))
        for d in spec.drives
    )  # fmt: skip
    ctx.rootfs_source = None
    ctx.spec = replace(spec, kernel=kernel, initrd=initrd, drives=drives)


async def reuse_workdir(ctx: BootContext) -> None:
    """Keep the work directory, its rootfs copy and its writable drives'
    copies (a drive added since gets its copy now); move the previous boot's
    console log to ``serial.log.1`` and clear the sockets Firecracker binds."""
    paths = ctx.paths
    own = [("rootfs copy", paths.rootfs)] + [
        (f"copy of drive {d.id!r}", Path(d.path)) for d in ctx.spec.drives
        if d.path == str(drive_copies.copy_path(paths.workdir, d.id))
    ]  # fmt: skip
    for what, disk in own:
        if not disk.is_file():
            raise ConflictError(
                f"microVM {ctx.name!r} cannot start on its own disks: its {what} {disk} is gone",
                hint=f"remove it and create it again: 'fc-macos microvm rm --name {ctx.name}' then "
                f"'fc-macos run --name {ctx.name} ...'",
                code="disk_missing",
            )
    ctx.spec = replace(ctx.spec, drives=await drive_copies.copy_writable(ctx.spec.drives, paths.workdir))
    if paths.serial_log.exists():
        paths.serial_log.replace(paths.workdir / "serial.log.1")
    uds = guest_vsock.uds_path(paths.workdir)
    for stale in (uds, *paths.workdir.glob(uds.name + "_*")):
        stale.unlink(missing_ok=True)


RESOLVE_FOR_START = BootStep("resolve_for_start", resolve_for_start)
REUSE_WORKDIR = BootStep("reuse_workdir", reuse_workdir)


def start_plan(spec: MicroVMSpec, steps: tuple[BootStep, ...]) -> tuple[BootStep, ...]:
    """The create's plan for ``spec`` with the start's two steps swapped in."""
    swap = {"resolve_images": RESOLVE_FOR_START, "prepare_workdir": REUSE_WORKDIR}
    return tuple(swap.get(s.name, s) for s in plan(spec, steps))


class Lifecycle:
    """Mixed into the manager: needs its ``_vms``, ``settings``, ``steps``,
    ``net_runner``, ``ports``, ``snapshots`` and the methods declared below."""

    _vms: dict[str, MicroVM]
    settings: AgentSettings
    steps: tuple[BootStep, ...]
    net_runner: guest_net.CommandRunner
    ports: PortPublisher
    snapshots: SnapshotIndex

    if TYPE_CHECKING:
        def _save(self, vm: MicroVM | None = None, *, strict: bool = False) -> None: ...
        def paths(self, name: str) -> VMMPaths: ...
        def info(self, vm: MicroVM) -> MicroVMInfo: ...
        def _go_live(self, vm: MicroVM, vmm: VMMProcess) -> None: ...
        async def _release_network(self, vm: MicroVM) -> None: ...
        async def _wait_for_guest_agent(self, vm: MicroVM, timeout_s: float) -> None: ...
        async def stop(self, name: str, *, force: bool = False, timeout_s: float = 10.0) -> MicroVMInfo: ...

    # -- names ----------------------------------------------------------------------

    def _not_found(self, name: str) -> NotFoundError:
        """The 404 for an unknown ``name``, with "did you mean" when one is close
        (not another of a numbered series: 'vm-3' is no typo of 'vm-1')."""
        series = NUMBERS.sub("#", name)
        others = [n for n in self._vms if NUMBERS.sub("#", n) != series]
        close = difflib.get_close_matches(name, others, n=3, cutoff=0.6)
        guess = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return NotFoundError(
            f"no microVM named {name!r}",
            hint=f"{guess}list them: 'fc-macos microvm list' (GET /v1/microvms)",
        )

    # -- start, restart -------------------------------------------------------------

    async def _boot(self, vm: MicroVM, spec: MicroVMSpec, steps: tuple[BootStep, ...],
                    net: guest_net.GuestNetwork | None) -> BootContext:  # fmt: skip
        """Publish ``spec``'s ports (a taken port fails at once) and run
        ``steps`` for ``vm`` (its pid is recorded as soon as the VMM runs);
        returns the booted context. On failure the boot's cleanups have run;
        the ports are the caller's to unpublish."""

        def record_vmm(vmm: VMMProcess) -> None:  # recorded before it can run anything
            vm.pid, vm.start_time, vm.pgid = vmm.pid, vmm.start_time, vmm.pgid
            self._save(vm, strict=True)

        for port in spec.ports:
            await self.ports.publish(vm.name, port)
        async with AsyncExitStack() as stack:
            ctx = BootContext(
                name=vm.name, spec=spec, settings=self.settings, paths=self.paths(vm.name), stack=stack,
                on_vmm_started=record_vmm, network=net, vsock=vm.vsock,
            )  # fmt: skip
            await run_boot(ctx, steps)
        return ctx

    def _startable(self, vm: MicroVM) -> MicroVMSpec:
        """``vm``'s spec to boot it again; ConflictError if its record is
        damaged, if it was restored from a snapshot, or if its record holds no
        spec that boots."""
        if vm.state == DAMAGED:
            raise ConflictError(
                f"microVM {vm.name!r} cannot be started: its record is damaged, so its spec is unknown",
                hint=vm.error or f"remove it with 'fc-macos microvm rm --name {vm.name}'",
                code="damaged",
            )
        if vm.spec.get("snapshot") is not None:
            raise ConflictError(
                f"microVM {vm.name!r} was restored from a snapshot and has no disk of its own "
                "(it ran on the disk of the microVM that made the snapshot)",
                hint=f"load the snapshot again into a new microVM: 'fc-macos microvm rm --name {vm.name}' then "
                f"'fc-macos snapshots load --name {vm.name} --snapshot-path ... --mem-path ...'",
                code="restored_microvm",
            )
        try:
            spec = MicroVMSpec.from_dict({k: v for k, v in vm.spec.items() if k in MicroVMSpec._FIELDS})
        except ValidationError as exc:
            raise ConflictError(
                f"the record of microVM {vm.name!r} holds no spec that boots ({exc.message})",
                hint=f"remove it and create it again: 'fc-macos microvm rm --name {vm.name}' then 'fc-macos run ...'",
                code="unbootable_record",
            ) from exc
        return replace(spec, start=True, wait=None)

    async def start_again(self, name: str, *, wait: bool = True,
                          wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> MicroVMInfo:  # fmt: skip
        """Boot the stopped (or failed) microVM ``name`` again with its recorded
        spec on its own disk (its rootfs copy), with the same network lease,
        vsock CID and published ports; with ``wait`` answer once its guest agent
        is ready. ConflictError ``running`` if it runs, ``disk_missing`` if its
        disk is gone, ``restored_microvm`` for a snapshot restore. A failed
        boot leaves it ``failed`` (its error says why) and nothing running.
        Not idempotent."""
        vm = self._vms.get(name)
        if vm is None:
            raise self._not_found(name)
        if vm.state in (*RUNNING_STATES, STARTING):
            raise ConflictError(
                f"microVM {name!r} is {vm.state}, so it cannot be started",
                hint=f"restart it instead: 'fc-macos microvm restart --name {name}' (POST /v1/microvms/{name}/restart), "
                f"or stop it first: 'fc-macos microvm stop --name {name}'",
                code="running",
            )
        spec = self._startable(vm)
        before = vm.state
        vm.state, vm.error, vm.exit_status, vm.stopped_at = STARTING, None, None, None
        self._save(vm)
        lease = guest_net.Lease.from_record(vm.network)
        await self._release_network(vm)  # its TAP and NAT rules are made again by the boot
        net = None if lease is None else guest_net.GuestNetwork(lease, runner=self.net_runner)
        try:
            ctx = await self._boot(vm, spec, start_plan(spec, self.steps), net)
        except BaseException as exc:
            await self.ports.unpublish_all(name)
            refused = isinstance(exc, (UsageError, NotFoundError, ConflictError))
            vm.state = before if refused else FAILED
            vm.error = getattr(exc, "message", None) or f"the start was interrupted ({type(exc).__name__})"
            vm.stopped_at = time.time()
            self._save(vm)
            raise
        assert ctx.vmm is not None
        vm.spec = ctx.spec.to_dict()
        vm.vsock, vm.network = ctx.vsock, None if net is None else net.record
        vm.ports = [asdict(p) for p in spec.ports]
        vm.guest_agent = {"absent": ctx.guest_agent_absent}
        vm.state, vm.started_at = RUNNING, time.time()
        self._go_live(vm, ctx.vmm)
        if vm.guest is not None:
            vm.guest.start(vm.started_at)
        self._save(vm)
        log.info("%s started again on its own disk", name)
        if wait and vm.vsock is not None:
            await self._wait_for_guest_agent(vm, wait_timeout_s)
        return self.info(vm)

    async def restart(self, name: str, *, force: bool = False, timeout_s: float = 10.0, wait: bool = True,
                      wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> MicroVMInfo:  # fmt: skip
        """Stop ``name`` if it runs (gracefully, or at once with ``force``;
        see ``stop``) and start it again (:meth:`start_again`)."""
        vm = self._vms.get(name)
        if vm is None:
            raise self._not_found(name)
        self._startable(vm)  # refuse before stopping what could not start again
        if vm.state in (*RUNNING_STATES, STARTING):
            await self.stop(name, force=force, timeout_s=timeout_s)
        return await self.start_again(name, wait=wait, wait_timeout_s=wait_timeout_s)

    # -- how a boot ends ------------------------------------------------------------

    async def _guest_up(self, vm: MicroVM, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``vm``'s guest agent: True once ready,
        False after the timeout. A guest whose kernel panics (its console says
        so; the VMM is then killed) or whose VMM exits first makes ``vm``
        ``failed`` and raises BootError (step ``wait_guest_agent``) carrying
        the console's last lines and a hint that fits the cause."""
        guest, exited = vm.guest, vm.exited
        if guest is None:
            return False
        serial = self.paths(vm.name).serial_log
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        ready = loop.create_task(guest.ready.wait())
        gone = loop.create_task(exited.wait())
        panic: str | None = None
        try:
            while not guest.ready.is_set():
                if exited.is_set():
                    break
                panic = diagnosis.panicked(diagnosis.tail(serial, diagnosis.SCAN_LINES))
                if panic is not None:
                    break
                left = deadline - loop.time()
                if left <= 0:
                    return False
                await asyncio.wait({ready, gone}, timeout=min(PANIC_POLL_S, left), return_when=asyncio.FIRST_COMPLETED)
            else:
                return True
        finally:
            for task in (ready, gone):
                task.cancel()
        output = diagnosis.capture(self.paths(vm.name))
        if panic is not None and not exited.is_set() and vm.vmm is not None:
            log.info("%s: the guest kernel panicked at boot; killing its VMM", vm.name)
            vm.vmm.signal(signal.SIGKILL)
            await exited.wait()
        what = (f"the guest kernel panicked at boot ({panic})" if panic is not None
                else f"the microVM stopped (exit status {vm.exit_status}) before its guest agent answered")  # fmt: skip
        vm.state = FAILED
        vm.error = diagnosis.with_output(what, replace(output, vmm=""))
        self._save(vm)
        hint = diagnosis.hint_for(output, int(vm.spec.get("memory_mib", 0)), fault=what, default=(
            "read the console lines above (all of them: 'fc-macos microvm logs --name NAME'); the kernel, "
            "initrd, rootfs and boot arguments must suit each other"
        ).replace("NAME", vm.name))  # fmt: skip
        hint += f"; the microVM is kept as 'failed': remove it with 'fc-macos microvm rm --name {vm.name}'"
        raise BootError("wait_guest_agent", diagnosis.with_output(what, output), hint=hint)

    def _judge_exit(self, vm: MicroVM) -> None:
        """After ``vm``'s VMM exited: a guest kernel panic on its console makes it
        ``failed`` (its error keeps the console's last lines), not ``stopped``."""
        if vm.state != STOPPED:
            return
        output = diagnosis.capture(self.paths(vm.name))
        line = diagnosis.panicked(output.console)
        if line is not None:
            vm.state = FAILED
            vm.error = diagnosis.with_output(f"the guest kernel panicked ({line})", replace(output, vmm=""))
            log.info("%s: the guest kernel panicked", vm.name)

    # -- snapshots ------------------------------------------------------------------

    async def _record_snapshot(self, vm: MicroVM, fields: dict[str, Any]) -> None:
        """Remember the snapshot ``vm`` just wrote (a relayed ``PUT /snapshot/create``),
        with whether it has a vsock device as its Firecracker says (``GET /vm/config``:
        a device PUT through the relay counts too; None if it cannot be asked)."""
        snap, mem = fields.get("snapshot_path"), fields.get("mem_file_path")
        if not isinstance(snap, str) or not isinstance(mem, str):
            return
        vsock: bool | None = None
        if vm.vmm is not None:
            try:
                async with FirecrackerClient(vm.vmm.paths.api_sock, timeout=5.0) as fc:
                    vsock = (await fc.get_vm_config()).get("vsock") is not None
            except FcMacosError as exc:
                log.info("%s: cannot read its configuration (%s); its snapshot's vsock is not known", vm.name, exc.message)
        workdir = self.paths(vm.name).workdir  # Firecracker's working directory: relative paths start there
        self.snapshots.record(
            snapshot_path=str(workdir / snap), mem_path=str(workdir / mem), microvm=vm.name,
            disk=str(self.paths(vm.name).rootfs), vsock=vsock,
        )  # fmt: skip

    def _refuse_shared_disk(self, snapshot: SnapshotSpec) -> None:
        """ConflictError ``disk_in_use`` when the microVM that made ``snapshot``,
        or another restore of it, runs: the restore would boot on the same disk."""
        record = self.snapshots.find(snapshot.snapshot_path)
        wanted = self.snapshots.resolve(snapshot.snapshot_path)
        for other in self._vms.values():
            if other.state not in (*RUNNING_STATES, STARTING):
                continue
            restored = (other.spec.get("snapshot") or {}).get("snapshot_path")
            if (record is not None and other.name == record.microvm) or (
                isinstance(restored, str) and self.snapshots.resolve(restored) == wanted
            ):
                made = "made it" if record is not None and other.name == record.microvm else "was restored from it"
                raise ConflictError(
                    f"microVM {other.name!r} ({other.state}) {made} and uses the disk this snapshot's guest "
                    f"boots on{f' ({record.disk})' if record is not None and record.disk else ''}: a restore "
                    "now would run two guests on one disk and corrupt it",
                    hint=f"stop it first ('fc-macos microvm stop --name {other.name}'; its disk stays), then load "
                    "the snapshot; restores do not get disks of their own yet",
                    code="disk_in_use",
                )


__all__ = ["Lifecycle", "start_plan"]
