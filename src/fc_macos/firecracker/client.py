"""``FirecrackerClient``: a typed async client of one Firecracker API socket.

One typed method per operation of the Firecracker 1.16.1 spec (registered with
:func:`operation`, listed by :meth:`FirecrackerClient.operation_methods`). They
build the body from keyword arguments (``None`` means "leave the field out"),
validate it against the spec before sending (unless ``validate=False``), raise
:class:`~fc_macos.errors.FirecrackerAPIError` on a non-2xx answer and return
the parsed JSON of a 200 (``None`` for a 204). The raw layer
(:meth:`~fc_macos.firecracker.transport.FirecrackerTransport.request`,
``wait_ready``, ``close``) comes from :class:`FirecrackerTransport`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, TypeVar, cast

from fc_macos.firecracker import models as m
from fc_macos.firecracker.transport import FirecrackerTransport

F = TypeVar("F", bound=Callable[..., Any])


def operation(operation_id: str) -> Callable[[F], F]:
    """Mark a client method as the implementation of the spec's ``operation_id``."""

    def mark(fn: F) -> F:
        fn.__fc_operation__ = operation_id  # type: ignore[attr-defined]
        return fn

    return mark


def _fields(**values: Any) -> dict[str, Any]:
    """A body from keyword arguments, leaving out the ``None`` ones."""
    return {k: v for k, v in values.items() if v is not None}


