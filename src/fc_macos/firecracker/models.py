"""Request and response types of the Firecracker API (v1.16.1).

The TypedDicts mirror the spec's definitions of the same name for the bodies
that callers build or read most; the spec (:mod:`fc_macos.firecracker.spec`)
stays the authority and validates every body. Fields marked optional in the
spec are ``total=False`` keys here.

:class:`FirecrackerResponse` is one raw HTTP answer, kept byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, TypedDict

from fc_macos.errors import FirecrackerError

ActionType = Literal["FlushMetrics", "InstanceStart", "SendCtrlAltDel"]
VmState = Literal["Paused", "Resumed"]
InstanceState = Literal["Not started", "Running", "Paused"]
CacheType = Literal["Unsafe", "Writeback"]
IoEngine = Literal["Sync", "Async"]
HugePages = Literal["None", "2M"]
CpuTemplate = Literal["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"]
LogLevel = Literal["Error", "Warning", "Info", "Debug", "Trace", "Off"]
MmdsVersion = Literal["V1", "V2"]
SnapshotType = Literal["Full", "Diff"]
MemBackendType = Literal["File", "Uffd"]


class _TokenBucketRequired(TypedDict):
    size: int
    refill_time: int


class TokenBucket(_TokenBucketRequired, total=False):
    """Capacity ``size``, ``refill_time`` in ms, optional ``one_time_burst``."""

    one_time_burst: int


class RateLimiter(TypedDict, total=False):
    """``bandwidth`` (bytes) and ``ops`` (operations) token buckets."""

    bandwidth: TokenBucket
    ops: TokenBucket


class MemoryBackend(TypedDict):
    backend_type: MemBackendType
    backend_path: str


class NetworkOverride(TypedDict):
    iface_id: str
    host_dev_name: str


class VsockOverride(TypedDict):
    uds_path: str


class InstanceInfo(TypedDict):
    """``GET /``."""

    app_name: str
    id: str
    state: InstanceState
    vmm_version: str


class FirecrackerVersion(TypedDict):
    """``GET /version``."""

    firecracker_version: str


class _MachineConfigurationRequired(TypedDict):
    vcpu_count: int
    mem_size_mib: int


class MachineConfiguration(_MachineConfigurationRequired, total=False):
    """``GET``/``PUT /machine-config``."""

    smt: bool
    track_dirty_pages: bool
    huge_pages: HugePages
    cpu_template: CpuTemplate


class _BalloonRequired(TypedDict):
    amount_mib: int
    deflate_on_oom: bool


class Balloon(_BalloonRequired, total=False):
    """``GET``/``PUT /balloon``."""

    stats_polling_interval_s: int
    free_page_hinting: bool
    free_page_reporting: bool


class _BalloonStatsRequired(TypedDict):
    target_pages: int
    actual_pages: int
    target_mib: int
    actual_mib: int


class BalloonStats(_BalloonStatsRequired, total=False):
    """``GET /balloon/statistics``; the virtio counters appear when the guest reports them."""

    swap_in: int
    swap_out: int
    major_faults: int
    minor_faults: int
    free_memory: int
    total_memory: int
    available_memory: int
    disk_caches: int
    hugetlb_allocations: int
    hugetlb_failures: int
    oom_kill: int
    alloc_stall: int
    async_scan: int
    direct_scan: int
    async_reclaim: int
    direct_reclaim: int


class _BalloonHintingStatusRequired(TypedDict):
    host_cmd: int


class BalloonHintingStatus(_BalloonHintingStatusRequired, total=False):
    """``GET /balloon/hinting/status``."""

    guest_cmd: int


class MemoryHotplugStatus(TypedDict, total=False):
    """``GET /hotplug/memory``."""

    total_size_mib: int
    slot_size_mib: int
    block_size_mib: int
    plugged_size_mib: int
    requested_size_mib: int


class CpuConfig(TypedDict, total=False):
    """``PUT /cpu-config``: a custom CPU template (modifier shapes as in the spec)."""

    kvm_capabilities: list[str]
    cpuid_modifiers: list[dict[str, Any]]
    msr_modifiers: list[dict[str, Any]]
    reg_modifiers: list[dict[str, Any]]
    vcpu_features: list[dict[str, Any]]


#: ``GET /vm/config``: kebab-case keys (``boot-source``, ``machine-config`` ...), as in a ``--config-file``.
FullVmConfiguration = dict[str, Any]


@dataclass(frozen=True)
class FirecrackerResponse:
    """One HTTP answer of the API socket, unchanged: ``status``, ``headers``, raw ``body`` bytes.

    From the client, ``headers`` is case-insensitive and keeps repeated headers.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` for an empty body.

        Raises :class:`~fc_macos.errors.FirecrackerError` if the body is not JSON.
        """
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise FirecrackerError(
                f"Firecracker answered {self.status} with a body that is not JSON: {self.text[:200]!r}",
                hint="check that the socket belongs to a Firecracker process (GET / should name it)",
            ) from exc


__all__ = [
    "ActionType",
    "Balloon",
    "BalloonHintingStatus",
    "BalloonStats",
    "CacheType",
    "CpuConfig",
    "CpuTemplate",
    "FirecrackerResponse",
    "FirecrackerVersion",
    "FullVmConfiguration",
    "HugePages",
    "InstanceInfo",
    "InstanceState",
    "IoEngine",
    "LogLevel",
    "MachineConfiguration",
    "MemBackendType",
    "MemoryBackend",
    "MemoryHotplugStatus",
    "MmdsVersion",
    "NetworkOverride",
    "RateLimiter",
    "SnapshotType",
    "TokenBucket",
    "VmState",
    "VsockOverride",
]
