"""Booting a microVM: an editable, named list of steps.

Each step is an async function of a :class:`BootContext`, logged by name as it
runs. A step that acquires a resource registers its cleanup right away
(:meth:`BootContext.on_failure`); when a later step fails, the cleanups run in
reverse order and the failure reaches the caller as
:class:`~fc_macos.errors.BootError` naming the step (raised ``from`` the
original error, so Firecracker's ``fault_message`` travels with it). Client
mistakes found by a step (a missing file, a path outside the image
directories ...) propagate unchanged so the agent can answer 4xx, and so
does a full disk (NoSpaceError, 507).

:data:`DEFAULT_STEPS` is the list in docs/design.md; callers may copy and edit
it (insert a network step ...). :func:`plan` edits it for a spec: without
``start_instance`` for ``start=False``, and for a snapshot restore with
``resolve_snapshot`` in place of ``resolve_images`` and ``load_snapshot`` in
place of the configuration steps and ``start_instance``; with ``network=True``
``attach_network`` is inserted before ``configure_boot_source``; with
``vsock=True`` (the default) ``install_guest_agent`` follows
``prepare_workdir`` and ``attach_vsock`` precedes ``start_instance``; with
``balloon_mib`` ``attach_balloon`` follows ``attach_drives``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from fc_macos import image_names
from fc_macos.agent import boot_diagnosis as diagnosis
from fc_macos.agent import disk_space, drive_copies, guest_install, nat
from fc_macos.agent import network as guest_net
from fc_macos.agent import paths as image_paths
from fc_macos.agent import vsock as guest_vsock
from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.wire import DriveSpec, MicroVMSpec, SnapshotSpec
from fc_macos.errors import (
    BootError, ConflictError, FcMacosError, FirecrackerAPIError, FirecrackerError, NoSpaceError, NotFoundError,
    UsageError,
)  # fmt: skip
from fc_macos.firecracker.client import FirecrackerClient
from fc_macos.guest import binary_path as guest_binary_path
from fc_macos.firecracker.launcher import VMMPaths, VMMProcess, launch, wait_gone

log = logging.getLogger("fc_agent.boot")

#: Linux's limit for a Unix socket path (sun_path), including the NUL.
MAX_SOCKET_PATH = 107
API_SOCKET_TIMEOUT_S = 30.0


@dataclass
class BootContext:
    """What the steps share. ``spec`` becomes the resolved spec (absolute
    paths) after ``resolve_images``; ``vmm`` and ``client`` are set by
    ``start_vmm`` and ``wait_api_socket``."""

    name: str
    spec: MicroVMSpec
    settings: AgentSettings
    paths: VMMPaths
    stack: AsyncExitStack
    vmm: VMMProcess | None = None
    client: FirecrackerClient | None = None
    rootfs_source: Path | None = None
    #: Called with the VMM as soon as it runs (the manager records its pid).
    on_vmm_started: Callable[[VMMProcess], None] | None = None
    #: The microVM's network lease (given by the manager for ``spec.network``).
    network: guest_net.GuestNetwork | None = None
    #: The vsock device ``{"guest_cid", "uds_path"}`` (given by the manager for
    #: ``spec.vsock``; a restore sets it from the snapshot's configuration).
    vsock: dict[str, Any] | None = None
    #: Why the guest agent is not in the guest, when ``install_guest_agent`` skipped it.
    guest_agent_absent: str | None = None
    #: For a restore: whether the snapshot's microVM had a vsock device, from the agent's
    #: snapshot record (given by the manager); None when no record says.
    snapshot_vsock: bool | None = None
    _cleanups: list[tuple[str, Callable[[], Awaitable[None]]]] = field(default_factory=list)

    def on_failure(self, what: str, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Register ``cleanup`` to undo ``what`` if a later step fails."""
        self._cleanups.append((what, cleanup))

    def need_client(self) -> FirecrackerClient:
        assert self.client is not None, "wait_api_socket must run before this step"
        return self.client


Step = Callable[[BootContext], Awaitable[None]]


@dataclass(frozen=True)
class BootStep:
    name: str
    run: Step