class FirecrackerClient(FirecrackerTransport):
    """Typed async client of the Firecracker API at ``socket_path``.

    ``FirecrackerClient(socket_path, *, timeout=10.0, validate=True)``; use as
    ``async with FirecrackerClient(path) as fc: await fc.get_instance_info()``.
    """

    @classmethod
    def operation_methods(cls) -> dict[str, str]:
        """Spec ``operationId`` -> name of the method that implements it."""
        found: dict[str, str] = {}
        for name in dir(cls):
            op_id = getattr(getattr(cls, name), "__fc_operation__", None)
            if op_id is not None:
                found[op_id] = name
        return found

    @operation("describeInstance")
    async def get_instance_info(self) -> m.InstanceInfo:
        """``GET /``: id, state (``Not started``/``Running``/``Paused``), versions."""
        return cast(m.InstanceInfo, await self._call("GET", "/"))

    @operation("getFirecrackerVersion")
    async def get_version(self) -> m.FirecrackerVersion:
        """``GET /version``."""
        return cast(m.FirecrackerVersion, await self._call("GET", "/version"))

    @operation("getExportVmConfig")
    async def get_vm_config(self) -> m.FullVmConfiguration:
        """``GET /vm/config``: the full effective configuration."""
        return cast(m.FullVmConfiguration, await self._call("GET", "/vm/config"))

    @operation("getMachineConfiguration")
    async def get_machine_config(self) -> m.MachineConfiguration:
        """``GET /machine-config``."""
        return cast(m.MachineConfiguration, await self._call("GET", "/machine-config"))

    @operation("putMachineConfiguration")
    async def put_machine_config(
        self, *, vcpu_count: int, mem_size_mib: int, smt: bool | None = None, track_dirty_pages: bool | None = None,
        huge_pages: m.HugePages | None = None, cpu_template: m.CpuTemplate | None = None,
    ) -> None:
        """``PUT /machine-config`` (pre-boot). Omitted optional fields are reset to their defaults."""
        await self._call("PUT", "/machine-config", _fields(
            vcpu_count=vcpu_count, mem_size_mib=mem_size_mib, smt=smt, track_dirty_pages=track_dirty_pages,
            huge_pages=huge_pages, cpu_template=cpu_template))

    @operation("patchMachineConfiguration")
    async def patch_machine_config(
        self, *, vcpu_count: int | None = None, mem_size_mib: int | None = None, smt: bool | None = None,
        track_dirty_pages: bool | None = None, huge_pages: m.HugePages | None = None,
        cpu_template: m.CpuTemplate | None = None,
    ) -> None:
        """``PATCH /machine-config`` (pre-boot): change only the given fields."""
        await self._call("PATCH", "/machine-config", _fields(
            vcpu_count=vcpu_count, mem_size_mib=mem_size_mib, smt=smt, track_dirty_pages=track_dirty_pages,
            huge_pages=huge_pages, cpu_template=cpu_template))

    @operation("putCpuConfiguration")
    async def put_cpu_config(self, config: m.CpuConfig) -> None:
        """``PUT /cpu-config`` (pre-boot): a custom CPU template."""
        await self._call("PUT", "/cpu-config", dict(config))

    @operation("putGuestBootSource")
    async def put_boot_source(
        self, *, kernel_image_path: str, boot_args: str | None = None, initrd_path: str | None = None
    ) -> None:
        """``PUT /boot-source`` (pre-boot). Without ``boot_args`` Firecracker's default disables the UART."""
        await self._call("PUT", "/boot-source", _fields(
            kernel_image_path=kernel_image_path, boot_args=boot_args, initrd_path=initrd_path))

    @operation("putGuestDriveByID")
    async def put_drive(
        self, drive_id: str, *, is_root_device: bool, path_on_host: str | None = None,
        is_read_only: bool | None = None, partuuid: str | None = None, cache_type: m.CacheType | None = None,
        io_engine: m.IoEngine | None = None, rate_limiter: m.RateLimiter | None = None, socket: str | None = None,
    ) -> None:
        """``PUT /drives/{drive_id}``: add or replace a block device (post-boot: hot-plug)."""
        await self._call("PUT", f"/drives/{drive_id}", _fields(
            drive_id=drive_id, is_root_device=is_root_device, path_on_host=path_on_host, is_read_only=is_read_only,
            partuuid=partuuid, cache_type=cache_type, io_engine=io_engine, rate_limiter=rate_limiter, socket=socket))

    @operation("patchGuestDriveByID")
    async def patch_drive(
        self, drive_id: str, *, path_on_host: str | None = None, rate_limiter: m.RateLimiter | None = None
    ) -> None:
        """``PATCH /drives/{drive_id}`` (post-boot): new backing file and/or rate limiter."""
        await self._call("PATCH", f"/drives/{drive_id}", _fields(
            drive_id=drive_id, path_on_host=path_on_host, rate_limiter=rate_limiter))

    @operation("putGuestNetworkInterfaceByID")
    async def put_network_interface(
        self, iface_id: str, *, host_dev_name: str, guest_mac: str | None = None, mtu: int | None = None,
        rx_rate_limiter: m.RateLimiter | None = None, tx_rate_limiter: m.RateLimiter | None = None,
    ) -> None:
        """``PUT /network-interfaces/{iface_id}``: a virtio-net device backed by TAP ``host_dev_name``."""
        await self._call("PUT", f"/network-interfaces/{iface_id}", _fields(
            iface_id=iface_id, host_dev_name=host_dev_name, guest_mac=guest_mac, mtu=mtu,
            rx_rate_limiter=rx_rate_limiter, tx_rate_limiter=tx_rate_limiter))

    @operation("patchGuestNetworkInterfaceByID")
    async def patch_network_interface(
        self, iface_id: str, *, rx_rate_limiter: m.RateLimiter | None = None,
        tx_rate_limiter: m.RateLimiter | None = None,
    ) -> None:
        """``PATCH /network-interfaces/{iface_id}`` (post-boot): update the rate limiters."""
        await self._call("PATCH", f"/network-interfaces/{iface_id}", _fields(
            iface_id=iface_id, rx_rate_limiter=rx_rate_limiter, tx_rate_limiter=tx_rate_limiter))

    @operation("putGuestPmemByID")
    async def put_pmem(
        self, id: str, *, path_on_host: str, root_device: bool | None = None, read_only: bool | None = None,
        rate_limiter: m.RateLimiter | None = None,
    ) -> None:
        """``PUT /pmem/{id}``: a virtio-pmem device (post-boot: hot-plug)."""
        await self._call("PUT", f"/pmem/{id}", _fields(
            id=id, path_on_host=path_on_host, root_device=root_device, read_only=read_only,
            rate_limiter=rate_limiter))

    @operation("patchGuestPmemByID")
    async def patch_pmem(self, id: str, *, rate_limiter: m.RateLimiter | None = None) -> None:
        """``PATCH /pmem/{id}`` (post-boot): update the rate limiter."""
        await self._call("PATCH", f"/pmem/{id}", _fields(id=id, rate_limiter=rate_limiter))

    @operation("putGuestVsock")
    async def put_vsock(self, *, guest_cid: int, uds_path: str, vsock_id: str | None = None) -> None:
        """``PUT /vsock`` (pre-boot). Firecracker binds ``uds_path`` now: it must not exist."""
        await self._call("PUT", "/vsock", _fields(guest_cid=guest_cid, uds_path=uds_path, vsock_id=vsock_id))

    @operation("putEntropyDevice")
    async def put_entropy(self, *, rate_limiter: m.RateLimiter | None = None) -> None:
        """``PUT /entropy`` (pre-boot): a virtio-rng device."""
        await self._call("PUT", "/entropy", _fields(rate_limiter=rate_limiter))

    @operation("putSerialDevice")
    async def put_serial(self, *, serial_out_path: str | None = None, rate_limiter: m.TokenBucket | None = None) -> None:
        """``PUT /serial`` (pre-boot). With ``serial_out_path`` the console's stdin is not attached."""
        await self._call("PUT", "/serial", _fields(serial_out_path=serial_out_path, rate_limiter=rate_limiter))

    @operation("putLogger")
    async def put_logger(
        self, *, log_path: str | None = None, level: m.LogLevel | None = None, show_level: bool | None = None,
        show_log_origin: bool | None = None, module: str | None = None,
    ) -> None:
        """``PUT /logger`` (pre-boot)."""
        await self._call("PUT", "/logger", _fields(
            log_path=log_path, level=level, show_level=show_level, show_log_origin=show_log_origin, module=module))

    @operation("putMetrics")
    async def put_metrics(self, *, metrics_path: str) -> None:
        """``PUT /metrics`` (pre-boot)."""
        await self._call("PUT", "/metrics", {"metrics_path": metrics_path})

    @operation("getMmds")
    async def get_mmds(self) -> dict[str, Any]:
        """``GET /mmds``: the MMDS data store."""
        return cast("dict[str, Any]", await self._call("GET", "/mmds"))

    @operation("putMmds")
    async def put_mmds(self, data: Mapping[str, Any]) -> None:
        """``PUT /mmds``: replace the MMDS data store."""
        await self._call("PUT", "/mmds", dict(data))

    @operation("patchMmds")
    async def patch_mmds(self, patch: Mapping[str, Any]) -> None:
        """``PATCH /mmds``: JSON-merge-patch the MMDS data store."""
        await self._call("PATCH", "/mmds", dict(patch))

    @operation("putMmdsConfig")
    async def put_mmds_config(
        self, *, network_interfaces: Sequence[str], version: m.MmdsVersion | None = None,
        ipv4_address: str | None = None, imds_compat: bool | None = None,
    ) -> None:
        """``PUT /mmds/config`` (pre-boot); the interfaces must exist already."""
        await self._call("PUT", "/mmds/config", _fields(
            network_interfaces=list(network_interfaces), version=version, ipv4_address=ipv4_address,
            imds_compat=imds_compat))

    @operation("describeBalloonConfig")
    async def get_balloon(self) -> m.Balloon:
        """``GET /balloon``."""
        return cast(m.Balloon, await self._call("GET", "/balloon"))

    @operation("putBalloon")
    async def put_balloon(
        self, *, amount_mib: int, deflate_on_oom: bool, stats_polling_interval_s: int | None = None,
        free_page_hinting: bool | None = None, free_page_reporting: bool | None = None,
    ) -> None:
        """``PUT /balloon`` (pre-boot)."""
        await self._call("PUT", "/balloon", _fields(
            amount_mib=amount_mib, deflate_on_oom=deflate_on_oom, stats_polling_interval_s=stats_polling_interval_s,
            free_page_hinting=free_page_hinting, free_page_reporting=free_page_reporting))

    @operation("patchBalloon")
    async def patch_balloon(self, *, amount_mib: int) -> None:
        """``PATCH /balloon`` (post-boot): new target size."""
        await self._call("PATCH", "/balloon", {"amount_mib": amount_mib})

    @operation("describeBalloonStats")
    async def get_balloon_statistics(self) -> m.BalloonStats:
        """``GET /balloon/statistics`` (post-boot; needs stats enabled pre-boot)."""
        return cast(m.BalloonStats, await self._call("GET", "/balloon/statistics"))

    @operation("patchBalloonStatsInterval")
    async def patch_balloon_statistics(self, *, stats_polling_interval_s: int) -> None:
        """``PATCH /balloon/statistics`` (post-boot): new polling interval."""
        await self._call("PATCH", "/balloon/statistics", {"stats_polling_interval_s": stats_polling_interval_s})

    @operation("startBalloonHinting")
    async def start_balloon_hinting(self, *, acknowledge_on_stop: bool | None = None) -> None:
        """``PATCH /balloon/hinting/start`` (post-boot); the body is optional."""
        body = _fields(acknowledge_on_stop=acknowledge_on_stop)
        await self._call("PATCH", "/balloon/hinting/start", body or None)

    @operation("stopBalloonHinting")
    async def stop_balloon_hinting(self) -> None:
        """``PATCH /balloon/hinting/stop`` (post-boot)."""
        await self._call("PATCH", "/balloon/hinting/stop")

    @operation("describeBalloonHinting")
    async def get_balloon_hinting_status(self) -> m.BalloonHintingStatus:
        """``GET /balloon/hinting/status`` (post-boot)."""
        return cast(m.BalloonHintingStatus, await self._call("GET", "/balloon/hinting/status"))

    @operation("getMemoryHotplug")
    async def get_memory_hotplug(self) -> m.MemoryHotplugStatus:
        """``GET /hotplug/memory`` (post-boot): virtio-mem status."""
        return cast(m.MemoryHotplugStatus, await self._call("GET", "/hotplug/memory"))

    @operation("putMemoryHotplug")
    async def put_memory_hotplug(
        self, *, total_size_mib: int | None = None, slot_size_mib: int | None = None, block_size_mib: int | None = None
    ) -> None:
        """``PUT /hotplug/memory`` (pre-boot): configure virtio-mem."""
        await self._call("PUT", "/hotplug/memory", _fields(
            total_size_mib=total_size_mib, slot_size_mib=slot_size_mib, block_size_mib=block_size_mib))

    @operation("patchMemoryHotplug")
    async def patch_memory_hotplug(self, *, requested_size_mib: int) -> None:
        """``PATCH /hotplug/memory`` (post-boot): plug or unplug memory."""
        await self._call("PATCH", "/hotplug/memory", {"requested_size_mib": requested_size_mib})

    @operation("createSyncAction")
    async def create_sync_action(self, action_type: m.ActionType) -> None:
        """``PUT /actions``; see :meth:`start_instance`, :meth:`send_ctrl_alt_del`, :meth:`flush_metrics`."""
        await self._call("PUT", "/actions", {"action_type": action_type})

    async def start_instance(self) -> None:
        """Boot the guest (``InstanceStart``; only once, pre-boot)."""
        await self.create_sync_action("InstanceStart")

    async def send_ctrl_alt_del(self) -> None:
        """Inject Ctrl+Alt+Del (``SendCtrlAltDel``; x86_64 only, post-boot)."""
        await self.create_sync_action("SendCtrlAltDel")

    async def flush_metrics(self) -> None:
        """Write metrics now (``FlushMetrics``; post-boot)."""
        await self.create_sync_action("FlushMetrics")

    @operation("patchVm")
    async def patch_vm(self, state: m.VmState) -> None:
        """``PATCH /vm``: ``Paused`` or ``Resumed`` (post-boot)."""
        await self._call("PATCH", "/vm", {"state": state})

    async def pause(self) -> None:
        """Pause the microVM's vCPUs (``PATCH /vm {"state": "Paused"}``)."""
        await self.patch_vm("Paused")

    async def resume(self) -> None:
        """Resume a paused microVM (``PATCH /vm {"state": "Resumed"}``)."""
        await self.patch_vm("Resumed")

    @operation("createSnapshot")
    async def create_snapshot(
        self, *, snapshot_path: str, mem_file_path: str, snapshot_type: m.SnapshotType | None = None
    ) -> None:
        """``PUT /snapshot/create`` (post-boot, microVM paused). Existing files are truncated."""
        await self._call("PUT", "/snapshot/create", _fields(
            snapshot_path=snapshot_path, mem_file_path=mem_file_path, snapshot_type=snapshot_type))

    @operation("loadSnapshot")
    async def load_snapshot(
        self, *, snapshot_path: str, mem_backend: m.MemoryBackend | None = None, mem_file_path: str | None = None,
        track_dirty_pages: bool | None = None, resume_vm: bool | None = None,
        network_overrides: Sequence[m.NetworkOverride] | None = None, vsock_override: m.VsockOverride | None = None,
        clock_realtime: bool | None = None, enable_diff_snapshots: bool | None = None,
    ) -> None:
        """``PUT /snapshot/load`` into a fresh process; give ``mem_backend`` (or the deprecated ``mem_file_path``)."""
        await self._call("PUT", "/snapshot/load", _fields(
            snapshot_path=snapshot_path, mem_backend=mem_backend, mem_file_path=mem_file_path,
            track_dirty_pages=track_dirty_pages, resume_vm=resume_vm,
            network_overrides=list(network_overrides) if network_overrides is not None else None,
            vsock_override=vsock_override, clock_realtime=clock_realtime, enable_diff_snapshots=enable_diff_snapshots))


__all__ = ["FirecrackerClient", "operation"]
