"""Wire types of the fc-agent HTTP API, shared by the agent and its client.

Both sides speak JSON objects; these dataclasses are their one definition.
``from_dict`` rejects unknown fields and wrong types with
:class:`~fc_macos.errors.ValidationError` so that the agent can answer 400 and
the client can trust what it parses.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from fc_macos.errors import ValidationError

#: DNS-label rules: 1-63 chars, lower-case letters, digits and '-', not starting or ending with '-'.
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
#: Firecracker drive ids: alphanumerics and '_' only.
DRIVE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,64}$")

MAX_VCPUS = 32
MAX_MEMORY_MIB = 1024 * 1024  # 1 TiB: anything larger is surely a typo
DEFAULT_BOOT_ARGS = "console=ttyS0 reboot=k panic=1"

#: microVM states as the agent reports them. ``created``: the Firecracker process
#: runs and is configured, but the guest has not started (``start: false``).
#: ``damaged``: its work directory is there but its record cannot be read (``error`` says why).
STARTING, CREATED, RUNNING, PAUSED = "starting", "created", "running", "paused"
STOPPING, STOPPED, FAILED, DAMAGED = "stopping", "stopped", "failed", "damaged"
STATES = (STARTING, CREATED, RUNNING, PAUSED, STOPPING, STOPPED, FAILED, DAMAGED)
#: The states of a microVM that is not running as far as the agent manages it: its
#: Firecracker process is gone (stopped, failed), or its record is (damaged).
ENDED_STATES = (STOPPED, FAILED, DAMAGED)
#: Spec fields that describe a fresh boot; a snapshot brings its own.
BOOT_FIELDS = ("vcpus", "memory_mib", "kernel", "initrd", "rootfs", "boot_args", "drives", "balloon_mib")
#: What ``MicroVMSpec.wait`` may name: create answers once that is ready.
WAIT_FOR = ("guest_agent",)
DEFAULT_WAIT_TIMEOUT_S = 60.0
MAX_WAIT_TIMEOUT_S = 3600.0
#: The guest agent's states as ``MicroVMInfo.guest_agent["state"]`` reports them.
GUEST_AGENT_STATES = ("absent", "starting", "ready", "unresponsive")
#: The longest graceful stop ``POST /v1/microvms/{name}/stop`` waits before SIGKILL.
MAX_STOP_TIMEOUT_S = 3600.0
#: The most lines ``GET /v1/microvms/{name}/logs?tail=N`` takes.
MAX_TAIL_LINES = 10_000_000
DEFAULT_HOST_ADDR = "0.0.0.0"


def not_running_hint(name: str, state: str) -> str:
    """How to get microVM ``name`` (in ``state``) running: the CLI's command, then the API's call."""
    if state == PAUSED:
        return (f"resume it: 'fc-macos actions resume --name {name}' "
                f"(PATCH /v1/microvms/{name}/firecracker/vm {{\"state\": \"Resumed\"}})")
    if state == CREATED:
        return (f"start it: 'fc-macos actions start --name {name}' "
                f"(PUT /v1/microvms/{name}/firecracker/actions {{\"action_type\": \"InstanceStart\"}})")
    if state == STARTING:
        return "wait until its boot finishes"
    return (f"boot it again: 'fc-macos microvm start --name {name}' (POST /v1/microvms/{name}/start); "
            f"its logs: 'fc-macos microvm logs --name {name}'")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid microVM name, else raise ValidationError."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValidationError(
            f"invalid microVM name {name!r}",
            hint="use 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit "
            "(e.g. 'web-1')",
        )
    return name


def _check_fields(kind: str, data: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(f"{kind} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) in {kind}: {', '.join(unknown)}",
            hint=f"allowed fields: {', '.join(sorted(allowed))}",
            code="unknown_field",
        )
    return data


def _int(kind: str, name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON (and JSON Schema) make no difference between 80 and 80.0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{kind}.{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValidationError(f"{kind}.{name} must be between {lo} and {hi}, got {value}")
    return value


def _str(kind: str, name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{kind}.{name} must be a non-empty string, got {value!r}")
    return value


def _bool(kind: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{kind}.{name} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class DriveSpec:
    """An extra block device. ``path`` is resolved like kernel/rootfs paths."""

    id: str
    path: str
    read_only: bool = False

    @classmethod
    def from_dict(cls, data: Any) -> DriveSpec:
        data = _check_fields("drive", data, {"id", "path", "read_only"})
        drive_id = _str("drive", "id", data.get("id"))
        assert drive_id is not None
        if drive_id == "rootfs":
            raise ValidationError("drive id 'rootfs' is reserved for the root drive", hint="pick another id, e.g. 'data'")
        if not DRIVE_ID_PATTERN.match(drive_id):
            raise ValidationError(
                f"invalid drive id {drive_id!r}", hint="use letters, digits and '_' only (Firecracker's rule)"
            )
        path = _str("drive", "path", data.get("path"))
        assert path is not None
        return cls(id=drive_id, path=path, read_only=_bool("drive", "read_only", data.get("read_only", False)))


def parse_host_addr(kind: str, value: Any) -> str:
    """``value`` as a normalized IP address; ValidationError naming ``kind`` otherwise."""
    if not isinstance(value, str):
        raise ValidationError(f"{kind}.host_addr must be an IP address string, got {value!r}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValidationError(
            f"{kind}.host_addr must be an IP address of the agent's machine, got {value!r}",
            hint="e.g. 0.0.0.0 (every address, the default) or 127.0.0.1",
        ) from None


@dataclass(frozen=True)
class PortSpec:
    """A published port: the agent listens on ``host_addr:host_port`` of its own
    machine and bridges every TCP connection to ``guest_port`` inside the guest
    (through the guest agent, so the guest needs no network device)."""

    host_port: int
    guest_port: int
    host_addr: str = DEFAULT_HOST_ADDR

    @classmethod
    def from_dict(cls, data: Any) -> PortSpec:
        data = _check_fields("port", data, {"host_port", "guest_port", "host_addr"})
        if "host_port" not in data or "guest_port" not in data:
            raise ValidationError(
                "a port needs host_port and guest_port", hint='e.g. {"host_port": 8080, "guest_port": 80}'
            )
        return cls(
            host_port=_int("port", "host_port", data["host_port"], 1, 65535),
            guest_port=_int("port", "guest_port", data["guest_port"], 1, 65535),
            host_addr=parse_host_addr("port", data.get("host_addr", DEFAULT_HOST_ADDR)),
        )

    @property
    def address(self) -> str:
        """``host_addr:host_port`` (``[v6]:port`` for IPv6)."""
        return f"[{self.host_addr}]:{self.host_port}" if ":" in self.host_addr else f"{self.host_addr}:{self.host_port}"


@dataclass(frozen=True)
class SnapshotSpec:
    """A snapshot to restore instead of booting: the VM state file, the guest
    memory file and whether the guest resumes at once (else it stays paused).
    Relative paths resolve inside the agent's ``<state-dir>/snapshots``;
    absolute paths must lie inside that directory or an image directory."""

    snapshot_path: str
    mem_path: str
    resume: bool = True

    @classmethod
    def from_dict(cls, data: Any) -> SnapshotSpec:
        data = _check_fields("snapshot", data, {"snapshot_path", "mem_path", "resume"})
        snapshot_path = _str("snapshot", "snapshot_path", data.get("snapshot_path"))
        mem_path = _str("snapshot", "mem_path", data.get("mem_path"))
        assert snapshot_path is not None and mem_path is not None
        return cls(snapshot_path=snapshot_path, mem_path=mem_path, resume=_bool("snapshot", "resume", data.get("resume", True)))


@dataclass(frozen=True)
class MicroVMSpec:
    """What to create. Paths may be bare names (looked up in the agent's image
    directory) or absolute paths inside one of the directories the agent serves
    images from. ``kernel``/``rootfs`` default to the installed images
    (``vmlinux``, ``rootfs.ext4``); ``initrd`` defaults to ``initrd.img`` when
    that file is installed.

    ``start=False`` runs every boot step but the last (``InstanceStart``): the
    microVM is ``created``, open to pre-boot Firecracker calls through the raw
    relay, and starts with a relayed ``PUT /actions {"action_type": "InstanceStart"}``.
    ``snapshot`` restores a snapshot instead of booting; the fields of
    :data:`BOOT_FIELDS` then come from the snapshot and must keep their defaults.
    ``network=True`` gives the guest an ``eth0`` on its own TAP device and /30
    (see :mod:`fc_macos.agent.network`; not with a snapshot).

    ``vsock`` (default on) gives the guest a vsock device (a CID unique on the
    agent, ``<workdir>/vsock.sock``) and writes the guest agent into the rootfs
    copy; a snapshot brings its own devices, so it stays at its default there.
    ``ports`` are published by the agent while the microVM runs.
    ``balloon_mib`` installs a memory balloon (``PUT /balloon`` before
    ``InstanceStart``, deflated on OOM, statistics every second) with that
    target size; a balloon can only be added before the start. ``wait:
    "guest_agent"`` makes create answer only once the guest agent is ready
    (504 ``guest_agent_timeout`` after ``wait_timeout_s``; the microVM keeps
    running)."""

    name: str | None = None
    vcpus: int = 1
    memory_mib: int = 256
    kernel: str | None = None
    initrd: str | None = None
    rootfs: str | None = None
    boot_args: str = DEFAULT_BOOT_ARGS
    drives: tuple[DriveSpec, ...] = field(default_factory=tuple)
    start: bool = True
    snapshot: SnapshotSpec | None = None
    network: bool = False
    vsock: bool = True
    ports: tuple[PortSpec, ...] = field(default_factory=tuple)
    wait: str | None = None
    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    balloon_mib: int | None = None

    _FIELDS = frozenset({"name", *BOOT_FIELDS, "start", "snapshot", "network", "vsock", "ports", "wait", "wait_timeout_s"})

    @classmethod
    def from_dict(cls, data: Any) -> MicroVMSpec:
        data = _check_fields("microVM spec", data, set(cls._FIELDS))
        name = data.get("name")
        if name is not None:
            validate_name(name)
        drives_raw = data.get("drives", [])
        if not isinstance(drives_raw, list):
            raise ValidationError("microVM spec.drives must be a list of drive objects")
        drives = tuple(DriveSpec.from_dict(d) for d in drives_raw)
        ids = [d.id for d in drives]
        if len(ids) != len(set(ids)):
            raise ValidationError("drive ids must be unique", hint=f"got {ids}")
        boot_args = data.get("boot_args", DEFAULT_BOOT_ARGS)
        if not isinstance(boot_args, str):
            raise ValidationError("microVM spec.boot_args must be a string")
        raw_snapshot = data.get("snapshot")
        snapshot = None if raw_snapshot is None else SnapshotSpec.from_dict(raw_snapshot)
        start = _bool("microVM spec", "start", data.get("start", True))
        ports = _ports(data.get("ports", []))
        wait = data.get("wait")
        if wait is not None and wait not in WAIT_FOR:
            raise ValidationError(
                f"microVM spec.wait must be null or one of {', '.join(WAIT_FOR)}, got {wait!r}",
                hint='"guest_agent": answer once the guest agent in the microVM is ready',
            )
        wait_timeout_s = data.get("wait_timeout_s", DEFAULT_WAIT_TIMEOUT_S)
        if (
            isinstance(wait_timeout_s, bool)
            or not isinstance(wait_timeout_s, (int, float))
            or not 0 < wait_timeout_s <= MAX_WAIT_TIMEOUT_S
        ):
            raise ValidationError(
                f"microVM spec.wait_timeout_s must be a number of seconds in (0, {MAX_WAIT_TIMEOUT_S:g}], got {wait_timeout_s!r}"
            )
        spec = cls(
            name=name,
            vcpus=_int("microVM spec", "vcpus", data.get("vcpus", 1), 1, MAX_VCPUS),
            memory_mib=_int("microVM spec", "memory_mib", data.get("memory_mib", 256), 16, MAX_MEMORY_MIB),
            kernel=_str("microVM spec", "kernel", data.get("kernel"), optional=True),
            initrd=_str("microVM spec", "initrd", data.get("initrd"), optional=True),
            rootfs=_str("microVM spec", "rootfs", data.get("rootfs"), optional=True),
            boot_args=boot_args,
            drives=drives,
            start=start,
            snapshot=snapshot,
            network=_bool("microVM spec", "network", data.get("network", False)),
            vsock=_bool("microVM spec", "vsock", data.get("vsock", True)),
            ports=ports,
            wait=wait,
            wait_timeout_s=float(wait_timeout_s),
            balloon_mib=_balloon(data.get("balloon_mib"), data.get("memory_mib", 256)),
        )
        if snapshot is not None:
            spec._check_restore()
        if wait == "guest_agent" and not spec.vsock:
            raise ValidationError(
                'microVM spec.wait="guest_agent" needs the vsock device, but vsock is false',
                hint="drop wait, or keep vsock (the default): the guest agent is reached over vsock",
            )
        if spec.ports and not spec.vsock:
            raise ValidationError(
                "microVM spec.ports need the vsock device, but vsock is false: "
                "published connections go through the guest agent",
                hint="drop ports, or keep vsock (the default); for the guest's own network use network=true",
            )
        return spec

    def _check_restore(self) -> None:
        defaults = MicroVMSpec()
        given = [f for f in BOOT_FIELDS if getattr(self, f) != getattr(defaults, f)]
        if given:
            raise ValidationError(
                f"microVM spec.{', '.join(given)} cannot be set with a snapshot: "
                "the kernel, drives, boot arguments, vCPUs and memory come from the snapshot",
                hint="give only name and snapshot {snapshot_path, mem_path, resume}",
            )
        if self.network:
            raise ValidationError(
                "microVM spec.network cannot be set with a snapshot: the snapshot brings its own network devices",
                hint="restore without network, or boot a new microVM with network=true",
            )
        if not self.vsock:
            raise ValidationError(
                "microVM spec.vsock cannot be set with a snapshot: the snapshot brings its own vsock device (or none)",
                hint="restore without the vsock field; boot a new microVM with vsock=false for one without",
            )
        if not self.start:
            raise ValidationError(
                "microVM spec.start=false does not apply to a snapshot restore",
                hint="to restore it paused, set snapshot.resume=false",
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drives"] = [asdict(d) for d in self.drives]
        out["snapshot"] = None if self.snapshot is None else asdict(self.snapshot)
        out["ports"] = [asdict(p) for p in self.ports]
        return out

    def to_request(self) -> dict[str, Any]:
        """The spec as a request body: only the fields that differ from their
        defaults, so that an agent older than a new optional field still takes
        every spec that does not use it (the agent fills in the defaults)."""
        defaults = MicroVMSpec().to_dict()
        return {k: v for k, v in self.to_dict().items() if v != defaults[k]}


def _balloon(raw: Any, memory_mib: Any) -> int | None:
    """``balloon_mib``: None, or a size in MiB up to the microVM's memory."""
    if raw is None:
        return None
    size = _int("microVM spec", "balloon_mib", raw, 0, MAX_MEMORY_MIB)
    if isinstance(memory_mib, int) and size > memory_mib:
        raise ValidationError(
            f"microVM spec.balloon_mib ({size}) is larger than its memory_mib ({memory_mib})",
            hint="a balloon takes memory back from the guest: give at most the microVM's memory",
        )
    return size