async def validate_spec(ctx: BootContext) -> None:
    """Things wire.py cannot check: the Firecracker binary and the socket path length."""
    fc = ctx.settings.firecracker
    found = shutil.which(fc)
    if found is None:
        raise FcMacosError(
            f"Firecracker binary {fc!r} not found or not executable",
            hint="install Firecracker in the VM, or start fc-agent with --firecracker-bin /path/to/firecracker",
        )
    sockets = [("API", ctx.paths.api_sock)]
    if ctx.spec.vsock:
        sockets.append(("vsock", guest_vsock.uds_path(ctx.paths.workdir)))
    for kind, path in sockets:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise UsageError(
                f"the {kind} socket path {path} is longer than {MAX_SOCKET_PATH} bytes (the Unix socket limit)",
                hint="use a shorter microVM name, or start fc-agent with a shorter --state-dir",
            )


async def resolve_images(ctx: BootContext) -> None:
    """Turn kernel/initrd/rootfs/drive names into absolute paths in the image dirs."""
    dirs = ctx.settings.all_image_dirs
    spec = ctx.spec

    def pick(kind: str, value: str | None, default: str, required: bool) -> str | None:
        if value is not None:
            return str(image_paths.resolve_file(kind, value, dirs))
        found = image_paths.find_default(default, dirs)
        if found is None and required:
            listing = ", ".join(str(d) for d in dirs)
            raise NotFoundError(
                f"no {kind} given and no default {default!r} installed in {listing}",
                hint=f"name a {kind} in the spec, or install one as {dirs[0] / default} (fc-macos setup does)",
                code="file_not_found",
            )
        return None if found is None else str(found)

    kernel = pick("kernel", spec.kernel, image_names.KERNEL, True)
    initrd = pick("initrd", spec.initrd, image_names.INITRD, False)
    rootfs = pick("rootfs", spec.rootfs, image_names.ROOTFS, True)
    drives = tuple(
        DriveSpec(id=d.id, path=str(image_paths.resolve_file(f"drive {d.id}", d.path, dirs)), read_only=d.read_only)
        for d in spec.drives
    )
    ctx.rootfs_source = Path(rootfs) if rootfs else None
    ctx.spec = replace(spec, name=ctx.name, kernel=kernel, initrd=initrd, rootfs=rootfs, drives=drives)


async def prepare_workdir(ctx: BootContext) -> None:
    """Create the work directory unless it exists (the manager makes it, with
    the microVM's record, before the boot) and copy the rootfs and the writable
    drives into it, after checking that they fit: a full disk is NoSpaceError,
    no partial copy left."""
    workdir = ctx.paths.workdir
    if not workdir.exists():
        workdir.mkdir(parents=True, mode=0o700)

        async def remove_workdir() -> None:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

        ctx.on_failure("work directory", remove_workdir)
    if ctx.rootfs_source is not None:  # a snapshot restore brings its own drives
        rootfs = ctx.paths.rootfs

        async def remove_rootfs() -> None:
            rootfs.unlink(missing_ok=True)

        ctx.on_failure("rootfs copy", remove_rootfs)
        what = f"the rootfs copy of microVM {ctx.name!r}"
        disk_space.ensure_free(what, ctx.paths.workdir, ctx.rootfs_source.stat().st_size)
        await asyncio.to_thread(disk_space.copy_file, ctx.rootfs_source, rootfs, what)
    if ctx.spec.drives:  # writable drives get private copies too (drive_copies)
        ctx.spec = replace(ctx.spec, drives=await drive_copies.copy_writable(ctx.spec.drives, workdir))


async def install_guest_agent(ctx: BootContext) -> None:
    """Write the guest agent for the guest's architecture into the microVM's
    rootfs copy (the user's image is never changed) and, for images that do
    not start it themselves, make the boot arguments start it ahead of the
    image's init. A rootfs it cannot write (not ext4, no debugfs), or a missing
    binary, boots as it is: ``guest_agent_absent`` says why."""
    try:
        binary = guest_binary_path(ctx.settings.arch)
    except FcMacosError as exc:
        ctx.guest_agent_absent = f"{exc.message}: {exc.hint}" if exc.hint else exc.message
        return
    result = await guest_install.install_guest_agent(ctx.paths.rootfs, binary, ctx.spec.boot_args)
    ctx.spec = replace(ctx.spec, boot_args=result.boot_args)
    ctx.guest_agent_absent = None if result.installed else result.reason


