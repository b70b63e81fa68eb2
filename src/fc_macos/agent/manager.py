"""``MicroVMManager``: owns every microVM of this agent.

It creates microVMs through :mod:`fc_macos.agent.boot` (booted, ``created``
but not started, or restored from a snapshot), watches each
VMM process for its exit (a pidfd, no polling where the kernel has them),
stops and deletes them, and keeps each microVM's record (:mod:`fc_macos.agent.state`:
``microvm.json`` in its work directory, written before its VMM can run) in step
with every change. After an agent restart :meth:`MicroVMManager.start` finds
the microVMs that still run (pid + start time), reopens their console FIFOs
and carries on; those that died meanwhile are marked ``stopped`` with the exit
status their wrapper wrote; a work directory without a readable record is
listed as ``damaged`` (its files kept); and any VMM process that no record
accounts for (a crash between its start and its record) is killed
(:mod:`fc_macos.agent.vmm_processes`). Shutting the manager down
(:meth:`close`) never stops a microVM. A full disk refuses a create with
NoSpaceError (507) and leaves nothing of it behind.

The raw Firecracker relay changes a microVM's state behind the manager's back;
the relay reports successful calls that matter (:meth:`MicroVMManager.observe`):
``PATCH /vm`` (paused/running) and ``InstanceStart`` (created -> running).

Each running microVM with a vsock device has a :class:`GuestAgent` (its
guest agent's state, and the way into the guest); its published ports are
listeners of the manager's :class:`PortPublisher`, recorded with it in
its record so that they come back after an agent restart.

Starting a stopped microVM again, restarting it, the ``failed`` verdict for a
guest that panics, and the snapshot index are in :mod:`manager_lifecycle`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fc_macos.agent import nat
from fc_macos.agent import network as guest_net
from fc_macos.agent import vmm_processes
from fc_macos.agent import vsock as guest_vsock
from fc_macos.agent.boot import DEFAULT_STEPS, BootContext, BootStep, plan, run_boot, vm_config_fields
from fc_macos.agent.console import ConsoleBroker
from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.agent.manager_guest import GuestAccess
from fc_macos.agent.manager_lifecycle import Lifecycle
from fc_macos.agent.microvm import RUNNING_STATES, MicroVM, damaged_microvm, wait_exit
from fc_macos.agent.ports import PortPublisher
from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.snapshots import SnapshotIndex
from fc_macos.agent.state import RecordStore
from fc_macos.agent.wire import (
    CREATED, DAMAGED, FAILED, PAUSED, RUNNING, STARTING, STOPPED, STOPPING, MicroVMInfo, MicroVMSpec, not_running_hint,
)
from fc_macos.errors import ConflictError, FcMacosError, NoSpaceError
from fc_macos.firecracker.client import FirecrackerClient
from fc_macos.firecracker.launcher import VMMPaths, VMMProcess, read_exit_status, wait_gone

log = logging.getLogger("fc_agent.manager")

EXIT_STATUS_WAIT_S = 5.0
KILL_WAIT_S = 30.0


class MicroVMManager(GuestAccess, Lifecycle):
    """Create, list, inspect, stop and delete microVMs. Use from one event loop.

    ``steps`` is the boot step list (default :data:`boot.DEFAULT_STEPS`);
    :func:`boot.plan` edits it for each spec (``start=False``, snapshot restore,
    network). ``net_runner`` runs the host's network commands (``ip``, ``nft``,
    ``iptables``) for microVMs with a network; each holds a lease (its TAP and
    /30, kept in its record) from creation until it is deleted. A microVM
    with a vsock device holds its CID the same way.
    """

    def __init__(
        self, settings: AgentSettings, *, steps: tuple[BootStep, ...] = DEFAULT_STEPS,
        net_runner: guest_net.CommandRunner | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.steps = steps
        self.net_runner = net_runner or guest_net.CommandRunner()
        self.store = RecordStore(settings.state_file, settings.microvms_dir)
        self._vms: dict[str, MicroVM] = {}
        self._next_index = 1
        self.ports = PortPublisher(self.guest)
        self.snapshots = SnapshotIndex(settings.state_dir / "snapshots.json", settings.snapshots_dir)

    # -- lifecycle of the manager ------------------------------------------------

    async def start(self) -> None:
        """Load the microVM records, reattach to the microVMs that still run and
        kill the VMM processes no record accounts for. Call once."""
        self.settings.microvms_dir.mkdir(parents=True, exist_ok=True)
        self.settings.images_dir.mkdir(parents=True, exist_ok=True)
        self.settings.snapshots_dir.mkdir(parents=True, exist_ok=True)
        loaded = self.store.load_all()
        self._next_index = loaded.next_index
        for key, record in loaded.records.items():
            try:
                vm = MicroVM.from_record(record)
                if not isinstance(vm.spec, dict) or not isinstance(vm.state, str) or vm.created_at is None:
                    raise ValueError("a field is missing (spec, state or created_at)")
            except (AttributeError, TypeError, ValueError) as exc:
                loaded.damaged[key] = f"its record {self.store.record_path(key)} is incomplete: {exc}"
                log.warning("microVM %s cannot be recovered: %s", key, loaded.damaged[key])
                continue
            self._vms[vm.name] = vm
            self._reattach(vm)
        for key, reason in loaded.damaged.items():
            self._vms[key] = damaged_microvm(key, reason, self.paths(key).workdir)
        await asyncio.to_thread(self._kill_unaccounted)
        for vm in self._vms.values():
            if vm.vmm is not None:
                await self._publish_again(vm)
        self._save()

    def _reattach(self, vm: MicroVM) -> None:
        paths = self.paths(vm.name)
        vmm = None
        if vm.pid is not None and vm.start_time is not None and vm.pgid is not None:
            vmm = VMMProcess.find(paths, vm.pid, vm.start_time, vm.pgid)
        if vm.state == STARTING:
            if vmm is not None:
                vmm.signal(signal.SIGKILL)
            self._mark_stopped(vm, FAILED, error="fc-agent stopped while this microVM was booting")
            vm.exited.set()
        elif vm.state in RUNNING_STATES:  # "damaged" is none of these
            if vmm is None:
                self._mark_stopped(vm, STOPPED)
                vm.exited.set()
                log.info("%s stopped while fc-agent was away (exit status %s)", vm.name, vm.exit_status)
            else:
                if vm.state == STOPPING:  # that stop's caller is gone; it may be asked again
                    vm.state = RUNNING
                self._go_live(vm, vmm)
                if vm.guest is not None and vm.state != CREATED:
                    vm.guest.start(vm.started_at or time.time(), again=True)
                log.info("%s is still running (pid %d): reattached", vm.name, vmm.pid)
        else:
            vm.exited.set()

    def _kill_unaccounted(self) -> None:
        """Kill every VMM process group of our work directories that is not the
        live VMM of a record (a crash left it between its start and its record,
        or a create or delete half done). A damaged microVM's processes are
        left running (its guest may be the user's) and named in its error."""
        for group in vmm_processes.find(self.settings.microvms_dir):
            vm = self._vms.get(group.name)
            if vm is not None and vm.vmm is not None and vm.vmm.pgid == group.pgid:
                continue
            if vm is not None and vm.state == DAMAGED:
                pids = ", ".join(map(str, group.pids))
                vm.error = f"{vm.error}; its VMM still runs (pids {pids}): 'fc-macos microvm rm --force --name {vm.name}' kills it"
                continue
            what = "no microVM" if vm is None else f"microVM {group.name} ({vm.state}) does not"
            log.warning("killing VMM process group %d (pids %s) in %s: %s account for it", group.pgid,
                        group.pids, self.paths(group.name).workdir, what)  # fmt: skip
            vmm_processes.kill(group)

    async def close(self) -> None:
        """Detach from every microVM (they keep running): end console viewers,
        published ports (they come back with the next agent) and guest agent
        polling. Idempotent."""
        await self.ports.close()
        for vm in self._vms.values():
            if vm.watcher is not None:
                vm.watcher.cancel()
            if vm.broker is not None:
                vm.broker.close("fc-agent is shutting down; the microVM keeps running")
            if vm.guest is not None:
                await vm.guest.close()
        for vm in self._vms.values():
            if vm.watcher is not None:
                try:
                    await vm.watcher
                except (asyncio.CancelledError, Exception):
                    pass
                vm.watcher = None

    # -- queries ------------------------------------------------------------------

    def paths(self, name: str) -> VMMPaths:
        return VMMPaths(self.settings.microvms_dir / name)

    def _get(self, name: str) -> MicroVM:
        vm = self._vms.get(name)
        if vm is None:
            raise self._not_found(name)
        return vm

    def list(self) -> list[MicroVMInfo]:
        return [self.info(vm) for vm in sorted(self._vms.values(), key=lambda v: v.created_at)]

    def get(self, name: str) -> MicroVMInfo:
        return self.info(self._get(name))

    def info(self, vm: MicroVM) -> MicroVMInfo:
        running = vm.state in RUNNING_STATES and vm.vmm is not None
        usage = vm.vmm.usage() if running and vm.vmm is not None else None
        return MicroVMInfo(
            name=vm.name,
            state=vm.state,
            pid=vm.pid if running else None,
            vcpus=int(vm.spec.get("vcpus", 1)),
            memory_mib=int(vm.spec.get("memory_mib", 0)),
            spec=vm.spec,
            created_at=vm.created_at,
            started_at=vm.started_at,
            stopped_at=vm.stopped_at,
            uptime_s=round(time.time() - vm.started_at, 3) if running and vm.started_at else None,
            exit_status=vm.exit_status,
            cpu_percent=usage.cpu_percent if usage else None,
            memory_rss_mib=usage.memory_rss_mib if usage else None,
            socket_path=str(self.paths(vm.name).api_sock) if running else None,
            error=vm.error,
            network=vm.network,
            vsock=vm.vsock,
            guest_agent=vm.guest.to_dict() if running and vm.guest is not None else None,
            ports=[asdict(p) for p in self.ports.ports(vm.name)] if running else [],
        )

    def running(self, name: str) -> MicroVM:
        """The microVM ``name`` if it runs; NotFoundError / ConflictError otherwise."""
        vm = self._get(name)
        if vm.state not in RUNNING_STATES or vm.vmm is None:
            raise ConflictError(
                f"microVM {name!r} is {vm.state}, not running", hint=not_running_hint(name, vm.state),
            )
        return vm

    async def observe(self, name: str, method: str, path: str, body: bytes) -> None:
        """Record the effect of a successful Firecracker call relayed to ``name``
        (only observed, never altered): ``PATCH /vm`` pauses or resumes,
        ``PUT /actions`` with ``InstanceStart`` starts a ``created`` microVM
        (whose spec then records what it started with: vCPUs, memory, boot
        source and drives from ``GET /vm/config``). Other calls are ignored.
        Never raises."""
        vm = self._vms.get(name)
        if vm is None:
            return
        try:
            fields = json.loads(body)
        except ValueError:
            return
        if not isinstance(fields, dict):
            return
        if method == "PATCH" and path == "/vm" and vm.state in (RUNNING, PAUSED):
            new_state = {"Paused": PAUSED, "Resumed": RUNNING}.get(str(fields.get("state")))
            if new_state is not None and new_state != vm.state:
                vm.state = new_state
                self._save()
                if new_state == PAUSED and vm.guest is not None:
                    vm.guest.drop_spare()  # the guest's clock jumps on resume: it may drop it
        elif method == "PUT" and path == "/snapshot/create":
            await self._record_snapshot(vm, fields)
        elif method == "PUT" and path == "/actions" and fields.get("action_type") == "InstanceStart":
            if vm.state == CREATED:
                vm.state = RUNNING
                vm.started_at = time.time()
                self._save()
                log.info("%s started (InstanceStart through the raw API)", name)
                if vm.guest is not None:
                    vm.guest.start(vm.started_at)
                await self._record_config(vm)

    async def _record_config(self, vm: MicroVM) -> None:
        vmm = vm.vmm
        if vmm is None:
            return
        try:
            async with FirecrackerClient(vmm.paths.api_sock, timeout=5.0) as fc:
                config = await fc.get_vm_config()
        except FcMacosError as exc:
            log.info("%s: cannot read its configuration (%s); its record keeps the creation spec", vm.name, exc.message)
            return
        fields = vm_config_fields(config)
        fields.pop("rootfs", None)  # the record names the image its private copy came from
        if "drives" in fields:
            fields["drives"] = [asdict(d) for d in fields["drives"]]
        vm.spec = {**vm.spec, **fields}
        self._save()

    def console(self, name: str) -> ConsoleBroker:
        """The console broker of running microVM ``name``."""
        vm = self.running(name)
        if vm.broker is None:
            raise ConflictError(
                f"the console of microVM {name!r} is unavailable ({vm.error})",
                hint=f"stop it ('fc-macos microvm stop --name {name}', POST /v1/microvms/{name}/stop) and create it again",
            )
        return vm.broker

    def exited_event(self, name: str) -> asyncio.Event:
        return self._get(name).exited

    # -- create -------------------------------------------------------------------

    def _new_name(self) -> str:
        while f"microvm-{self._next_index}" in self._vms:
            self._next_index += 1
        name = f"microvm-{self._next_index}"
        self._next_index += 1
        return name

    async def create(self, spec: MicroVMSpec) -> MicroVMInfo:
        """Create a microVM from ``spec`` and return it: ``running`` once booted;
        ``created`` (not started) with ``spec.start`` false; for
        ``spec.snapshot``, ``running`` or (``resume`` false) ``paused``.
        ConflictError if the name is taken; BootError (naming the step) if a
        step fails, after which nothing of it remains. Not idempotent."""
        if spec.name is not None and spec.name in self._vms:
            raise ConflictError(
                f"a microVM named {spec.name!r} already exists",
                hint="pick another name, or remove the old one first ('fc-macos microvm rm --name NAME', DELETE /v1/microvms/NAME)",
                code="already_exists",
            )
        if spec.snapshot is not None:
            self._refuse_shared_disk(spec.snapshot)
        net = None
        if spec.network:
            used = (lease.index for v in self._vms.values() if (lease := guest_net.Lease.from_record(v.network)))
            net = guest_net.GuestNetwork(guest_net.allocate(used), runner=self.net_runner)
        name = spec.name or self._new_name()
        vm = MicroVM(name=name, spec=spec.to_dict() | {"name": name}, state=STARTING, created_at=time.time())
        vm.network = None if net is None else net.record
        if spec.vsock and spec.snapshot is None:
            cid = guest_vsock.allocate_cid(int(v.vsock["guest_cid"]) for v in self._vms.values() if v.vsock)
            vm.vsock = guest_vsock.device_record(cid, guest_vsock.uds_path(self.paths(name).workdir))
        self._vms[name] = vm
        made = False
        ctx: BootContext | None = None

        def record_vmm(vmm: VMMProcess) -> None:
            vm.pid, vm.start_time, vm.pgid = vmm.pid, vmm.start_time, vmm.pgid
            self._save(vm, strict=True)

        try:
            # The work directory and the record exist before anything can run in it.
            self.store.create(name, vm.to_record())
            made = True
            for port in spec.ports:  # before the boot: a taken port fails the create at once
                await self.ports.publish(name, port)
            async with AsyncExitStack() as stack:
                ctx = BootContext(
                    name=name, spec=spec, settings=self.settings, paths=self.paths(name), stack=stack,
                    on_vmm_started=record_vmm, network=net, vsock=vm.vsock,
                    snapshot_vsock=None if spec.snapshot is None else self.snapshots.had_vsock(spec.snapshot.snapshot_path),
                )  # fmt: skip
                await run_boot(ctx, plan(spec, self.steps))
            assert ctx.vmm is not None
            vm.spec = ctx.spec.to_dict()
            vm.vsock = ctx.vsock
            vm.ports = [asdict(p) for p in spec.ports]
            vm.guest_agent = {"absent": ctx.guest_agent_absent}
            if spec.snapshot is not None:
                vm.state = RUNNING if spec.snapshot.resume else PAUSED
            else:
                vm.state = RUNNING if spec.start else CREATED
            vm.started_at = None if vm.state == CREATED else time.time()
            self._save(vm, strict=True)
        except BaseException:
            await self._discard_failed(vm, ctx, made=made, automatic=spec.name is None)
            raise
        self._go_live(vm, ctx.vmm)
        if vm.guest is not None and vm.started_at is not None:
            vm.guest.start(vm.started_at, again=spec.snapshot is not None)
        if spec.wait == "guest_agent":
            await self._wait_for_guest_agent(vm, spec.wait_timeout_s)
        return self.info(vm)

    async def _discard_failed(self, vm: MicroVM, ctx: BootContext | None, *, made: bool, automatic: bool) -> None:
        """Undo a create that failed: no process, no work directory, no record
        and (for an automatic name) the name not used up."""
        vmm = None if ctx is None else ctx.vmm
        if vmm is not None and vmm.signal(signal.SIGKILL):  # booted, then its record could not be written
            await asyncio.to_thread(wait_gone, vmm.pid, vmm.start_time, 10.0)
        await self.ports.unpublish_all(vm.name)
        del self._vms[vm.name]
        if made:
            await asyncio.to_thread(self._remove_workdir, vm.name)
        if automatic:  # a failed boot does not use up an automatic name
            self._next_index = min(self._next_index, int(vm.name.rsplit("-", 1)[1]))
        self._save()

    def _remove_workdir(self, name: str) -> None:
        """Kill whatever still runs for ``name``'s work directory, then remove it with its record."""
        for group in vmm_processes.find(self.settings.microvms_dir):
            if group.name == name:
                vmm_processes.kill(group)
        self.store.delete(name)

    def _go_live(self, vm: MicroVM, vmm: VMMProcess) -> None:
        vm.vmm = vmm
        vm.pid, vm.start_time, vm.pgid = vmm.pid, vmm.start_time, vmm.pgid
        vm.exited = asyncio.Event()
        saved = vm.guest_agent or {}
        uds = Path(vm.vsock["uds_path"]) if vm.vsock else None
        vm.guest = GuestAgent(
            vm.name, uds, absent_reason=saved.get("absent"), saved=saved,
            on_change=lambda: self._save(vm), is_running=lambda: vm.state == RUNNING,
        )  # fmt: skip
        broker = ConsoleBroker(vm.name, vmm.paths)
        try:
            broker.start()
            vm.broker = broker
        except OSError as exc:
            # The microVM runs on; only its console is out of reach.
            log.warning("%s: cannot open its console: %s", vm.name, exc)
            broker.close(f"console unavailable: {exc}")
            vm.broker = None
            vm.error = f"console unavailable: {exc}"
        vm.watcher = asyncio.get_running_loop().create_task(self._watch(vm, vmm), name=f"watch-{vm.name}")

    # -- exit ---------------------------------------------------------------------

    async def _watch(self, vm: MicroVM, vmm: VMMProcess) -> None:
        await wait_exit(vmm)
        deadline = time.monotonic() + EXIT_STATUS_WAIT_S
        while read_exit_status(vmm.paths) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if vm.broker is not None:
            await vm.broker.drain(2.0)
        vmm.kill_leftovers()
        await self._release_guest(vm)
        self._mark_stopped(vm, STOPPED)
        self._judge_exit(vm)
        vmm.paths.api_sock.unlink(missing_ok=True)
        log.info("%s stopped (exit status %s)", vm.name, vm.exit_status)
        self._save(vm)
        vm.exited.set()

    def _mark_stopped(self, vm: MicroVM, state: str, *, error: str | None = None) -> None:
        paths = self.paths(vm.name)
        vm.state = state
        vm.exit_status = read_exit_status(paths)
        try:
            vm.stopped_at = paths.exit_status.stat().st_mtime
        except OSError:
            vm.stopped_at = time.time()
        if error is not None:
            vm.error = error
        vm.vmm = None
        if vm.guest is not None:
            vm.guest_agent = vm.guest.saved()
        vm.guest = None
        vm.ports = []
        if vm.broker is not None:
            status = "unknown" if vm.exit_status is None else vm.exit_status
            vm.broker.close(f"microVM {vm.name} stopped (exit status {status})")
            vm.broker = None

    # -- stop / delete ------------------------------------------------------------

    async def stop(self, name: str, *, force: bool = False, timeout_s: float = 10.0) -> MicroVMInfo:
        """Stop ``name``: gracefully (Ctrl+Alt+Del on x86_64, SIGTERM elsewhere),
        SIGKILL after ``timeout_s``; at once with ``force`` or when it is
        ``created`` (no guest runs to shut down). Idempotent: a stopped
        microVM is returned as it is. ConflictError while it boots."""
        vm = self._get(name)
        if vm.state == STARTING:
            raise ConflictError(f"microVM {name!r} is still booting", hint="try again in a few seconds")
        if vm.state not in RUNNING_STATES or vm.vmm is None:
            return self.info(vm)
        vmm, exited = vm.vmm, vm.exited
        force = force or vm.state == CREATED
        if vm.state != STOPPING:
            vm.state = STOPPING
            self._save()
            if not force:
                await self._ask_to_stop(vm, vmm)
        if not force:
            try:
                await asyncio.wait_for(exited.wait(), timeout_s)
            except asyncio.TimeoutError:
                log.info("%s did not stop within %gs: killing it", name, timeout_s)
        if not exited.is_set():
            vmm.signal(signal.SIGKILL)
            try:
                await asyncio.wait_for(exited.wait(), KILL_WAIT_S)
            except asyncio.TimeoutError as exc:
                raise FcMacosError(
                    f"microVM {name!r} (pid {vmm.pid}) did not die after SIGKILL",
                    hint="check the process with 'ps' in the VM",
                ) from exc
        return self.info(vm)

    async def _ask_to_stop(self, vm: MicroVM, vmm: VMMProcess) -> None:
        if self.settings.arch in ("x86_64", "amd64"):
            try:
                async with FirecrackerClient(vmm.paths.api_sock, timeout=5.0) as fc:
                    await fc.send_ctrl_alt_del()
                return
            except FcMacosError as exc:
                log.info("%s: SendCtrlAltDel failed (%s); sending SIGTERM", vm.name, exc.message)
        vmm.signal(signal.SIGTERM)

    async def delete(self, name: str, *, force: bool = False) -> None:
        """Delete ``name`` and its work directory (socket, logs, rootfs copy).
        ConflictError if it runs and not ``force`` (then it is killed first)."""
        vm = self._get(name)
        if vm.state == STARTING:
            raise ConflictError(f"microVM {name!r} is still booting", hint="try again in a few seconds")
        if vm.state == DAMAGED and not force and any(
            g.name == name for g in await asyncio.to_thread(vmm_processes.find, self.settings.microvms_dir)
        ):
            raise ConflictError(
                f"damaged microVM {name!r} still has a VMM process running",
                hint=f"remove it with --force (DELETE ...?force=true), which kills it: 'fc-macos microvm rm --force --name {name}'",
                code="running",
            )
        if vm.state in RUNNING_STATES:
            if not force:
                raise ConflictError(
                    f"microVM {name!r} is {vm.state}",
                    hint=f"stop it first ('fc-macos microvm stop --name {name}'), or remove it with --force (DELETE ...?force=true)",
                    code="running",
                )
            await self.stop(name, force=True)
        if self._vms.get(name) is not vm:
            return  # deleted meanwhile by a concurrent call
        del self._vms[name]
        await self.ports.unpublish_all(name)
        await asyncio.to_thread(self._remove_workdir, name)
        await self._release_network(vm)
        self._save()

    async def _release_network(self, vm: MicroVM) -> None:
        """Remove the NAT rules and the TAP of ``vm``'s lease (failures are logged)."""
        lease = guest_net.Lease.from_record(vm.network)
        if lease is None:
            return
        tool = (vm.network or {}).get("nat") or nat.find_tool(self.settings.nat)
        if tool:  # also when the record has none: a crash may have left rules behind
            await nat.remove(lease.tap, tool, self.net_runner)
        await guest_net.delete_tap(lease.tap, self.net_runner)

    # -- persistence --------------------------------------------------------------

    def _save(self, vm: MicroVM | None = None, *, strict: bool = False) -> None:
        """Write the record of ``vm`` (of every microVM if None; unchanged
        records are not rewritten) and the index. ``strict``: a failure
        (NoSpaceError on a full disk, OSError) is raised; otherwise it is
        logged, and the next save writes what changed."""
        vms = [vm] if vm is not None else list(self._vms.values())
        try:
            for one in vms:
                if one.state != DAMAGED:  # a damaged microVM has no record to write
                    self.store.save(one.name, one.to_record())
            self.store.save_index(self._next_index)
        except (NoSpaceError, OSError) as exc:
            if strict:
                raise
            log.error("cannot write the agent's records: %s", exc)