def _ports(raw: Any) -> tuple[PortSpec, ...]:
    if not isinstance(raw, list):
        raise ValidationError("microVM spec.ports must be a list of port objects", hint='e.g. [{"host_port": 8080, "guest_port": 80}]')
    ports = tuple(PortSpec.from_dict(p) for p in raw)
    addresses = [p.address for p in ports]
    if len(addresses) != len(set(addresses)):
        raise ValidationError("microVM spec.ports publishes one address twice", hint=f"got {addresses}")
    return ports


@dataclass(frozen=True)
class MicroVMInfo:
    """What the agent reports about one microVM (``GET /microvms/{name}``).

    ``spec`` is the spec as resolved by the agent (absolute paths, defaults
    filled in). ``exit_status`` is the VMM's exit code once it has stopped
    (``None`` while it runs, or when it is unknown). Resource figures are
    ``None`` when the process is not running. ``network`` is set when the spec
    asked for one: ``{"tap", "host_ip", "guest_ip", "mac", "netmask", "index",
    "nat" (tool or None), "uplink", "nat_hint"}``. ``vsock`` is ``{"guest_cid",
    "uds_path"}`` or None (``vsock: false``). ``guest_agent`` is ``{"state" (one
    of :data:`GUEST_AGENT_STATES`), "version", "ready_s" (InstanceStart to
    ready), "reason" (why absent/starting/unresponsive)}``, None while the
    microVM does not run. ``ports`` are the ports published now, each
    ``{"host_addr", "host_port", "guest_port"}``.
    """

    name: str
    state: str
    pid: int | None
    vcpus: int
    memory_mib: int
    spec: dict[str, Any]
    created_at: float
    started_at: float | None = None
    stopped_at: float | None = None
    uptime_s: float | None = None
    exit_status: int | None = None
    cpu_percent: float | None = None
    memory_rss_mib: float | None = None
    socket_path: str | None = None
    error: str | None = None
    network: dict[str, Any] | None = None
    vsock: dict[str, Any] | None = None
    guest_agent: dict[str, Any] | None = None
    ports: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MicroVMInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