async def start_vmm(ctx: BootContext) -> None:
    """Launch Firecracker (in its own session, under the exit-status wrapper).
    A work directory too full for its FIFOs and logs is NoSpaceError."""
    try:
        vmm = await asyncio.to_thread(launch, ctx.settings.firecracker, ctx.name, ctx.paths)
    except FirecrackerError as exc:
        if isinstance(exc.__cause__, OSError):
            disk_space.raise_if_full(exc.__cause__, f"the files of microVM {ctx.name!r}", ctx.paths.workdir)
        raise
    ctx.vmm = vmm

    async def kill_vmm() -> None:
        vmm.signal(signal.SIGKILL)
        await asyncio.to_thread(wait_gone, vmm.pid, vmm.start_time, 10.0)
        await asyncio.sleep(0.05)
        vmm.kill_leftovers()

    ctx.on_failure("Firecracker process", kill_vmm)
    if ctx.on_vmm_started is not None:
        ctx.on_vmm_started(vmm)


async def wait_api_socket(ctx: BootContext) -> None:
    """Wait until the API socket answers ``GET /``."""
    client = await ctx.stack.enter_async_context(FirecrackerClient(ctx.paths.api_sock))
    ctx.client = client
    try:
        await client.wait_ready(timeout=API_SOCKET_TIMEOUT_S)
    except FcMacosError:
        assert ctx.vmm is not None
        if not ctx.vmm.is_alive():
            raise FcMacosError(
                "Firecracker exited before its API socket answered",
                hint="its last lines follow; check the Firecracker binary fc-agent runs (fc-agent --firecracker-bin)",
            ) from None
        raise


async def configure_machine(ctx: BootContext) -> None:
    await ctx.need_client().put_machine_config(vcpu_count=ctx.spec.vcpus, mem_size_mib=ctx.spec.memory_mib)


async def configure_boot_source(ctx: BootContext) -> None:
    assert ctx.spec.kernel is not None
    await ctx.need_client().put_boot_source(
        kernel_image_path=ctx.spec.kernel, boot_args=ctx.spec.boot_args, initrd_path=ctx.spec.initrd
    )


async def attach_rootfs(ctx: BootContext) -> None:
    await ctx.need_client().put_drive(
        "rootfs", path_on_host=str(ctx.paths.rootfs), is_root_device=True, is_read_only=False
    )


async def attach_drives(ctx: BootContext) -> None:
    for drive in ctx.spec.drives:
        await ctx.need_client().put_drive(
            drive.id, path_on_host=drive.path, is_root_device=False, is_read_only=drive.read_only
        )


async def attach_network(ctx: BootContext) -> None:
    """Create the lease's TAP device (and, best effort, its NAT rules), attach it
    as ``eth0`` with the lease's MAC and append ``ip=...`` to the boot arguments."""
    net = ctx.network
    assert net is not None, "attach_network needs the manager's network lease"
    lease, runner = net.lease, net.runner
    await guest_net.create_tap(lease, runner)
    ctx.on_failure(f"TAP device {lease.tap}", lambda: guest_net.delete_tap(lease.tap, runner))
    setup, nat_hint = await nat.try_install(lease, ctx.settings.nat, runner)
    nameservers: list[str] = []
    if setup is not None:
        ctx.on_failure("NAT rules", lambda: nat.remove(lease.tap, setup.tool, runner))
        nameservers = nat.host_nameservers()
    net.record.update(nat=setup.tool if setup else None, uplink=setup.uplink if setup else None, nat_hint=nat_hint)
    await ctx.need_client().put_network_interface(guest_net.GUEST_IFACE, host_dev_name=lease.tap, guest_mac=lease.mac)
    ctx.spec = replace(ctx.spec, boot_args=guest_net.with_boot_arg(ctx.spec.boot_args, lease, nameservers))


async def attach_vsock(ctx: BootContext) -> None:
    """``PUT /vsock`` with the manager's CID and ``<workdir>/vsock.sock``
    (Firecracker binds the socket now; the work directory is fresh)."""
    device = ctx.vsock
    assert device is not None, "attach_vsock needs the manager's vsock device"
    await ctx.need_client().put_vsock(guest_cid=device["guest_cid"], uds_path=device["uds_path"])


async def attach_balloon(ctx: BootContext) -> None:
    """``PUT /balloon`` with the spec's target size (before InstanceStart, the
    only time Firecracker takes one), deflated on OOM, statistics every second."""
    assert ctx.spec.balloon_mib is not None, "attach_balloon needs spec.balloon_mib"
    await ctx.need_client().put_balloon(amount_mib=ctx.spec.balloon_mib, deflate_on_oom=True, stats_polling_interval_s=1)


async def start_instance(ctx: BootContext) -> None:
    await ctx.need_client().start_instance()


SNAPSHOT_OUTSIDE_HINT = (
    "paths are on the agent's machine: give a bare name to use <state-dir>/snapshots "
    "('fc-macos snapshots create --snapshot-path NAME' writes there), or a path inside one of {listing}"
)


async def resolve_snapshot(ctx: BootContext) -> None:
    """Turn the snapshot's file names into absolute paths: relative names inside
    ``<state-dir>/snapshots``, absolute ones only inside it or an image directory."""
    snapshot = ctx.spec.snapshot
    assert snapshot is not None, "resolve_snapshot needs a spec with a snapshot"
    dirs = (ctx.settings.snapshots_dir, *ctx.settings.all_image_dirs)

    def resolve(kind: str, value: str) -> str:
        found = image_paths.resolve_file(kind, value, dirs, served="snapshots and images", outside_hint=SNAPSHOT_OUTSIDE_HINT)
        return str(found)

    resolved = SnapshotSpec(
        snapshot_path=resolve("snapshot file", snapshot.snapshot_path),
        mem_path=resolve("snapshot memory file", snapshot.mem_path),
        resume=snapshot.resume,
    )
    ctx.spec = replace(ctx.spec, name=ctx.name, snapshot=resolved)


#: Firecracker's refusal of a ``vsock_override`` for a snapshot without a vsock device.
NO_VSOCK_IN_SNAPSHOT = "Unknown Vsock Device"


async def load_snapshot(ctx: BootContext) -> None:
    """``PUT /snapshot/load`` into the fresh Firecracker, then record what the
    snapshot brought (vCPUs, memory, kernel, root drive, vsock device) from
    ``GET /vm/config``. The snapshot's vsock device (if any) gets this
    microVM's own socket through ``vsock_override``, which Firecracker refuses
    for a snapshot without one (and a failed load ends its process). A
    snapshot the agent recorded says whether it has one (``ctx.snapshot_vsock``):
    then the override is sent only if so. For another snapshot it is tried,
    and after that refusal the load is repeated in a new Firecracker without it."""
    snapshot = ctx.spec.snapshot
    assert snapshot is not None, "load_snapshot needs a spec with a snapshot"
    own_socket = str(guest_vsock.uds_path(ctx.paths.workdir))

    async def load(override: bool) -> None:
        await ctx.need_client().load_snapshot(
            snapshot_path=snapshot.snapshot_path,
            mem_backend={"backend_type": "File", "backend_path": snapshot.mem_path},
            resume_vm=snapshot.resume,
            vsock_override={"uds_path": own_socket} if override else None,
        )

    try:
        await load(override=ctx.snapshot_vsock is not False)
    except FirecrackerAPIError as exc:
        if ctx.snapshot_vsock is not None or NO_VSOCK_IN_SNAPSHOT not in exc.fault_message:
            raise
        log.info("%s: the snapshot has no vsock device; loading it again without vsock_override", ctx.name)
        await _relaunch_vmm(ctx)
        await load(override=False)
    config = await ctx.need_client().get_vm_config()
    ctx.spec = replace(ctx.spec, **vm_config_fields(config))
    device = config.get("vsock")
    ctx.vsock = None if not isinstance(device, dict) else guest_vsock.device_record(
        int(device.get("guest_cid") or 0), Path(str(device.get("uds_path") or own_socket))
    )  # fmt: skip


async def _relaunch_vmm(ctx: BootContext) -> None:
    """Replace a Firecracker that refused a snapshot (it is unusable afterwards)."""
    old = ctx.vmm
    if old is not None:
        old.signal(signal.SIGKILL)
        await asyncio.to_thread(wait_gone, old.pid, old.start_time, 10.0)
        for _ in range(100):  # its wrapper writes exit_status after it: not over the new one's
            if ctx.paths.exit_status.exists():
                break
            await asyncio.sleep(0.05)
        old.kill_leftovers()
    guest_vsock.uds_path(ctx.paths.workdir).unlink(missing_ok=True)
    await start_vmm(ctx)
    await wait_api_socket(ctx)


def vm_config_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a microVM really runs with, in spec terms, from Firecracker's
    ``GET /vm/config``: ``vcpus``, ``memory_mib``, ``kernel``, ``initrd``,
    ``boot_args``, ``rootfs`` (the root drive's file) and ``drives`` (the
    other drives, as DriveSpec). Sections Firecracker leaves out are left out."""
    out: dict[str, Any] = {}
    machine = config.get("machine-config") or {}
    if isinstance(machine.get("vcpu_count"), int):
        out["vcpus"] = machine["vcpu_count"]
    if isinstance(machine.get("mem_size_mib"), int):
        out["memory_mib"] = machine["mem_size_mib"]
    boot_source = config.get("boot-source")
    if isinstance(boot_source, dict):
        out["kernel"] = boot_source.get("kernel_image_path")
        out["initrd"] = boot_source.get("initrd_path")
        if isinstance(boot_source.get("boot_args"), str):
            out["boot_args"] = boot_source["boot_args"]
    drives = config.get("drives")
    if isinstance(drives, list):
        out["rootfs"] = next((d.get("path_on_host") for d in drives if d.get("is_root_device")), None)
        out["drives"] = tuple(
            DriveSpec(id=str(d.get("drive_id")), path=str(d.get("path_on_host") or ""), read_only=bool(d.get("is_read_only")))
            for d in drives
            if not d.get("is_root_device")
        )
    return out


DEFAULT_STEPS: tuple[BootStep, ...] = tuple(
    BootStep(fn.__name__, fn)
    for fn in (
        validate_spec,
        resolve_images,
        prepare_workdir,
        start_vmm,
        wait_api_socket,
        configure_machine,
        configure_boot_source,
        attach_rootfs,
        attach_drives,
        start_instance,
    )
)


#: The steps a snapshot restore replaces by ``load_snapshot``.
CONFIGURE_STEPS = ("configure_machine", "configure_boot_source", "attach_rootfs", "attach_drives")
RESOLVE_SNAPSHOT = BootStep("resolve_snapshot", resolve_snapshot)
LOAD_SNAPSHOT = BootStep("load_snapshot", load_snapshot)
ATTACH_NETWORK = BootStep("attach_network", attach_network)
INSTALL_GUEST_AGENT = BootStep("install_guest_agent", install_guest_agent)
ATTACH_VSOCK = BootStep("attach_vsock", attach_vsock)
ATTACH_BALLOON = BootStep("attach_balloon", attach_balloon)


def _insert(steps: tuple[BootStep, ...], step: BootStep, *, after: str | None = None, before: str | None = None) -> tuple[BootStep, ...]:
    """``steps`` with ``step`` right after the step named ``after`` (or right
    before ``before``); at the end when that step is not in the list."""
    names = [s.name for s in steps]
    if after is not None and after in names:
        at = names.index(after) + 1
    elif before is not None and before in names:
        at = names.index(before)
    else:
        at = len(steps)
    return (*steps[:at], step, *steps[at:])


def plan(spec: MicroVMSpec, steps: tuple[BootStep, ...] = DEFAULT_STEPS) -> tuple[BootStep, ...]:
    """The steps that create ``spec`` from the list ``steps``: unchanged for a
    normal boot; without ``start_instance`` when ``spec.start`` is false; for
    ``spec.snapshot``, ``resolve_snapshot`` swapped in for ``resolve_images``,
    the configuration steps dropped and ``load_snapshot`` swapped in for
    ``start_instance``; with ``spec.network``, ``attach_network`` inserted before
    ``configure_boot_source`` (it adds ``ip=`` to the boot arguments); with
    ``spec.vsock`` (not for a snapshot, which brings its own devices),
    ``install_guest_agent`` after ``prepare_workdir`` and ``attach_vsock`` after
    ``attach_drives`` (so before ``start_instance``); with ``spec.balloon_mib``,
    ``attach_balloon`` after ``attach_drives``. Steps of other names are
    kept where they are."""
    if spec.network and spec.snapshot is None:
        steps = _insert(steps, ATTACH_NETWORK, before="configure_boot_source")
    if spec.vsock and spec.snapshot is None:
        steps = _insert(steps, INSTALL_GUEST_AGENT, after="prepare_workdir")
        steps = _insert(steps, ATTACH_VSOCK, after="attach_drives", before="start_instance")
    if spec.balloon_mib is not None and spec.snapshot is None:
        steps = _insert(steps, ATTACH_BALLOON, after="attach_drives", before="start_instance")
    if spec.snapshot is not None:
        swap = {"resolve_images": RESOLVE_SNAPSHOT, "start_instance": LOAD_SNAPSHOT}
        return tuple(swap.get(s.name, s) for s in steps if s.name not in CONFIGURE_STEPS)
    if not spec.start:
        return tuple(s for s in steps if s.name != "start_instance")
    return steps


async def run_boot(ctx: BootContext, steps: tuple[BootStep, ...] = DEFAULT_STEPS) -> None:
    """Run ``steps`` in order. On failure run the registered cleanups in
    reverse and raise: client mistakes (UsageError, NotFoundError,
    ConflictError) and a full disk (NoSpaceError) as they are, anything else as BootError naming the step.
    Callable once per context."""
    for step in steps:
        log.info("%s: boot step %s", ctx.name, step.name)
        try:
            await step.run(ctx)
        except BaseException as exc:
            output = diagnosis.capture(ctx.paths)  # before the cleanups remove the work directory
            await _undo(ctx)
            if isinstance(exc, (UsageError, NotFoundError, ConflictError, NoSpaceError)):
                log.info("%s: boot step %s refused: %s", ctx.name, step.name, exc.message)
                raise
            if not isinstance(exc, Exception):
                raise
            error = _boot_error(step.name, exc, ctx, output)
            log.warning("%s: %s", ctx.name, error.message)
            raise error from exc
    log.info("%s: booted", ctx.name)


async def _undo(ctx: BootContext) -> None:
    while ctx._cleanups:
        what, cleanup = ctx._cleanups.pop()
        try:
            await cleanup()
        except Exception:
            log.exception("%s: cleaning up the %s failed", ctx.name, what)


REFUSAL_HINTS = {
    "load_snapshot": "check the snapshot against Firecracker's message: it must come from the same Firecracker "
    "version and architecture, and the drives it names must still exist at their paths",
}


def _boot_error(step: str, exc: Exception, ctx: BootContext, output: diagnosis.BootOutput) -> BootError:
    """The BootError for ``exc`` in ``step``: its message keeps ``output`` (the
    console's and the VMM's last lines; the work directory is gone by now) and
    its hint fits the cause (:func:`boot_diagnosis.hint_for`)."""
    memory = ctx.spec.memory_mib
    if isinstance(exc, FirecrackerAPIError):
        default = REFUSAL_HINTS.get(step, diagnosis.DEFAULT_HINT)
        hint = diagnosis.hint_for(output, memory, fault=exc.fault_message, default=default)
        message = f"Firecracker refused it ({exc.status}): {exc.fault_message}"
    elif isinstance(exc, FcMacosError):
        hint = diagnosis.hint_for(output, memory, fault=exc.message, default=exc.hint or "see fc-agent's log")
        message = exc.message
    else:
        hint = diagnosis.hint_for(output, memory, default="see fc-agent's log")
        message = f"{type(exc).__name__}: {exc}"
    return BootError(step, diagnosis.with_output(message, output), hint=hint)


def describe(steps: tuple[BootStep, ...] = DEFAULT_STEPS) -> list[str]:
    return [s.name for s in steps]


__all__ = ["BootContext", "BootStep", "DEFAULT_STEPS", "describe", "plan", "run_boot", "vm_config_fields"]
