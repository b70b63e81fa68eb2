#!/usr/bin/env python3
"""A Firecracker-compatible test VMM: Firecracker's command line and REST API, QEMU underneath.

Used ONLY by tests (given to the agent as ``--firecracker-bin``); product code never names it.
It runs with the standard library only, and is ONE file (the vsock back end included), because
setup copies it alone into the Tart double's "Linux VM" as /usr/local/bin/firecracker and that
VM's /usr/bin/python3 runs it.

What it mirrors from Firecracker v1.16.1 (see /work/shared/firecracker/README.md):
  * flags: --api-sock (default /run/firecracker.socket), --id, --config-file, --no-api,
    --log-path, --level, --show-level, --show-log-origin, --module, --metrics-path, --metadata,
    --boot-timer, --enable-pci, --http-api-max-payload-size, --mmds-size-limit, --no-seccomp,
    --seccomp-filter, --start-time-us, --start-time-cpu-us, --parent-cpu-time-us, --version
    (prints "Firecracker v1.16.1"), --snapshot-version, --help. Unknown flags exit 153,
    a bad --config-file or --level exits 152, an API socket path that exists exits 1.
  * the API over a Unix socket (HTTP/1.1 keep-alive, ``Server: Firecracker API``): paths,
    methods, pre-/post-boot phases, 204/200/400 codes and Firecracker's fault messages;
    micro_http-level failures (body over the payload limit) answer 400 ``{"error": ...}``.
  * the serial console is this process's stdin/stdout (QEMU inherits fds 0 and 1), unless
    PUT /serial gives serial_out_path. Log lines go to stdout until a logger target is set.
  * InstanceStart checks the kernel like Firecracker on x86_64 (must be an ELF vmlinux).
  * SendCtrlAltDel ends the VM and the process exits 0 (as Firecracker does with reboot=k);
    a guest reboot or power-off (QEMU exits) also exits 0. The API socket is not removed.

What is NOT real (honest list):
  * network interfaces are real: at InstanceStart (and snapshot load) each one's TAP is handed
    to QEMU (``-netdev tap,ifname=<host_dev_name>,script=no,downscript=no`` and a
    ``virtio-net-device`` with the guest_mac). Firecracker opens the TAP already at
    PUT /network-interfaces (and, holding CAP_NET_ADMIN, would create a missing one); the test
    VMM refuses a TAP that does not exist at InstanceStart instead, with Firecracker's message
    for a TAP it cannot open ("Could not create the network device: Open tap device failed:
    ..."; the os error, ENODEV here, is this double's choice).
  * pmem, balloon, memory hot-plug, cpu-config and MMDS are validated and recorded (and shown
    by GET /vm/config) but give the guest no device.
  * vsock is real: the guest gets a virtio-vsock device (QEMU's ``vhost-user-vsock-device``,
    guest RAM shared through ``memory-backend-memfd``) whose vhost-user back end is this
    process (section "vsock device"), with Firecracker's hybrid host side: uds_path is bound at
    PUT /vsock; from InstanceStart ``CONNECT <port>\n`` answers ``OK <host port>\n`` (ports
    from 2^30) and becomes a byte stream to the guest's AF_VSOCK listener (no listener: the
    stream just closes); a guest connection to CID 2 port P reaches ``<uds_path>_P`` (none:
    RST). Host connections made before the guest driver is up wait, as in Firecracker; a guest
    kernel without vsock never answers them.
  * post-boot hot-plug with --enable-pci is accepted and recorded only.
  * a refused PUT /snapshot/load (a vsock_override for a snapshot without vsock, files it
    cannot open ...) answers Firecracker's 400, but the process stays up; Firecracker exits.
  * under TCG the kernel command line gets ``tsc_early_khz=<host rate>`` appended (after
    Firecracker's own ``root=... rw pci=off``): without it a busy host makes the guest's
    timer calibration fail and the boot hang. KVM would tell the guest the rate itself.
  * snapshots: the "mem file" is QEMU's migration stream (RAM + device state, written with
    QMP ``migrate`` to ``exec:cat``), not a raw image of guest memory, so its size is not the
    guest memory size; the "state file" is a JSON description of the configuration. Loading
    starts QEMU with ``-incoming`` from that stream, so a restore really resumes the guest.
    EXCEPT with a vsock device: QEMU refuses to migrate vhost-user-vsock, so a snapshot of a
    vsock guest saves no memory (the mem file holds one line saying so) and loading it
    COLD-BOOTS the guest from the snapshot's kernel, boot args and disks (paused first, like any
    restore, until resumed). Both the create and the load log a warning that says so. Processes
    and shell state of the original are gone; what it had written to its disks stays. (On a
    real Firecracker restore the vsock connections are reset too; only memory is lost here.)

Environment:
  FC_TEST_VMM_QEMU       QEMU binary (default: qemu-system-x86_64 on PATH)
  FC_TEST_VMM_ACCEL      QEMU accelerator (default: tcg; this project's test hosts cannot boot
                         guests with kvm)
  FC_TEST_VMM_QEMU_ARGS  extra QEMU arguments appended to the command, split like a shell
                         would (e.g. "-cpu max")
"""

from __future__ import annotations

import array
import collections
import ctypes
import functools
import json
import mmap
import os
import queue
import re
import select
import shlex
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

VERSION = "1.16.1"
DEFAULT_API_SOCK = "/run/firecracker.socket"
DEFAULT_INSTANCE_ID = "anonymous-instance"
DEFAULT_PAYLOAD_LIMIT = 51200
DEFAULT_BOOT_ARGS = (
    "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd "
    "swiotlb=noforce"
)
EXIT_OK, EXIT_GENERIC, EXIT_BAD_CONFIG, EXIT_ARG_PARSING = 0, 1, 152, 153

NOT_PRE_BOOT = "The requested operation is not supported before starting the microVM."
NOT_POST_BOOT = "The requested operation is not supported after starting the microVM."
KERNEL_LOADER = (
    "Cannot load kernel due to invalid memory configuration or invalid kernel image: "
    "Kernel Loader: failed to load ELF kernel image"
)


class ApiError(Exception):
    """A request failure: answered with ``{"fault_message": message}`` (or ``error``)."""

    def __init__(self, message: str, status: int = 400, key: str = "fault_message") -> None:
        super().__init__(message)
        self.message, self.status, self.key = message, status, key


# --------------------------------------------------------------------------- logging/metrics

LEVELS = {"off": 0, "error": 1, "warning": 2, "info": 3, "debug": 4, "trace": 5}


def open_nonblock(path: str) -> int:
    """Open a log/metrics/serial target like Firecracker: create, read-write, non-blocking."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_APPEND, 0o644)


class Logger:
    """Firecracker-style log lines: ``<time> [<id>:<thread>(:LEVEL)] message``."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.fd = 1
        self.level = LEVELS["info"]
        self.show_level = False
        self.show_origin = False
        self.lock = threading.Lock()

    def configure(self, log_path: str | None, level: str | None, show_level: bool | None,
                  show_origin: bool | None) -> None:
        if log_path is not None:
            fd = open_nonblock(log_path)
            if self.fd != 1:
                os.close(self.fd)
            self.fd = fd
        if level is not None:
            self.level = LEVELS[level.lower()]
        if show_level is not None:
            self.show_level = show_level
        if show_origin is not None:
            self.show_origin = show_origin

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] > self.level:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        stamp += ".%09d" % int((now % 1) * 1e9)
        thread = threading.current_thread().name
        tag = f"{self.instance_id}:{thread}"
        if self.show_level:
            tag += ":" + level.upper()
        if self.show_origin:
            tag += ":tests/doubles/firecracker_vmm.py:0"
        line = f"{stamp} [{tag}] {message}\n".encode()
        with self.lock:
            try:
                os.write(self.fd, line)
            except OSError:
                pass  # a full FIFO or a closed reader loses the line, as in Firecracker

    def error(self, m: str) -> None:
        self.log("error", m)

    def warn(self, m: str) -> None:
        self.log("warning", m)

    def info(self, m: str) -> None:
        self.log("info", m)

    def debug(self, m: str) -> None:
        self.log("debug", m)


class Metrics:
    """One JSON object per flush (on FlushMetrics, every 60 s, and at exit)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.counts: dict[str, dict[str, int]] = {"get": {}, "put": {}, "patch": {}}
        self.api_fails = 0
        self.last_flush = time.monotonic()

    def count(self, method: str, path: str, failed: bool) -> None:
        table = self.counts.get(method.lower())
        if table is not None:
            key = (path.strip("/").split("/")[0] or "instance_info").replace("-", "_") + "_count"
            table[key] = table.get(key, 0) + 1
        self.api_fails += failed

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if self.fd is None:
            return
        line = {
            "utc_timestamp_ms": int(time.time() * 1000),
            "api_server": {"sync_response_fails": self.api_fails},
            "get_api_requests": self.counts["get"],
            "put_api_requests": self.counts["put"],
            "patch_api_requests": self.counts["patch"],
        }
        try:
            os.write(self.fd, (json.dumps(line) + "\n").encode())
        except OSError:
            pass


# --------------------------------------------------------------------------- body validation


def describe(value: Any) -> str:
    """How serde names an unexpected JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    return "map" if isinstance(value, dict) else "sequence"


UINT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64, "usize": 64, "i32": 31, "i64": 63}

# A field spec is (kind, required). Kinds: "str", "bool", "any", an unsigned name from UINT_BITS,
# ("enum", values), ("struct", name), ("list", kind).
TOKEN_BUCKET = {"size": ("u64", True), "one_time_burst": ("u64", False),
                "refill_time": ("u64", True)}
RATE_LIMITER = {"bandwidth": (("struct", "TokenBucket"), False),
                "ops": (("struct", "TokenBucket"), False)}
CPU_TEMPLATES = ("C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None")
SCHEMAS: dict[str, dict[str, tuple[Any, bool]]] = {
    "TokenBucket": TOKEN_BUCKET,
    "RateLimiterConfig": RATE_LIMITER,
    "ActionBody": {"action_type": (("enum", ("FlushMetrics", "InstanceStart",
                                              "SendCtrlAltDel")), True)},
    "MachineConfig": {"vcpu_count": ("u8", True), "mem_size_mib": ("usize", True),
                      "smt": ("bool", False), "cpu_template": (("enum", CPU_TEMPLATES), False),
                      "track_dirty_pages": ("bool", False),
                      "huge_pages": (("enum", ("None", "2M")), False)},
    "BootSourceConfig": {"kernel_image_path": ("str", True), "initrd_path": ("str", False),
                         "boot_args": ("str", False)},
    "BlockDeviceConfig": {"drive_id": ("str", True), "partuuid": ("str", False),
                          "is_root_device": ("bool", True),
                          "cache_type": (("enum", ("Unsafe", "Writeback")), False),
                          "is_read_only": ("bool", False), "path_on_host": ("str", False),
                          "rate_limiter": (("struct", "RateLimiterConfig"), False),
                          "io_engine": (("enum", ("Sync", "Async")), False),
                          "socket": ("str", False)},
    "BlockDeviceUpdateConfig": {"drive_id": ("str", True), "path_on_host": ("str", False),
                                "rate_limiter": (("struct", "RateLimiterConfig"), False)},
    "NetworkInterfaceConfig": {"iface_id": ("str", True), "host_dev_name": ("str", True),
                               "guest_mac": ("str", False), "mtu": ("u16", False),
                               "rx_rate_limiter": (("struct", "RateLimiterConfig"), False),
                               "tx_rate_limiter": (("struct", "RateLimiterConfig"), False)},
    "NetworkInterfaceUpdateConfig": {
        "iface_id": ("str", True),
        "rx_rate_limiter": (("struct", "RateLimiterConfig"), False),
        "tx_rate_limiter": (("struct", "RateLimiterConfig"), False)},
    "PmemConfig": {"id": ("str", True), "path_on_host": ("str", True),
                   "root_device": ("bool", False), "read_only": ("bool", False),
                   "rate_limiter": (("struct", "RateLimiterConfig"), False)},
    "PmemUpdateConfig": {"id": ("str", True),
                         "rate_limiter": (("struct", "RateLimiterConfig"), False)},
    "VsockDeviceConfig": {"vsock_id": ("str", False), "guest_cid": ("u32", True),
                          "uds_path": ("str", True)},
    "EntropyDeviceConfig": {"rate_limiter": (("struct", "RateLimiterConfig"), False)},
    "SerialConfig": {"serial_out_path": ("str", False),
                     "rate_limiter": (("struct", "TokenBucket"), False)},
    "LoggerConfig": {"log_path": ("str", False), "level": ("str", False),
                     "show_level": ("bool", False), "show_log_origin": ("bool", False),
                     "module": ("str", False)},
    "MetricsConfig": {"metrics_path": ("str", True)},
    "MmdsConfig": {"version": (("enum", ("V1", "V2")), False),
                   "network_interfaces": (("list", "str"), True),
                   "ipv4_address": ("str", False), "imds_compat": ("bool", False)},
    "BalloonDeviceConfig": {"amount_mib": ("u32", True), "deflate_on_oom": ("bool", True),
                            "stats_polling_interval_s": ("u16", False),
                            "free_page_hinting": ("bool", False),
                            "free_page_reporting": ("bool", False)},
    "BalloonUpdateConfig": {"amount_mib": ("u32", True)},
    "BalloonUpdateStatsConfig": {"stats_polling_interval_s": ("u16", True)},
    "StartHintingCmd": {"acknowledge_on_stop": ("bool", False)},
    "MemoryHotplugConfig": {"total_size_mib": ("usize", False),
                            "slot_size_mib": ("usize", False),
                            "block_size_mib": ("usize", False)},
    "MemoryHotplugSizeUpdate": {"requested_size_mib": ("usize", False)},
    "Vm": {"state": (("enum", ("Paused", "Resumed")), True)},
    "CreateSnapshotParams": {"snapshot_type": (("enum", ("Full", "Diff")), False),
                             "snapshot_path": ("str", True), "mem_file_path": ("str", True)},
    "LoadSnapshotConfig": {"snapshot_path": ("str", True), "mem_file_path": ("str", False),
                           "mem_backend": (("struct", "MemBackendConfig"), False),
                           "enable_diff_snapshots": ("bool", False),
                           "track_dirty_pages": ("bool", False), "resume_vm": ("bool", False),
                           "network_overrides": (("list", ("struct", "NetworkOverride")), False),
                           "vsock_override": (("struct", "VsockOverride"), False),
                           "clock_realtime": ("bool", False)},
    "MemBackendConfig": {"backend_type": (("enum", ("File", "Uffd")), True),
                         "backend_path": ("str", True)},
    "NetworkOverride": {"iface_id": ("str", True), "host_dev_name": ("str", True)},
    "VsockOverride": {"uds_path": ("str", True)},
    "CustomCpuTemplate": {"kvm_capabilities": (("list", "str"), False),
                          "cpuid_modifiers": (("list", "any"), False),
                          "msr_modifiers": (("list", "any"), False),
                          "reg_modifiers": (("list", "any"), False),
                          "vcpu_features": (("list", "any"), False)},
}
SCHEMAS["MachineConfigUpdate"] = {k: (kind, False) for k, (kind, _) in SCHEMAS["MachineConfig"].items()}
CONFIG_FILE_SECTIONS: dict[str, Any] = {
    key: ("list", ("struct", name)) if key in ("drives", "network-interfaces", "pmem")
    else ("struct", name)
    for key, name in {
        "balloon": "BalloonDeviceConfig", "drives": "BlockDeviceConfig",
        "boot-source": "BootSourceConfig", "cpu-config": "CustomCpuTemplate",
        "logger": "LoggerConfig", "machine-config": "MachineConfig", "metrics": "MetricsConfig",
        "mmds-config": "MmdsConfig", "network-interfaces": "NetworkInterfaceConfig",
        "vsock": "VsockDeviceConfig", "entropy": "EntropyDeviceConfig", "pmem": "PmemConfig",
        "memory-hotplug": "MemoryHotplugConfig",
    }.items()
}


def check_value(value: Any, kind: Any) -> Any:
    """Validate one JSON value against a kind; raise ValueError with serde's wording."""
    if kind == "any":
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"invalid type: {describe(value)}, expected a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"invalid type: {describe(value)}, expected a boolean")
        return value
    if kind in UINT_BITS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"invalid type: {describe(value)}, expected {kind}")
        if value < 0 or value >= 2 ** UINT_BITS[kind]:
            raise ValueError(f"invalid value: {describe(value)}, expected {kind}")
        return value
    if kind[0] == "enum":
        if not isinstance(value, str):
            raise ValueError(f"invalid type: {describe(value)}, expected string or map")
        if value not in kind[1]:
            options = ", ".join(f"`{v}`" for v in kind[1])
            raise ValueError(f"unknown variant `{value}`, expected one of {options}")
        return value
    if kind[0] == "list":
        if not isinstance(value, list):
            raise ValueError(f"invalid type: {describe(value)}, expected a sequence")
        return [check_value(item, kind[1]) for item in value]
    return check_struct(value, kind[1])


def check_struct(value: Any, name: str) -> dict[str, Any]:
    """Validate a JSON object against SCHEMAS[name] (serde's deny_unknown_fields)."""
    schema = SCHEMAS[name]
    if not isinstance(value, dict):
        raise ValueError(f"invalid type: {describe(value)}, expected struct {name}")
    for key in value:
        if key not in schema:
            options = ", ".join(f"`{k}`" for k in schema)
            raise ValueError(f"unknown field `{key}`, expected one of {options}")
    out: dict[str, Any] = {}
    for key, (kind, required) in schema.items():
        if key not in value:
            if required:
                raise ValueError(f"missing field `{key}`")
            continue
        if value[key] is None and not required:
            continue
        out[key] = check_value(value[key], kind)
    return out


def serde_error(text: str, message: str, at: int | None = None) -> ApiError:
    """Wrap a deserialisation failure the way Firecracker's API reports it."""
    at = len(text.rstrip()) if at is None else at
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1)
    return ApiError("An error occurred when deserializing the json body of a request: "
                    f"{message} at line {line} column {column}.")


def parse_json(body: bytes) -> tuple[Any, str]:
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        wording = {"Expecting value": "expected value", "Extra data": "trailing characters"}
        message = wording.get(exc.msg, exc.msg[:1].lower() + exc.msg[1:])
        if exc.pos >= len(text.rstrip()):
            message = "EOF while parsing a value"
        raise serde_error(text, message, exc.pos + 1) from None


def parse_struct(body: bytes, name: str) -> dict[str, Any]:
    value, text = parse_json(body)
    try:
        return check_struct(value, name)
    except ValueError as exc:
        key = re.search(r"`([^`]*)`", str(exc))
        at = None
        if key and f'"{key.group(1)}"' in text and not str(exc).startswith("missing"):
            at = text.index(f'"{key.group(1)}"') + len(key.group(1)) + 2
        raise serde_error(text, str(exc), at) from None


def checked_id(token: str | None) -> str:
    if not token:
        raise ApiError("The ID cannot be empty.")
    if not all(c == "_" or c.isalnum() for c in token):
        raise ApiError("API Resource IDs can only contain alphanumeric characters and "
                       "underscores.")
    return token


# --------------------------------------------------------------------------- request parsing


class Parsed:
    """A parsed API request: the VMM action to run and whether it used deprecated fields."""

    def __init__(self, action: str, payload: Any = None, deprecated: str | None = None) -> None:
        self.action, self.payload, self.deprecated = action, payload, deprecated


def parse_request(method: str, path: str, body: bytes | None) -> Parsed:
    """Turn (method, path, body) into an action, or raise ApiError as Firecracker's parser."""
    tokens = [t for t in path.split("?")[0].lstrip("/").split("/")]
    if tokens and tokens[-1] == "":
        tokens.pop()
    first = tokens[0] if tokens else ""
    sub = tokens[1] if len(tokens) > 1 else None
    third = tokens[2] if len(tokens) > 2 else None
    if method == "GET" and body is None:
        simple = {"": "describe_instance", "version": "version",
                  "machine-config": "get_machine_config", "mmds": "get_mmds"}
        if first in simple:
            return Parsed(simple[first])
        if first == "balloon":
            if sub is None:
                return Parsed("get_balloon")
            if sub == "statistics":
                return Parsed("get_balloon_stats")
            if sub == "hinting" and third == "status":
                return Parsed("get_hinting_status")
            raise ApiError(f"Invalid request method and/or path: GET /balloon/{sub}.")
        if first == "vm" and sub == "config":
            return Parsed("get_vm_config")
        if first == "hotplug" and sub == "memory":
            return Parsed("get_memory_hotplug")
    elif method == "GET":
        raise ApiError("GET request cannot have a body.")
    if method == "PUT" and body is not None:
        return parse_put(first, sub, body)
    if method == "PUT":
        raise ApiError("Empty PUT request.")
    if method == "PATCH" and first == "balloon":
        return parse_patch_balloon(sub, third, body)
    if method == "PATCH" and body is not None:
        parsed = parse_patch(first, sub, body)
        if parsed is not None:
            return parsed
    elif method == "PATCH":
        raise ApiError("Empty PATCH request.")
    if method == "DELETE" and first in ("drives", "network-interfaces", "pmem"):
        return Parsed("hot_unplug", (first, checked_id(sub)))
    raise ApiError(f"Invalid request method and/or path: {method} {first}.")


def parse_put(first: str, sub: str | None, body: bytes) -> Parsed:
    plain = {"actions": ("action", "ActionBody"), "balloon": ("put_balloon", "BalloonDeviceConfig"),
             "boot-source": ("put_boot_source", "BootSourceConfig"),
             "cpu-config": ("put_cpu_config", "CustomCpuTemplate"),
             "logger": ("put_logger", "LoggerConfig"), "serial": ("put_serial", "SerialConfig"),
             "machine-config": ("put_machine_config", "MachineConfig"),
             "metrics": ("put_metrics", "MetricsConfig"),
             "entropy": ("put_entropy", "EntropyDeviceConfig")}
    if first in plain:
        action, schema = plain[first]
        return Parsed(action, parse_struct(body, schema))
    if first in ("drives", "network-interfaces", "pmem"):
        id_ = checked_id(sub)
        schema, key, action = {
            "drives": ("BlockDeviceConfig", "drive_id", "put_drive"),
            "network-interfaces": ("NetworkInterfaceConfig", "iface_id", "put_net"),
            "pmem": ("PmemConfig", "id", "put_pmem")}[first]
        cfg = parse_struct(body, schema)
        if cfg[key] != id_:
            raise ApiError("The id from the path does not match the id from the body!")
        return Parsed(action, cfg)
    if first == "mmds":
        if sub is None:
            return Parsed("put_mmds", parse_json(body)[0])
        if sub == "config":
            return Parsed("put_mmds_config", parse_struct(body, "MmdsConfig"))
        raise ApiError(f"Invalid request method and/or path: PUT /mmds/{sub}.")
    if first == "snapshot":
        if sub == "create":
            return Parsed("create_snapshot", parse_struct(body, "CreateSnapshotParams"))
        if sub == "load":
            cfg = parse_struct(body, "LoadSnapshotConfig")
            if ("mem_file_path" in cfg) == ("mem_backend" in cfg):
                raise ApiError("Either the mem_backend or mem_file_path field must be "
                               "present, but not both.")
            deprecated = None
            if "mem_file_path" in cfg or "enable_diff_snapshots" in cfg:
                deprecated = "PUT /snapshot/load: deprecated fields used."
                cfg.setdefault("mem_backend", {"backend_type": "File",
                                               "backend_path": cfg.get("mem_file_path")})
            return Parsed("load_snapshot", cfg, deprecated)
        if sub is None:
            raise ApiError("Missing snapshot operation type.")
        raise ApiError(f"Invalid request method and/or path: PUT /snapshot/{sub}.")
    if first == "vsock":
        cfg = parse_struct(body, "VsockDeviceConfig")
        deprecated = "PUT /vsock: vsock_id field is deprecated." if "vsock_id" in cfg else None
        return Parsed("put_vsock", cfg, deprecated)
    if first == "hotplug" and sub == "memory":
        return Parsed("put_memory_hotplug", parse_struct(body, "MemoryHotplugConfig"))
    raise ApiError(f"Invalid request method and/or path: PUT {first}.")


def parse_patch(first: str, sub: str | None, body: bytes) -> Parsed | None:
    if first == "drives":
        cfg = parse_struct(body, "BlockDeviceUpdateConfig")
        if cfg["drive_id"] != checked_id(sub):
            raise ApiError("The id from the path does not match the id from the body!")
        return Parsed("patch_drive", cfg)
    if first == "network-interfaces":
        cfg = parse_struct(body, "NetworkInterfaceUpdateConfig")
        if cfg["iface_id"] != checked_id(sub):
            raise ApiError("The id from the path does not match the id from the body!")
        return Parsed("patch_net", cfg)
    if first == "machine-config":
        cfg = parse_struct(body, "MachineConfigUpdate")
        if not cfg:
            raise ApiError("Empty PATCH request.")
        return Parsed("patch_machine_config", cfg)
    if first == "mmds":
        return Parsed("patch_mmds", parse_json(body)[0])
    if first == "vm":
        return Parsed("patch_vm", parse_struct(body, "Vm"))
    if first == "hotplug" and sub == "memory":
        return Parsed("patch_memory_hotplug", parse_struct(body, "MemoryHotplugSizeUpdate"))
    return None


def parse_patch_balloon(sub: str | None, third: str | None, body: bytes | None) -> Parsed:
    if sub == "hinting" and third == "start":
        cfg = parse_struct(body, "StartHintingCmd") if body is not None else {}
        return Parsed("start_hinting", cfg)
    if sub == "hinting" and third == "stop":
        return Parsed("stop_hinting")
    if body is None:
        raise ApiError("Empty PATCH request.")
    if sub is None:
        return Parsed("patch_balloon", parse_struct(body, "BalloonUpdateConfig"))
    if sub == "statistics":
        return Parsed("patch_balloon_stats", parse_struct(body, "BalloonUpdateStatsConfig"))
    raise ApiError(f"Invalid request method and/or path: PATCH /balloon/{sub}.")


# --------------------------------------------------------------------------- QEMU control


class Qmp:
    """A minimal QMP client on QEMU's control socket (used from the VMM thread only)."""

    def __init__(self, path: str, qemu: subprocess.Popen, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if qemu.poll() is not None:
                raise ApiError(f"Internal error while starting microVM: QEMU exited with "
                               f"status {qemu.returncode} (see the VMM's stderr)")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise ApiError("Internal error while starting microVM: QEMU's control "
                                   "socket did not appear") from None
                time.sleep(0.05)
        self.reader = self.sock.makefile("rb")
        self.reader.readline()  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            line = self.reader.readline()
            if not line:
                raise ApiError(f"Internal error: QEMU closed its control socket during "
                               f"{command}")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise ApiError(f"Internal error: QEMU {command}: {reply['error'].get('desc')}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def parent_death_signal(parent: int) -> Callable[[], None]:
    """A preexec_fn for QEMU: die with SIGKILL when the VMM dies, even if it already has."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork

    def arm() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arm


def qemu_value(text: str) -> str:
    return text.replace(",", ",,")


def is_elf_vmlinux(path: str) -> bool:
    with open(path, "rb") as kernel:
        head = kernel.read(64)
    # ELF magic, 64-bit class, little-endian: what linux-loader's ELF loader accepts.
    return len(head) == 64 and head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1


def make_workdir() -> str:
    """A private temp dir named for this pid; those of dead (killed) VMMs are swept first."""
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        match = re.fullmatch(r"fcvmm-(\d+)-\w+", name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"fcvmm-{os.getpid()}-")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def accel() -> str:
    return os.environ.get("FC_TEST_VMM_ACCEL", "tcg")


def host_tsc_khz() -> int | None:
    """The host's TSC rate in kHz (from /proc/cpuinfo), or None if unknown."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo.read(), re.M)
    except OSError:
        return None
    return int(float(match.group(1)) * 1000) if match else None


def os_error_text(exc: OSError) -> str:
    return f"{exc.strerror} (os error {exc.errno})"


class VsockListener:
    """The host side's listening Unix socket at uds_path, bound when PUT /vsock is handled.

    It only listens: connections wait in its backlog until a device serves them (from
    InstanceStart on), as with Firecracker, whose vsock device polls nothing before the guest
    driver activates it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
        except OSError as exc:
            self.sock.close()
            raise ApiError("Cannot create backend for vsock device: UnixBind(Os { code: "
                           f'{exc.errno}, message: "{exc.strerror}" }})') from None
        self.sock.listen(128)
        self.sock.setblocking(False)

    def close(self, unlink: bool) -> None:
        self.sock.close()
        if unlink:
            try:
                os.unlink(self.path)
            except OSError:
                pass


# --------------------------------------------------------------------------- vsock device
#
# The guest gets QEMU's vhost-user-vsock-device; this process is its vhost-user back end
# (docs/interop/vhost-user.rst in QEMU) and speaks Firecracker's hybrid vsock on the host side
# (/work/shared/firecracker/README.md section 8). One thread runs one epoll loop over: the
# vhost-user socket (QEMU's control messages), the two kick eventfds (rx = queue 0, tx = 1;
# QEMU keeps the event queue), the uds_path listener, and every host-side Unix stream.
#
# What it mirrors from Firecracker's muxer and connection state machine:
#   * host -> guest: ``CONNECT <port>\n`` (case-insensitive, at most 32 bytes) on uds_path
#     becomes a REQUEST from CID 2, host port counting up from 2^30; the guest's RESPONSE
#     writes ``OK <host port>\n``; an RST (nothing listens) or no answer within 2 s closes the
#     stream. A malformed line closes it at once.
#   * guest -> host: a REQUEST to CID 2 port P connects to ``<uds_path>_P``; no listener -> RST.
#   * an EOF from the host stream (even a half-close) sends SHUTDOWN(both) and ends the
#     connection both ways (data still queued in the guest stays readable there); the guest's
#     SHUTDOWN(both) (its close()) closes the host stream once buffered data is written; a
#     guest half-close (SHUTDOWN send only) is not passed on, as in Firecracker.
#   * credit flow control both ways; a pause (rings stopped by GET_VRING_BASE) keeps every
#     connection, and the rings resume where they stopped.
# What differs: buf_alloc is 256 KiB (Firecracker: 64 KiB), for throughput under TCG; bytes a
# host client sends before ``OK`` are kept and delivered (Firecracker may reset such a
# connection); the 2 s timers do not run while the rings are stopped (a paused guest).

VHOST_USER_GET_FEATURES, VHOST_USER_SET_FEATURES, VHOST_USER_SET_OWNER = 1, 2, 3
VHOST_USER_RESET_OWNER, VHOST_USER_SET_MEM_TABLE = 4, 5
VHOST_USER_SET_VRING_NUM, VHOST_USER_SET_VRING_ADDR, VHOST_USER_SET_VRING_BASE = 8, 9, 10
VHOST_USER_GET_VRING_BASE, VHOST_USER_SET_VRING_KICK, VHOST_USER_SET_VRING_CALL = 11, 12, 13
VHOST_USER_SET_VRING_ERR, VHOST_USER_GET_PROTOCOL_FEATURES = 14, 15
VHOST_USER_SET_PROTOCOL_FEATURES, VHOST_USER_SET_VRING_ENABLE = 16, 18
VHOST_USER_GET_CONFIG, VHOST_USER_SET_CONFIG = 24, 25
VHOST_USER_VERSION, VHOST_USER_REPLY, VHOST_USER_NEED_REPLY = 0x1, 0x4, 0x8
VHOST_USER_VRING_NOFD = 0x100
VIRTIO_F_VERSION_1, VHOST_USER_F_PROTOCOL_FEATURES = 1 << 32, 1 << 30
VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC = 1 << 29, 1 << 28
VHOST_USER_PROTOCOL_F_REPLY_ACK, VHOST_USER_PROTOCOL_F_CONFIG = 1 << 3, 1 << 9
# QEMU passes the common ring features (event index, indirect descriptors) to the guest
# whatever a vsock back end offers, so this one implements both.
VSOCK_BACKEND_FEATURES = (VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES
                          | VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC)
VSOCK_PROTOCOL_FEATURES = VHOST_USER_PROTOCOL_F_REPLY_ACK | VHOST_USER_PROTOCOL_F_CONFIG
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT = 1, 2, 4
VRING_AVAIL_F_NO_INTERRUPT = 1

VSOCK_HDR = struct.Struct("<QQIIIHHIII")  # src_cid dst_cid src_port dst_port len type op flags buf_alloc fwd_cnt
VSOCK_HOST_CID, VSOCK_TYPE_STREAM = 2, 1
(VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RST, VSOCK_OP_SHUTDOWN, VSOCK_OP_RW,
 VSOCK_OP_CREDIT_UPDATE, VSOCK_OP_CREDIT_REQUEST) = range(1, 8)
VSOCK_SHUTDOWN_RCV, VSOCK_SHUTDOWN_SEND, VSOCK_SHUTDOWN_BOTH = 1, 2, 3
VSOCK_BUF_ALLOC = 256 * 1024  # what each connection tells the guest it may have in flight
VSOCK_CREDIT_UPDATE_AFTER = 64 * 1024  # forwarded bytes the guest has not heard about yet
VSOCK_TIMEOUT_S = 2.0  # Firecracker's CONN_REQUEST_TIMEOUT_MS and CONN_SHUTDOWN_TIMEOUT_MS
VSOCK_MAX_CONNECTIONS = 1023  # Firecracker's defs::MAX_CONNECTIONS
VSOCK_LOCAL_PORT_FIRST = 1 << 30
U32 = 0xFFFFFFFF


class VringError(Exception):
    """The guest (or QEMU) handed the device something it cannot use."""


def memory_barrier(lock: threading.Lock = threading.Lock()) -> None:
    """A full memory barrier: a lock round trip is an atomic read-modify-write in CPython."""
    lock.acquire()
    lock.release()


class GuestMemory:
    """Guest RAM as QEMU shares it (VHOST_USER_SET_MEM_TABLE): memfd regions mapped here."""

    def __init__(self) -> None:
        # (guest physical address, size, QEMU's virtual address, mapping, view of the region)
        self.regions: list[tuple[int, int, int, mmap.mmap, memoryview]] = []
        self.retired: list[mmap.mmap] = []

    def set_table(self, payload: bytes, fds: list[int]) -> None:
        self.release()
        try:
            (count,) = struct.unpack_from("<I", payload, 0)
            if count != len(fds):
                raise VringError(f"SET_MEM_TABLE: {count} regions but {len(fds)} fds")
            for i in range(count):
                gpa, size, uva, offset = struct.unpack_from("<QQQQ", payload, 8 + 32 * i)
                mapping = mmap.mmap(fds[i], size + offset, mmap.MAP_SHARED,
                                    mmap.PROT_READ | mmap.PROT_WRITE)
                self.regions.append((gpa, size, uva, mapping,
                                     memoryview(mapping)[offset:offset + size]))
        finally:
            for fd in fds:
                os.close(fd)

    def _find(self, address: int, length: int, by_user: bool) -> memoryview:
        for gpa, size, uva, _, view in self.regions:
            offset = address - (uva if by_user else gpa)
            if 0 <= offset and offset + length <= size:
                return view[offset:offset + length]
        kind = "QEMU address" if by_user else "guest address"
        raise VringError(f"{kind} {address:#x}+{length} is outside the shared memory")

    def guest(self, gpa: int, length: int) -> memoryview:
        """A view of guest-physical memory (descriptor addresses)."""
        return self._find(gpa, length, False)

    def user(self, uva: int, length: int) -> memoryview:
        """A view at one of QEMU's virtual addresses (the ring addresses of SET_VRING_ADDR)."""
        return self._find(uva, length, True)

    def release(self) -> None:
        for *_, mapping, view in self.regions:
            view.release()
            try:
                mapping.close()
            except BufferError:  # a view still exists somewhere: unmap it with the object
                self.retired.append(mapping)
        self.regions = []


class Virtqueue:
    """One split virtqueue as the device side sees it (VIRTIO 1.1 section 2.6).

    The rings are read and written only through typed views (``memoryview.cast``), never with
    ``struct.pack_into``: CPython's pack_into first zeroes its destination (``s_pack_internal``'s
    memset) and then stores a "<" value byte by byte, so a guest reading ``used->idx``
    concurrently can see 0 or a half-written index, take a ring's worth of stale slots for new
    used buffers and free buffers the device still fills ("id N is not a head", then slab
    corruption in the guest). An item of a ``cast("H")``/``cast("I")`` view is one aligned
    native load or store, which the guest sees whole.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.num = 0
        self.addrs: tuple[int, int, int] | None = None  # desc, used, avail (QEMU addresses)
        self.desc: memoryview | None = None
        self.avail: memoryview | None = None  # u16: flags, idx, ring[num], used_event
        self.used: memoryview | None = None  # bytes: flags, idx, ring[num] of (id, len), avail_event
        self.used16: memoryview | None = None  # the same, as u16
        self.used32: memoryview | None = None  # the used elements as u32: id, len, id, len ...
        self.last_avail = 0
        self.used_idx = 0
        self.signalled = 0
        self.kick_fd: int | None = None
        self.call_fd: int | None = None
        self.started = False
        self.enabled = False
        self.event_idx = False

    @property
    def ready(self) -> bool:
        return self.started and self.enabled and self.used is not None

    def map(self, memory: GuestMemory) -> None:
        """(Re)build the ring views; the used index continues from what the ring holds."""
        self.unmap()
        if self.addrs is None or not self.num:
            return
        desc, used, avail = self.addrs
        self.desc = memory.user(desc, 16 * self.num)
        self.avail = memory.user(avail, 6 + 2 * self.num).cast("H")
        self.used = memory.user(used, 6 + 8 * self.num)
        self.used16 = self.used.cast("H")
        self.used32 = self.used[4:4 + 8 * self.num].cast("I")
        self.used_idx = self.signalled = self.used16[1]

    def unmap(self) -> None:
        self.desc = self.avail = self.used = self.used16 = self.used32 = None

    def has_avail(self) -> bool:
        assert self.avail is not None
        return self.avail[1] != self.last_avail

    def peek(self, memory: GuestMemory) -> tuple[int, list[memoryview], list[memoryview]] | None:
        """The next available chain (head, readable views, writable views), not consumed."""
        assert self.avail is not None and self.desc is not None
        if self.avail[1] == self.last_avail:
            return None
        head = self.avail[2 + self.last_avail % self.num]
        readable: list[memoryview] = []
        writable: list[memoryview] = []
        table, size, index = self.desc, self.num, head
        for _ in range(2 * self.num + 2):
            if index >= size:
                raise VringError(f"queue {self.index}: descriptor {index} out of range")
            addr, length, flags, nxt = struct.unpack_from("<QIHH", table, 16 * index)
            if flags & VRING_DESC_F_INDIRECT:
                table, size, index = memory.guest(addr, length), length // 16, 0
                continue
            (writable if flags & VRING_DESC_F_WRITE else readable).append(
                memory.guest(addr, length))
            if not flags & VRING_DESC_F_NEXT:
                return head, readable, writable
            index = nxt
        raise VringError(f"queue {self.index}: descriptor chain loops")

    def next_chain(self, memory: GuestMemory) -> tuple[int, list[memoryview], list[memoryview]] | None:
        """:meth:`peek`, or None once the ring is empty and the driver will kick for more."""
        while True:
            chain = self.peek(memory)
            if chain is not None or not self.rearm():
                return chain

    def consume(self, head: int, written: int) -> None:
        """Give the chain at the front back to the driver with ``written`` bytes filled in."""
        assert self.used16 is not None and self.used32 is not None
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        slot = 2 * (self.used_idx % self.num)
        self.used32[slot] = head
        self.used32[slot + 1] = written
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.used16[1] = self.used_idx  # after the element: x86 keeps stores in order

    def rearm(self) -> bool:
        """Ask for a kick at the next buffer; True if more became available meanwhile."""
        assert self.used16 is not None
        if self.event_idx:
            self.used16[2 + 4 * self.num] = self.last_avail  # avail_event
        memory_barrier()
        return self.has_avail()

    def notify(self) -> None:
        """Interrupt the guest for the used buffers since the last call, if it wants that."""
        if self.used_idx == self.signalled or self.avail is None:
            return
        memory_barrier()  # the used index must be visible before the driver's flags are read
        if self.event_idx:
            event = self.avail[2 + self.num]  # used_event
            wanted = (self.used_idx - event - 1) & 0xFFFF < (self.used_idx - self.signalled) & 0xFFFF
        else:
            wanted = not self.avail[0] & VRING_AVAIL_F_NO_INTERRUPT
        self.signalled = self.used_idx
        if wanted and self.call_fd is not None:
            os.write(self.call_fd, b"\x01\0\0\0\0\0\0\0")


# Connection states (Firecracker's ConnState) and pending packets to the guest (PendingRx).
LOCAL_INIT, PEER_INIT, ESTABLISHED, LOCAL_CLOSED, PEER_CLOSED, KILLED = range(6)
P_RST, P_RESPONSE, P_REQUEST, P_RW, P_CREDIT_UPDATE = 1, 2, 4, 8, 16


class VsockConnection:
    """One stream between a guest AF_VSOCK socket and a host Unix socket."""

    def __init__(self, local_port: int, peer_port: int, stream: socket.socket, state: int,
                 pending: int) -> None:
        self.local_port, self.peer_port = local_port, peer_port
        self.stream, self.fd = stream, stream.fileno()
        self.state, self.pending = state, pending
        self.peer_shutdown = 0
        self.early = b""  # host bytes that followed the CONNECT line
        self.tx_buf = bytearray()  # guest bytes the host stream has not taken yet
        self.fwd_cnt = 0  # bytes written to the host stream
        self.fwd_cnt_told = 0  # fwd_cnt as the guest last heard it
        self.rx_cnt = 0  # bytes sent to the guest
        self.peer_buf_alloc = 0
        self.peer_fwd_cnt = 0
        self.expiry: float | None = None
        self.events = 0  # epoll mask registered for the stream (0: not registered)
        self.in_rxq = False
        self.credit_wait = False
        self.removed = False

    @property
    def key(self) -> tuple[int, int]:
        return self.local_port, self.peer_port

    def peer_credit(self) -> int:
        return (self.peer_buf_alloc - (self.rx_cnt - self.peer_fwd_cnt)) & U32

    def readable_state(self) -> bool:
        """May bytes move host -> guest now?"""
        return self.state == ESTABLISHED or (
            self.state == PEER_CLOSED and not self.peer_shutdown & VSOCK_SHUTDOWN_RCV)


def split_views(views: list[memoryview], at: int) -> tuple[list[memoryview], list[memoryview]]:
    """Split a scatter list after ``at`` bytes."""
    head: list[memoryview] = []
    rest: list[memoryview] = []
    for view in views:
        if at <= 0:
            rest.append(view)
        elif at >= len(view):
            head.append(view)
            at -= len(view)
        else:
            head.append(view[:at])
            rest.append(view[at:])
            at = 0
    return head, rest


def scatter(data: bytes, views: list[memoryview]) -> None:
    pos = 0
    for view in views:
        part = data[pos:pos + len(view)]
        view[:len(part)] = part
        pos += len(part)


class VsockDevice:
    """The vhost-user back end of one guest's vsock device, with Firecracker's host side.

    ``start()`` binds the vhost-user socket QEMU connects to (it must listen before QEMU
    starts) and runs the device thread; ``close()`` stops it, closing every host stream.
    The uds_path listener stays the caller's (it outlives a device, e.g. across a restore).
    """

    def __init__(self, guest_cid: int, listener: VsockListener, vhost_path: str,
                 logger: Logger) -> None:
        self.cid, self.listener, self.uds_path = guest_cid, listener.sock, listener.path
        self.vhost_path, self.logger = vhost_path, logger
        self.memory = GuestMemory()
        self.rx, self.tx = Virtqueue(0), Virtqueue(1)
        self.features = 0
        self.protocol_features = 0
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.conns: dict[tuple[int, int], VsockConnection] = {}
        self.by_fd: dict[int, VsockConnection] = {}
        self.connecting: dict[int, tuple[socket.socket, bytearray]] = {}
        self.rxq: collections.deque[VsockConnection | tuple[int, int]] = collections.deque()
        self.local_ports: set[int] = set()
        self.last_local_port = VSOCK_LOCAL_PORT_FIRST - 1
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.vhost: socket.socket | None = None
        self.wake_r, self.wake_w = os.pipe()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="fc_vsock", daemon=True)

    # ---- life cycle

    def start(self) -> None:
        self.server.bind(self.vhost_path)
        self.server.listen(1)
        self._watch(self.server.fileno(), select.EPOLLIN, self._on_vhost_accept)
        self._watch(self.listener.fileno(), select.EPOLLIN, self._on_host_accept)
        self._watch(self.wake_r, select.EPOLLIN, lambda _: None)
        self.thread.start()

    def close(self) -> None:
        self.closing = True
        os.write(self.wake_w, b"x")
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5)
        for conn in list(self.conns.values()):
            conn.stream.close()
        for stream, _ in self.connecting.values():
            stream.close()
        if self.vhost is not None:
            self.vhost.close()
        for vq in (self.rx, self.tx):
            for fd in (vq.kick_fd, vq.call_fd):
                if fd is not None:
                    os.close(fd)
            vq.unmap()
        self.memory.release()
        self.server.close()
        self.epoll.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _watch(self, fd: int, mask: int, handler: Callable[[int], None]) -> None:
        self.epoll.register(fd, mask)
        self.handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.epoll.unregister(fd)

    def _run(self) -> None:
        failures = 0
        while not self.closing:
            try:
                for fd, mask in self.epoll.poll(self._poll_timeout()):
                    handler = self.handlers.get(fd)
                    if handler is not None:
                        handler(mask)
                self._expire()
                self._process_tx()
                self._process_rx()
                failures = 0
            except Exception as exc:  # a bug in the double: say so, keep the device alive
                failures += 1
                self.logger.error(f"vsock: device error: {exc!r}")
                if failures > 100:
                    self.logger.error("vsock: too many errors in a row; the device stops")
                    return

    def _poll_timeout(self) -> float | None:
        expiries = [c.expiry for c in self.conns.values() if c.expiry is not None]
        if not expiries or not self.rx.ready:
            return None
        return max(0.0, min(expiries) - time.monotonic())

    # ---- vhost-user control channel

    def _on_vhost_accept(self, _: int) -> None:
        conn, _ = self.server.accept()
        if self.vhost is not None:
            self._vhost_gone()
        self.vhost = conn
        self._watch(conn.fileno(), select.EPOLLIN, self._on_vhost_message)

    def _vhost_gone(self) -> None:
        assert self.vhost is not None
        self._unwatch(self.vhost.fileno())
        self.vhost.close()
        self.vhost = None
        for vq in (self.rx, self.tx):
            self._stop_ring(vq)
        for conn in list(self.conns.values()):
            self._remove(conn)

    def _recv_exact(self, size: int) -> bytes:
        assert self.vhost is not None
        data = b""
        while len(data) < size:
            chunk = self.vhost.recv(size - len(data))
            if not chunk:
                raise ConnectionResetError("QEMU closed the vhost-user socket")
            data += chunk
        return data

    def _on_vhost_message(self, _: int) -> None:
        assert self.vhost is not None
        try:
            head, ancillary, _, _ = self.vhost.recvmsg(12, socket.CMSG_SPACE(8 * 4))
            fds: list[int] = []
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", data[:len(data) - len(data) % 4]).tolist()
            if len(head) < 12:
                raise ConnectionResetError("QEMU closed the vhost-user socket")
            request, flags, size = struct.unpack("<III", head)
            payload = self._recv_exact(size) if size else b""
        except OSError:
            self._vhost_gone()
            return
        try:
            reply = self._vhost_request(request, payload, fds)
            status = 0
        except (VringError, struct.error, OSError, ValueError) as exc:
            self.logger.error(f"vsock: vhost-user request {request} failed: {exc}")
            reply, status = None, 1
        if reply is None and flags & VHOST_USER_NEED_REPLY and (
                self.protocol_features & VHOST_USER_PROTOCOL_F_REPLY_ACK):
            reply = struct.pack("<Q", status)
        if reply is not None:
            self.vhost.sendall(struct.pack("<III", request, VHOST_USER_VERSION | VHOST_USER_REPLY,
                                           len(reply)) + reply)

    def _vhost_request(self, request: int, payload: bytes, fds: list[int]) -> bytes | None:
        """Apply one front-end message; return the reply payload if the message has one."""
        if request == VHOST_USER_GET_FEATURES:
            return struct.pack("<Q", VSOCK_BACKEND_FEATURES)
        if request == VHOST_USER_SET_FEATURES:
            (self.features,) = struct.unpack_from("<Q", payload)
            for each in (self.rx, self.tx):
                each.event_idx = bool(self.features & VIRTIO_RING_F_EVENT_IDX)
            return None
        if request == VHOST_USER_GET_PROTOCOL_FEATURES:
            return struct.pack("<Q", VSOCK_PROTOCOL_FEATURES)
        if request == VHOST_USER_SET_PROTOCOL_FEATURES:
            (self.protocol_features,) = struct.unpack_from("<Q", payload)
            return None
        if request in (VHOST_USER_SET_OWNER, VHOST_USER_RESET_OWNER):
            return None
        if request == VHOST_USER_SET_MEM_TABLE:
            for each in (self.rx, self.tx):
                each.unmap()
            self.memory.set_table(payload, fds)
            self.logger.debug("vsock: guest memory " + ", ".join(
                f"{gpa:#x}+{size:#x} at {uva:#x}" for gpa, size, uva, *_ in self.memory.regions))
            for each in (self.rx, self.tx):
                each.map(self.memory)
            return None
        if request == VHOST_USER_GET_CONFIG:
            offset, size, flags = struct.unpack_from("<III", payload)
            config = struct.pack("<Q", self.cid).ljust(offset + size, b"\0")
            return struct.pack("<III", offset, size, flags) + config[offset:offset + size]
        if request == VHOST_USER_SET_CONFIG:
            return None  # the guest CID is read-only
        if request in (VHOST_USER_SET_VRING_KICK, VHOST_USER_SET_VRING_CALL,
                       VHOST_USER_SET_VRING_ERR):
            (value,) = struct.unpack_from("<Q", payload)
            fd = None if value & VHOST_USER_VRING_NOFD or not fds else fds[0]
            ring = self._ring(value & 0xFF)
            if ring is None or request == VHOST_USER_SET_VRING_ERR:
                if fd is not None:
                    os.close(fd)
                return None
            if request == VHOST_USER_SET_VRING_CALL:
                if ring.call_fd is not None:
                    os.close(ring.call_fd)
                ring.call_fd = fd
                return None
            self._stop_ring(ring)
            ring.kick_fd = fd
            if fd is not None:
                os.set_blocking(fd, False)
                self._watch(fd, select.EPOLLIN, functools.partial(self._on_kick, fd))
            ring.started = True
            self.logger.debug(f"vsock: queue {ring.index} started")
            return None
        index, num = struct.unpack_from("<II", payload) if len(payload) >= 8 else (0, 0)
        ring = self._ring(index)
        if request == VHOST_USER_SET_VRING_NUM and ring is not None:
            ring.num = num
        elif request == VHOST_USER_SET_VRING_BASE and ring is not None:
            ring.last_avail = num & 0xFFFF
        elif request == VHOST_USER_SET_VRING_ADDR and ring is not None:
            _, _, desc, used, avail, _ = struct.unpack_from("<IIQQQQ", payload)
            ring.addrs = (desc, used, avail)
            ring.map(self.memory)
        elif request == VHOST_USER_GET_VRING_BASE:
            base = 0
            if ring is not None:
                self._stop_ring(ring)
                base = ring.last_avail
                self.logger.debug(f"vsock: queue {index} stopped at {base}")
            return struct.pack("<II", index, base)
        elif request == VHOST_USER_SET_VRING_ENABLE and ring is not None:
            ring.enabled = bool(num)
        elif ring is None and request in (VHOST_USER_SET_VRING_NUM, VHOST_USER_SET_VRING_BASE,
                                        VHOST_USER_SET_VRING_ADDR, VHOST_USER_SET_VRING_ENABLE):
            pass  # not one of the two rings the back end serves
        else:
            for fd in fds:
                os.close(fd)
            raise VringError(f"unsupported vhost-user request {request}")
        return None

    def _ring(self, index: int) -> Virtqueue | None:
        return (self.rx, self.tx)[index] if index in (0, 1) else None

    def _stop_ring(self, vq: Virtqueue) -> None:
        vq.started = False
        if vq.kick_fd is not None:
            self._unwatch(vq.kick_fd)
            os.close(vq.kick_fd)
            vq.kick_fd = None

    def _on_kick(self, fd: int, _: int) -> None:
        try:
            os.read(fd, 8)  # the queues are processed after every poll anyway
        except BlockingIOError:
            pass

    # ---- the rings

    def _process_tx(self) -> None:
        vq = self.tx
        if not vq.ready:
            return
        while (chain := vq.next_chain(self.memory)) is not None:
            head, readable, _ = chain
            try:
                self._from_guest(readable)
            finally:
                vq.consume(head, 0)
        vq.notify()

    def _process_rx(self) -> None:
        vq = self.rx
        if not vq.ready:
            return
        while self.rxq and (chain := vq.next_chain(self.memory)) is not None:
            head, _, writable = chain
            item = self.rxq[0]
            if isinstance(item, tuple):
                self.rxq.popleft()
                self._write_packet(writable, item[0], item[1], VSOCK_OP_RST, 0, 0, 0, 0)
                vq.consume(head, VSOCK_HDR.size)
                continue
            written = self._conn_packet(item, writable) if not item.removed else None
            if written is None or not item.pending or item.removed:
                self.rxq.popleft()
                item.in_rxq = False
            elif len(self.rxq) > 1:
                self.rxq.rotate(-1)  # round robin between connections
            if written is not None:
                vq.consume(head, written)
        vq.notify()

    def _write_packet(self, views: list[memoryview], src_port: int, dst_port: int, op: int,
                      flags: int, length: int, buf_alloc: int, fwd_cnt: int) -> None:
        fields = (VSOCK_HOST_CID, self.cid, src_port, dst_port, length, VSOCK_TYPE_STREAM, op,
                  flags, buf_alloc, fwd_cnt)
        if views and len(views[0]) >= VSOCK_HDR.size:
            # pack_into may zero before it writes (see Virtqueue): fine in a buffer the guest
            # reads only once it is used, never for the rings.
            VSOCK_HDR.pack_into(views[0], 0, *fields)
        else:
            scatter(VSOCK_HDR.pack(*fields), views)

    def _packet(self, conn: VsockConnection, views: list[memoryview], op: int, flags: int = 0,
                length: int = 0) -> int:
        """Write a packet of ``conn`` into a guest buffer; it tells the guest our credit."""
        self._write_packet(views, conn.local_port, conn.peer_port, op, flags, length,
                           VSOCK_BUF_ALLOC, conn.fwd_cnt & U32)
        conn.fwd_cnt_told = conn.fwd_cnt
        conn.pending &= ~P_CREDIT_UPDATE
        return VSOCK_HDR.size + length

    def _conn_packet(self, conn: VsockConnection, buffer: list[memoryview]) -> int | None:
        """The next packet ``conn`` has for the guest, written into ``buffer``: its length,
        or None if it has nothing to say after all (e.g. its stream had no data)."""
        if sum(len(v) for v in buffer) < VSOCK_HDR.size:
            raise VringError("vsock rx buffer is smaller than a packet header")
        if conn.pending & P_RST:
            conn.pending = 0
            written = self._packet(conn, buffer, VSOCK_OP_RST)
            self._remove(conn)
            return written
        if conn.pending & P_RESPONSE:
            conn.pending &= ~P_RESPONSE
            conn.state = ESTABLISHED
            self._want_read(conn)
            return self._packet(conn, buffer, VSOCK_OP_RESPONSE)
        if conn.pending & P_REQUEST:
            conn.pending &= ~P_REQUEST
            conn.expiry = time.monotonic() + VSOCK_TIMEOUT_S
            return self._packet(conn, buffer, VSOCK_OP_REQUEST)
        if conn.pending & P_RW:
            data = self._data_packet(conn, buffer)
            if data is not None:
                return data
        if conn.pending & P_CREDIT_UPDATE:
            return self._packet(conn, buffer, VSOCK_OP_CREDIT_UPDATE)
        return None

    def _data_packet(self, conn: VsockConnection, buffer: list[memoryview]) -> int | None:
        if not conn.readable_state():
            conn.pending &= ~P_RW
            return None
        credit = conn.peer_credit()
        if credit == 0:
            conn.pending &= ~P_RW
            conn.credit_wait = True
            return self._packet(conn, buffer, VSOCK_OP_CREDIT_REQUEST)
        _, data = split_views(buffer, VSOCK_HDR.size)
        capacity = sum(len(v) for v in data)
        if credit < capacity:
            data, _ = split_views(data, credit)
            capacity = credit
        if conn.early:
            count = min(len(conn.early), capacity)
            scatter(conn.early[:count], data)
            conn.early = conn.early[count:]
        else:
            try:
                count = conn.stream.recvmsg_into(data)[0]
            except BlockingIOError:
                conn.pending &= ~P_RW
                self._set_events(conn, conn.events | select.EPOLLIN)
                return None
            except OSError:
                count = 0  # a reset host stream ends the connection like an EOF
            if count == 0:
                conn.pending &= ~P_RW
                conn.state = LOCAL_CLOSED
                conn.expiry = time.monotonic() + VSOCK_TIMEOUT_S
                self._set_events(conn, conn.events & ~select.EPOLLIN)
                return self._packet(conn, buffer, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_BOTH)
            if count < capacity:  # drained for now: wait for the stream to be readable again
                conn.pending &= ~P_RW
                self._set_events(conn, conn.events | select.EPOLLIN)
        conn.rx_cnt = (conn.rx_cnt + count) & U32
        return self._packet(conn, buffer, VSOCK_OP_RW, 0, count)

    def _from_guest(self, readable: list[memoryview]) -> None:
        """Route one packet the guest sent."""
        if readable and len(readable[0]) >= VSOCK_HDR.size:
            fields = VSOCK_HDR.unpack_from(readable[0], 0)
        else:
            raw = b"".join(bytes(v) for v in readable)[:VSOCK_HDR.size]
            if len(raw) < VSOCK_HDR.size:
                self.logger.warn("vsock: dropping a guest packet shorter than its header")
                return
            fields = VSOCK_HDR.unpack(raw)
        _, dst_cid, src_port, dst_port, length, kind, op, flags, buf_alloc, fwd_cnt = fields
        if kind != VSOCK_TYPE_STREAM:
            self._enqueue_rst(dst_port, src_port)
            return
        if dst_cid != VSOCK_HOST_CID:
            self.logger.debug(f"vsock: dropping a guest packet for CID {dst_cid}")
            return
        conn = self.conns.get((dst_port, src_port))
        if conn is None:
            if op == VSOCK_OP_REQUEST:
                self._guest_connect(dst_port, src_port, buf_alloc, fwd_cnt)
            elif op != VSOCK_OP_RST:
                self._enqueue_rst(dst_port, src_port)
            return
        if op == VSOCK_OP_RST:
            self._remove(conn)
            return
        conn.peer_buf_alloc, conn.peer_fwd_cnt = buf_alloc, fwd_cnt
        if conn.credit_wait and conn.peer_credit():
            conn.credit_wait = False
            self._want_read(conn)
        state = conn.state
        if op == VSOCK_OP_RW:
            if state == ESTABLISHED or (state == PEER_CLOSED
                                        and not conn.peer_shutdown & VSOCK_SHUTDOWN_SEND):
                _, payload = split_views(readable, VSOCK_HDR.size)
                payload, _ = split_views(payload, length)
                self._to_host(conn, payload)
        elif op == VSOCK_OP_RESPONSE and state == LOCAL_INIT:
            conn.expiry = None
            conn.state = ESTABLISHED
            try:
                conn.stream.send(f"OK {conn.local_port}\n".encode(), socket.MSG_NOSIGNAL)
            except OSError:
                self._kill(conn)
                return
            self._want_read(conn)
        elif op == VSOCK_OP_SHUTDOWN and state in (ESTABLISHED, PEER_CLOSED):
            conn.state = PEER_CLOSED
            conn.peer_shutdown |= flags & VSOCK_SHUTDOWN_BOTH
            if conn.peer_shutdown == VSOCK_SHUTDOWN_BOTH:
                if conn.tx_buf:
                    conn.expiry = time.monotonic() + VSOCK_TIMEOUT_S
                else:
                    self._kill(conn)
        elif op == VSOCK_OP_CREDIT_REQUEST and state in (ESTABLISHED, PEER_INIT, PEER_CLOSED):
            conn.pending |= P_CREDIT_UPDATE
            self._enqueue(conn)

    def _to_host(self, conn: VsockConnection, payload: list[memoryview]) -> None:
        if conn.tx_buf:
            for view in payload:
                conn.tx_buf += view
            return
        total = sum(len(v) for v in payload)
        try:
            sent = conn.stream.sendmsg(payload, [], socket.MSG_NOSIGNAL)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._kill(conn)
            return
        self._forwarded(conn, sent)
        if sent < total:
            _, rest = split_views(payload, sent)
            for view in rest:
                conn.tx_buf += view
            self._set_events(conn, conn.events | select.EPOLLOUT)

    def _forwarded(self, conn: VsockConnection, count: int) -> None:
        conn.fwd_cnt = (conn.fwd_cnt + count) & U32
        if (conn.fwd_cnt - conn.fwd_cnt_told) & U32 >= VSOCK_CREDIT_UPDATE_AFTER:
            conn.pending |= P_CREDIT_UPDATE
            self._enqueue(conn)

    # ---- host side

    def _on_host_accept(self, _: int) -> None:
        try:
            stream, _ = self.listener.accept()
        except OSError:
            return
        if len(self.conns) + len(self.connecting) >= VSOCK_MAX_CONNECTIONS:
            self.logger.warn("vsock: connection limit reached; refusing a host connection")
            stream.close()
            return
        stream.setblocking(False)
        self.connecting[stream.fileno()] = (stream, bytearray())
        self._watch(stream.fileno(), select.EPOLLIN, functools.partial(self._on_connect_line, stream.fileno()))

    def _on_connect_line(self, fd: int, _: int) -> None:
        stream, line = self.connecting[fd]
        try:
            data = stream.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        line += data
        port, rest = None, b""
        if b"\n" in line:
            text, _newline, rest = bytes(line).partition(b"\n")
            words = text.decode("ascii", "replace").split()
            if (len(text) < 32 and len(words) == 2 and words[0].lower() == "connect"
                    and words[1].isdigit() and int(words[1]) <= U32):
                port = int(words[1])
        elif data and len(line) < 32:
            return  # the line is not complete yet
        self._unwatch(fd)
        del self.connecting[fd]
        if port is None:
            stream.close()  # EOF or not "CONNECT <port>": Firecracker drops the stream
            return
        local = self._allocate_local_port()
        conn = VsockConnection(local, port, stream, LOCAL_INIT, P_REQUEST)
        conn.early = rest
        if rest:
            self.logger.warn(f"vsock: host connection to port {port} sent data before OK")
        self._add(conn)

    def _allocate_local_port(self) -> int:
        while True:
            self.last_local_port = ((self.last_local_port + 1) & ~(1 << 31)) | (1 << 30)
            if self.last_local_port not in self.local_ports:
                self.local_ports.add(self.last_local_port)
                return self.last_local_port

    def _guest_connect(self, local_port: int, peer_port: int, buf_alloc: int, fwd_cnt: int) -> None:
        path = f"{self.uds_path}_{local_port}"
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream.setblocking(False)
        try:
            if len(self.conns) >= VSOCK_MAX_CONNECTIONS:
                raise OSError("too many connections")
            stream.connect(path)
        except OSError:
            stream.close()
            self._enqueue_rst(local_port, peer_port)
            return
        conn = VsockConnection(local_port, peer_port, stream, PEER_INIT, P_RESPONSE)
        conn.peer_buf_alloc, conn.peer_fwd_cnt = buf_alloc, fwd_cnt
        self._add(conn)

    def _add(self, conn: VsockConnection) -> None:
        self.conns[conn.key] = conn
        self.by_fd[conn.fd] = conn
        self._enqueue(conn)

    def _remove(self, conn: VsockConnection) -> None:
        """Forget ``conn`` and close its host stream (its RST went, or the guest sent one)."""
        if conn.removed:
            return
        conn.removed = True
        self._set_events(conn, 0)
        self.conns.pop(conn.key, None)
        self.by_fd.pop(conn.fd, None)
        self.local_ports.discard(conn.local_port)
        conn.stream.close()

    def _kill(self, conn: VsockConnection) -> None:
        """Reset ``conn``: an RST to the guest, then the stream closes."""
        conn.state = KILLED
        conn.pending = P_RST
        conn.tx_buf.clear()
        conn.expiry = None
        self._set_events(conn, 0)
        self._enqueue(conn)

    def _enqueue(self, conn: VsockConnection) -> None:
        if not conn.in_rxq and not conn.removed:
            conn.in_rxq = True
            self.rxq.append(conn)

    def _enqueue_rst(self, local_port: int, peer_port: int) -> None:
        self.rxq.append((local_port, peer_port))

    def _want_read(self, conn: VsockConnection) -> None:
        """Try the host stream for data to send (it may have none: then wait for it)."""
        if conn.readable_state() and not conn.credit_wait:
            conn.pending |= P_RW
            self._enqueue(conn)

    def _set_events(self, conn: VsockConnection, mask: int) -> None:
        """Poll the host stream for ``mask``; 0 unregisters it (so no hang-up can spin)."""
        if mask == conn.events or conn.removed and mask:
            return
        if mask == 0:
            self._unwatch(conn.fd)
        elif conn.events == 0:
            self._watch(conn.fd, mask, functools.partial(self._on_stream, conn))
        else:
            self.epoll.modify(conn.fd, mask)
        conn.events = mask

    def _on_stream(self, conn: VsockConnection, events: int) -> None:
        if events & select.EPOLLOUT or (events & (select.EPOLLHUP | select.EPOLLERR)
                                        and conn.tx_buf):
            self._flush(conn)
        if conn.removed or conn.state == KILLED:
            return
        if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and (
                conn.events & select.EPOLLIN):
            self._set_events(conn, conn.events & ~select.EPOLLIN)
            self._want_read(conn)

    def _flush(self, conn: VsockConnection) -> None:
        try:
            sent = conn.stream.send(conn.tx_buf, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return
        except OSError:
            self._kill(conn)
            return
        del conn.tx_buf[:sent]
        self._forwarded(conn, sent)
        if not conn.tx_buf:
            self._set_events(conn, conn.events & ~select.EPOLLOUT)
            if conn.state == PEER_CLOSED and conn.peer_shutdown == VSOCK_SHUTDOWN_BOTH:
                self._kill(conn)

    def _expire(self) -> None:
        if not self.rx.ready:
            return
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if conn.expiry is not None and conn.expiry <= now:
                self._kill(conn)


# --------------------------------------------------------------------------- the VMM

# Snapshots of a guest with a vsock device keep no memory (see the module docstring).
MEM_FORMAT_COLD_BOOT = "fc-test-vmm: no guest memory"
COLD_BOOT_WHY = ("QEMU cannot migrate its vhost-user-vsock device, so the test VMM keeps no "
                 "memory of a guest with vsock; loading the snapshot cold-boots the guest from "
                 "its kernel and disks (vsock connections are reset anyway on a Firecracker "
                 "restore)")

PRE_BOOT_ONLY = {
    "put_balloon", "put_boot_source", "put_cpu_config", "put_logger", "put_serial",
    "put_machine_config", "patch_machine_config", "put_metrics", "put_entropy",
    "put_mmds_config", "put_vsock", "put_memory_hotplug", "load_snapshot", "InstanceStart",
}
POST_BOOT_ONLY = {
    "patch_drive", "patch_net", "patch_balloon", "patch_balloon_stats", "start_hinting",
    "stop_hinting", "get_balloon_stats", "get_hinting_status", "get_memory_hotplug",
    "patch_memory_hotplug", "patch_vm", "create_snapshot", "hot_unplug", "FlushMetrics",
    "SendCtrlAltDel",
}
# Configuring any of these makes a later /snapshot/load invalid (Firecracker's "boot path").
NOT_BOOT_PATH = {"put_logger", "put_metrics", "describe_instance", "version",
                 "get_machine_config", "get_mmds", "get_balloon", "get_vm_config", "put_mmds",
                 "patch_mmds"}


class Vmm:
    """The microVM's state and the actions the API (or --config-file) applies to it.

    Every action runs on the VMM thread (the main thread), one at a time, like Firecracker.
    """

    def __init__(self, instance_id: str, logger: Logger, metrics: Metrics, enable_pci: bool,
                 mmds_limit: int) -> None:
        self.instance_id, self.logger, self.metrics = instance_id, logger, metrics
        self.enable_pci, self.mmds_limit = enable_pci, mmds_limit
        self.state = "Not started"
        self.machine: dict[str, Any] = {"vcpu_count": 1, "mem_size_mib": 128, "smt": False,
                                        "track_dirty_pages": False, "huge_pages": "None"}
        self.boot_source: dict[str, Any] | None = None
        self.drives: list[dict[str, Any]] = []  # the root drive first
        self.nets: list[dict[str, Any]] = []
        self.pmems: list[dict[str, Any]] = []
        self.vsock: dict[str, Any] | None = None
        self.vsock_listener: VsockListener | None = None
        self.vsock_device: VsockDevice | None = None
        self.logger_cfg: dict[str, Any] | None = None
        self.metrics_cfg: dict[str, Any] | None = None
        self.mmds_cfg: dict[str, Any] | None = None
        self.mmds_data: Any = None
        self.balloon: dict[str, Any] | None = None
        self.entropy: dict[str, Any] | None = None
        self.serial: dict[str, Any] | None = None
        self.cpu_config: dict[str, Any] | None = None
        self.hotplug: dict[str, Any] | None = None
        self.hotplug_requested = 0
        self.boot_path = False
        self.restored = False
        self.workdir: str | None = None  # made at the first launch (it holds QMP's socket)
        self.qemu: subprocess.Popen | None = None
        self.qmp: Qmp | None = None
        self.exit_code: int | None = None

    # ---- dispatch

    def run(self, parsed: Parsed) -> tuple[int, Any]:
        action = parsed.action
        phase_key = parsed.payload["action_type"] if action == "action" else action
        booted = self.state != "Not started"
        if booted and phase_key in PRE_BOOT_ONLY:
            raise ApiError(NOT_POST_BOOT)
        if not booted and phase_key in POST_BOOT_ONLY:
            raise ApiError(NOT_PRE_BOOT)
        if booted and action in ("put_drive", "put_net", "put_pmem") and not self.enable_pci:
            raise ApiError(NOT_POST_BOOT)
        handler: Callable[[Any], Any] = getattr(self, "do_" + action)
        result = handler(parsed.payload)
        if not booted and action not in NOT_BOOT_PATH:
            self.boot_path = True
        return (204, None) if result is None else (200, result)

    # ---- informational

    def do_describe_instance(self, _: Any) -> dict[str, Any]:
        return {"id": self.instance_id, "state": self.state, "vmm_version": VERSION,
                "app_name": "Firecracker"}

    def do_version(self, _: Any) -> dict[str, Any]:
        return {"firecracker_version": VERSION}

    def do_get_machine_config(self, _: Any) -> dict[str, Any]:
        return dict(self.machine)

    def do_get_vm_config(self, _: Any) -> dict[str, Any]:
        boot = self.boot_source or {"kernel_image_path": "", "initrd_path": None}
        if self.restored:
            boot = {"kernel_image_path": "", "initrd_path": None}
        return {
            "balloon": self.balloon, "drives": self.drives, "boot-source": boot,
            "cpu-config": self.cpu_config, "logger": self.logger_cfg,
            "machine-config": self.machine, "metrics": self.metrics_cfg,
            "memory-hotplug": self.hotplug, "mmds-config": self.mmds_cfg,
            "network-interfaces": self.nets, "pmem": self.pmems, "vsock": self.vsock,
            "entropy": self.entropy,
        }

    # ---- pre-boot configuration

    def do_put_machine_config(self, cfg: dict[str, Any]) -> None:
        full = {"smt": False, "track_dirty_pages": False, "huge_pages": "None"}
        full.update(cfg)
        self._set_machine(full)

    def do_patch_machine_config(self, cfg: dict[str, Any]) -> None:
        merged = dict(self.machine)
        merged.update(cfg)
        self._set_machine(merged)

    def _set_machine(self, cfg: dict[str, Any]) -> None:
        vcpus = cfg["vcpu_count"]
        if vcpus == 0 or vcpus > 32 or (cfg["smt"] and vcpus > 1 and vcpus % 2):
            raise ApiError("The number of vCPUs must be greater than 0, less than 32 and must "
                           "be 1 or an even number if SMT is enabled.")
        mem = cfg["mem_size_mib"]
        if mem == 0 or (cfg["huge_pages"] == "2M" and mem % 2):
            raise ApiError("The memory size (MiB) is either 0, or not a multiple of the "
                           "configured page size.")
        if self.balloon and self.balloon["amount_mib"] > mem:
            raise ApiError("The memory size (MiB) is smaller than the previously set balloon "
                           "device target size.")
        order = ("vcpu_count", "mem_size_mib", "smt", "cpu_template", "track_dirty_pages",
                 "huge_pages")
        self.machine = {k: cfg[k] for k in order if k in cfg and cfg[k] is not None}
        if self.machine.get("cpu_template") == "None":
            del self.machine["cpu_template"]

    def do_put_boot_source(self, cfg: dict[str, Any]) -> None:
        try:
            open(cfg["kernel_image_path"], "rb").close()
        except OSError as exc:
            raise ApiError(f"The kernel file cannot be opened: {os_error_text(exc)}") from None
        if cfg.get("initrd_path") is not None:
            try:
                open(cfg["initrd_path"], "rb").close()
            except OSError as exc:
                raise ApiError("The initrd file cannot be opened due to invalid path or "
                               f"invalid permissions. {os_error_text(exc)}") from None
        cfg.setdefault("initrd_path", None)
        self.boot_source = cfg

    def do_put_drive(self, cfg: dict[str, Any]) -> None:
        if "socket" not in cfg:
            if "path_on_host" not in cfg:
                raise ApiError("Unable to create the block device: missing field "
                               "`path_on_host` for a virtio-block device")
            try:
                open(cfg["path_on_host"], "rb").close()
            except OSError as exc:
                raise ApiError("Unable to create the block device: BackingFile("
                               f"{os_error_text(exc)}, \"{cfg['path_on_host']}\")") from None
        drive = {"drive_id": cfg["drive_id"], "partuuid": cfg.get("partuuid"),
                 "is_root_device": cfg["is_root_device"],
                 "cache_type": cfg.get("cache_type", "Unsafe"),
                 "is_read_only": cfg.get("is_read_only", False),
                 "path_on_host": cfg.get("path_on_host"),
                 "rate_limiter": cfg.get("rate_limiter"),
                 "io_engine": cfg.get("io_engine", "Sync"), "socket": cfg.get("socket")}
        index = next((i for i, d in enumerate(self.drives)
                      if d["drive_id"] == drive["drive_id"]), None)
        has_root = bool(self.drives) and self.drives[0]["is_root_device"]
        if drive["is_root_device"] and has_root and index != 0:
            raise ApiError("A root block device already exists!")
        if any(p.get("root_device") for p in self.pmems) and drive["is_root_device"]:
            raise ApiError("A root block device already exists!")
        if index is None:
            self.drives.insert(0, drive) if drive["is_root_device"] else self.drives.append(drive)
        else:
            self.drives[index] = drive
            if index != 0 and drive["is_root_device"]:
                self.drives.insert(0, self.drives.pop(index))

    def do_put_net(self, cfg: dict[str, Any]) -> None:
        # The TAP is opened at InstanceStart (see the module docstring and check_taps).
        for other in self.nets:
            if other["iface_id"] != cfg["iface_id"]:
                if other["host_dev_name"] == cfg["host_dev_name"]:
                    raise ApiError("Could not create the network device: The host device "
                                   "name is already in use.")
                if cfg.get("guest_mac") and other.get("guest_mac") == cfg["guest_mac"]:
                    raise ApiError(f"The MAC address is already in use: {cfg['guest_mac']}")
        mtu = cfg.get("mtu")
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ApiError(f"Invalid MTU: {mtu}")
        net = {"iface_id": cfg["iface_id"], "host_dev_name": cfg["host_dev_name"],
               "guest_mac": cfg.get("guest_mac"), "rx_rate_limiter": cfg.get("rx_rate_limiter"),
               "tx_rate_limiter": cfg.get("tx_rate_limiter")}
        if mtu is not None:
            net["mtu"] = mtu
        self._replace(self.nets, "iface_id", net)

    def do_put_pmem(self, cfg: dict[str, Any]) -> None:
        try:
            open(cfg["path_on_host"], "rb").close()
        except OSError as exc:
            raise ApiError(f"Unable to open the pmem backing file: {os_error_text(exc)}") from None
        if cfg.get("root_device") and (
                any(p.get("root_device") and p["id"] != cfg["id"] for p in self.pmems)
                or any(d["is_root_device"] for d in self.drives)):
            raise ApiError("A root device already exists!")
        self._replace(self.pmems, "id", cfg)

    @staticmethod
    def _replace(items: list[dict[str, Any]], key: str, item: dict[str, Any]) -> None:
        for i, other in enumerate(items):
            if other[key] == item[key]:
                items[i] = item
                return
        items.append(item)

    def do_put_vsock(self, cfg: dict[str, Any]) -> None:
        if cfg["guest_cid"] < 3:
            raise ApiError("Cannot create backend for vsock device: invalid guest CID "
                           f"{cfg['guest_cid']}")
        if self.vsock_listener is not None:
            self.vsock_listener.close(unlink=True)
            self.vsock_listener = None
        self.vsock_listener = VsockListener(cfg["uds_path"])
        self.vsock = {"guest_cid": cfg["guest_cid"], "uds_path": cfg["uds_path"]}

    def do_put_entropy(self, cfg: dict[str, Any]) -> None:
        self.entropy = cfg

    def do_put_serial(self, cfg: dict[str, Any]) -> None:
        if cfg.get("serial_out_path") is not None:
            try:
                os.close(open_nonblock(cfg["serial_out_path"]))
            except OSError as exc:
                raise ApiError(f"Failed to open the serial output file: "
                               f"{os_error_text(exc)}") from None
        self.serial = cfg

    def do_put_cpu_config(self, cfg: dict[str, Any]) -> None:
        self.cpu_config = cfg

    def do_put_logger(self, cfg: dict[str, Any]) -> None:
        level = cfg.get("level")
        if level is not None and level.lower() not in LEVELS:
            raise ApiError(f"Failed to parse the log level: {level}")
        try:
            self.logger.configure(cfg.get("log_path"), level, cfg.get("show_level"),
                                  cfg.get("show_log_origin"))
        except OSError as exc:
            raise ApiError(f"Failed to open target file: {os_error_text(exc)}") from None
        self.logger_cfg = cfg

    def do_put_metrics(self, cfg: dict[str, Any]) -> None:
        if self.metrics.fd is not None:
            raise ApiError("Reinitialization of metrics not allowed.")
        try:
            self.metrics.fd = open_nonblock(cfg["metrics_path"])
        except OSError as exc:
            raise ApiError(f"Failed to open target file: {os_error_text(exc)}") from None
        self.metrics_cfg = cfg

    def do_put_mmds_config(self, cfg: dict[str, Any]) -> None:
        ids = cfg["network_interfaces"]
        if not ids:
            raise ApiError("The list of network interface IDs that allow forwarding MMDS "
                           "requests is empty.")
        known = {n["iface_id"] for n in self.nets}
        if any(i not in known for i in ids):
            raise ApiError("The list of network interface IDs provided contains at least one "
                           "ID that does not correspond to any existing network interface.")
        address = cfg.get("ipv4_address", "169.254.169.254")
        parts = address.split(".")
        if (len(parts) != 4 or parts[:2] != ["169", "254"]
                or not all(p.isdigit() and int(p) < 256 for p in parts)):
            raise ApiError(f"The MMDS IPv4 address is not link local: {address}")
        self.mmds_cfg = {"version": cfg.get("version", "V1"), "network_interfaces": ids,
                         "ipv4_address": address, "imds_compat": cfg.get("imds_compat", False)}

    def do_put_mmds(self, data: Any) -> None:
        if len(json.dumps(data)) > self.mmds_limit:
            raise ApiError("The MMDS patch request doesn't fit.", 413)
        self.mmds_data = data

    def do_patch_mmds(self, patch: Any) -> None:
        merged = merge_patch(json.loads(json.dumps(self.mmds_data)), patch)
        if len(json.dumps(merged)) > self.mmds_limit:
            raise ApiError("The MMDS patch request doesn't fit.", 413)
        self.mmds_data = merged

    def do_get_mmds(self, _: Any) -> Any:
        return {} if self.mmds_data is None else self.mmds_data

    def do_put_balloon(self, cfg: dict[str, Any]) -> None:
        if cfg["amount_mib"] > self.machine["mem_size_mib"]:
            raise ApiError("Amount of pages requested is too large.")
        self.balloon = {"amount_mib": cfg["amount_mib"], "deflate_on_oom": cfg["deflate_on_oom"],
                        "stats_polling_interval_s": cfg.get("stats_polling_interval_s", 0),
                        "free_page_hinting": cfg.get("free_page_hinting", False),
                        "free_page_reporting": cfg.get("free_page_reporting", False)}

    def do_get_balloon(self, _: Any) -> dict[str, Any]:
        return dict(self._balloon())

    def _balloon(self) -> dict[str, Any]:
        if self.balloon is None:
            raise ApiError("No balloon device found.")
        return self.balloon

    def do_put_memory_hotplug(self, cfg: dict[str, Any]) -> None:
        slot, block = cfg.get("slot_size_mib", 128), cfg.get("block_size_mib", 2)
        total = cfg.get("total_size_mib", 0)
        if slot < 128 or block < 2 or block & (block - 1) or slot % block or total % slot:
            raise ApiError("Invalid memory hotplug configuration: the slot size must be at "
                           "least 128 MiB, the block size a power of 2 of at least 2 MiB, and "
                           "the total size a multiple of the slot size.")
        self.hotplug = {"total_size_mib": total, "slot_size_mib": slot, "block_size_mib": block}

    # ---- post-boot

    def do_get_balloon_stats(self, _: Any) -> dict[str, Any]:
        balloon = self._balloon()
        if not balloon["stats_polling_interval_s"]:
            raise ApiError("Statistics for the balloon device are not enabled")
        pages = balloon["amount_mib"] * 256
        return {"target_pages": pages, "actual_pages": pages,
                "target_mib": balloon["amount_mib"], "actual_mib": balloon["amount_mib"]}

    def do_patch_balloon(self, cfg: dict[str, Any]) -> None:
        balloon = self._balloon()
        if cfg["amount_mib"] > self.machine["mem_size_mib"]:
            raise ApiError("Amount of pages requested is too large.")
        balloon["amount_mib"] = cfg["amount_mib"]

    def do_patch_balloon_stats(self, cfg: dict[str, Any]) -> None:
        balloon = self._balloon()
        if not balloon["stats_polling_interval_s"] or not cfg["stats_polling_interval_s"]:
            raise ApiError("Cannot enable or disable the statistics after boot.")
        balloon["stats_polling_interval_s"] = cfg["stats_polling_interval_s"]

    def _hinting(self) -> None:
        if not self._balloon()["free_page_hinting"]:
            raise ApiError("Free page hinting was not enabled when the device was configured.")

    def do_start_hinting(self, _: Any) -> None:
        self._hinting()

    def do_stop_hinting(self, _: Any) -> None:
        self._hinting()

    def do_get_hinting_status(self, _: Any) -> dict[str, Any]:
        self._hinting()
        return {"host_cmd": 0, "guest_cmd": None}

    def do_get_memory_hotplug(self, _: Any) -> dict[str, Any]:
        if self.hotplug is None:
            raise ApiError("The memory hotplug device was not configured.")
        return dict(self.hotplug, plugged_size_mib=self.hotplug_requested,
                    requested_size_mib=self.hotplug_requested)

    def do_patch_memory_hotplug(self, cfg: dict[str, Any]) -> None:
        status = self.do_get_memory_hotplug(None)
        size = cfg.get("requested_size_mib", 0)
        if size > status["total_size_mib"] or size % status["block_size_mib"]:
            raise ApiError(f"Invalid requested size {size} MiB for the memory hotplug device.")
        self.hotplug_requested = size

    def do_patch_drive(self, cfg: dict[str, Any]) -> None:
        drive = next((d for d in self.drives if d["drive_id"] == cfg["drive_id"]), None)
        if drive is None:
            raise ApiError("Invalid block device ID!")
        if "path_on_host" in cfg:
            try:
                open(cfg["path_on_host"], "rb").close()
            except OSError as exc:
                raise ApiError("Unable to patch the block device: BackingFile("
                               f"{os_error_text(exc)}, \"{cfg['path_on_host']}\")") from None
        drive.update(cfg)  # recorded only: the QEMU backend keeps its file

    def do_patch_net(self, cfg: dict[str, Any]) -> None:
        net = next((n for n in self.nets if n["iface_id"] == cfg["iface_id"]), None)
        if net is None:
            raise ApiError("Invalid network interface ID!")
        net.update(cfg)

    def do_hot_unplug(self, what: tuple[str, str]) -> None:
        if not self.enable_pci:
            raise ApiError("Device hot-unplug requires the PCI transport (--enable-pci).")
        kind, id_ = what
        items, key = {"drives": (self.drives, "drive_id"), "network-interfaces": (
            self.nets, "iface_id"), "pmem": (self.pmems, "id")}[kind]
        if not any(i[key] == id_ for i in items):
            raise ApiError(f"Device {id_} not found.")
        items[:] = [i for i in items if i[key] != id_]

    def do_patch_vm(self, cfg: dict[str, Any]) -> None:
        assert self.qmp is not None
        if cfg["state"] == "Paused":
            self.qmp.execute("stop")
            self.state = "Paused"
        else:
            self.qmp.execute("cont")
            self.state = "Running"
        self.logger.info(f"The microVM state is now {self.state}.")

    def do_action(self, cfg: dict[str, Any]) -> None:
        kind = cfg["action_type"]
        if kind == "InstanceStart":
            self.start()
        elif kind == "FlushMetrics":
            self.metrics.flush()
        else:
            # Firecracker injects Ctrl+Alt+Del; with reboot=k the guest resets and the VMM
            # exits 0. QEMU's microvm has no i8042, so the VM is ended directly.
            assert self.qmp is not None
            self.logger.info("Sending Ctrl+Alt+Del: the guest ends.")
            try:
                self.qmp.execute("quit")
            except ApiError:
                pass  # QEMU may close the socket before it answers

    # ---- boot

    def kernel_cmdline(self) -> str:
        assert self.boot_source is not None
        args = self.boot_source.get("boot_args")
        parts = [DEFAULT_BOOT_ARGS if args is None else args]
        if self.drives and self.drives[0]["is_root_device"]:
            root = self.drives[0]
            uuid = root.get("partuuid")
            parts.append(f"root=PARTUUID={uuid}" if uuid else "root=/dev/vda")
            parts.append("ro" if root["is_read_only"] else "rw")
        if not self.enable_pci:
            parts.append("pci=off")
        tsc_khz = host_tsc_khz() if accel() == "tcg" else None
        if tsc_khz and "tsc_early_khz=" not in parts[0]:
            # Under KVM the guest learns the TSC rate from the hypervisor. Under TCG on a busy
            # host its PIT calibration fails and the boot hangs, so tell it the rate (TCG's
            # TSC runs at the host's rate).
            parts.append(f"tsc_early_khz={tsc_khz}")
        return " ".join(p for p in parts if p)

    def check_boot_files(self) -> None:
        if self.boot_source is None:
            raise ApiError("Cannot start microvm without kernel configuration.")
        kernel = self.boot_source["kernel_image_path"]
        try:
            elf = is_elf_vmlinux(kernel)
        except OSError as exc:
            raise ApiError(f"The kernel file cannot be opened: {os_error_text(exc)}") from None
        if not elf:
            raise ApiError(KERNEL_LOADER)
        files = [("initrd", self.boot_source.get("initrd_path"))]
        files += [("block device backing file", d["path_on_host"]) for d in self.drives]
        for what, path in files:
            if path is None:
                continue
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ApiError(f"Unable to open the {what} {path}: {os_error_text(exc)}") from None
        if any(d["socket"] for d in self.drives):
            raise ApiError("vhost-user block devices are not supported by the test VMM.")

    def check_taps(self) -> None:
        for net in self.nets:
            name = net["host_dev_name"]
            if not os.path.exists(f"/sys/class/net/{name}"):
                raise ApiError("Could not create the network device: Open tap device failed: Error while "
                               "creating ifreq structure: No such device (os error 19). Invalid TUN/TAP "
                               f"Backend provided by {name}. Check our documentation on setting up the "
                               "network devices.")

    def qemu_argv(self) -> list[str]:
        assert self.boot_source is not None
        binary = os.environ.get("FC_TEST_VMM_QEMU") or shutil.which("qemu-system-x86_64")
        if not binary:
            raise ApiError("Internal error while starting microVM: qemu-system-x86_64 not found "
                           "(install QEMU or set FC_TEST_VMM_QEMU)")
        mem = self.machine["mem_size_mib"]
        machine = "microvm,rtc=on"
        if self.vsock is not None:
            # The vsock back end (this process) must see guest RAM: share it through a memfd.
            machine += ",memory-backend=mem"
        argv = [binary, "-nodefaults", "-accel", accel(), "-M", machine,
                "-m", str(mem), "-smp", str(self.machine["vcpu_count"]),
                "-kernel", self.boot_source["kernel_image_path"]]
        if self.vsock is not None:
            argv += ["-object", f"memory-backend-memfd,id=mem,size={mem}M,share=on"]
        if self.boot_source.get("initrd_path"):
            argv += ["-initrd", self.boot_source["initrd_path"]]
        argv += ["-append", self.kernel_cmdline()]
        for index, drive in enumerate(self.drives):
            # No image locking: Firecracker does not lock disks, QEMU would refuse a shared one.
            opts = (f"id=drive{index},file={qemu_value(drive['path_on_host'])},format=raw,"
                    "if=none,file.locking=off")
            opts += ",readonly=on" if drive["is_read_only"] else ""
            opts += ",cache=unsafe" if drive["cache_type"] == "Unsafe" else ",cache=writeback"
            argv += ["-drive", opts, "-device", f"virtio-blk-device,drive=drive{index}"]
        for index, net in enumerate(self.nets):
            argv += ["-netdev", f"tap,id=net{index},ifname={qemu_value(net['host_dev_name'])},"
                     "script=no,downscript=no"]
            mac = f",mac={net['guest_mac']}" if net.get("guest_mac") else ""
            argv += ["-device", f"virtio-net-device,netdev=net{index}{mac}"]
        if self.vsock is not None:
            argv += ["-chardev", f"socket,id=vsock0,path={qemu_value(self.vhost_path())}",
                     "-device", "vhost-user-vsock-device,chardev=vsock0"]
        if self.entropy is not None:
            argv += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                     "-device", "virtio-rng-device,rng=rng0"]
        out = (self.serial or {}).get("serial_out_path")
        if out:
            argv += ["-chardev", f"file,id=ser0,path={qemu_value(out)},append=on"]
        else:
            argv += ["-chardev", "stdio,id=ser0,signal=off"]
        argv += ["-serial", "chardev:ser0", "-display", "none", "-monitor", "none",
                 "-no-reboot", "-qmp", f"unix:{self.workdir}/qmp.sock,server=on,wait=off"]
        return argv + shlex.split(os.environ.get("FC_TEST_VMM_QEMU_ARGS", ""))

    def vhost_path(self) -> str:
        """The vhost-user socket of the vsock device (QEMU connects to it)."""
        assert self.workdir is not None
        return os.path.join(self.workdir, "vsock.vhost")

    def launch(self, extra: list[str]) -> None:
        if self.workdir is None:
            self.workdir = make_workdir()
        argv = self.qemu_argv() + extra
        if self.vsock is not None and self.vsock_listener is not None:
            # The back end must listen before QEMU starts: QEMU's device setup waits for it.
            self.vsock_device = VsockDevice(self.vsock["guest_cid"], self.vsock_listener,
                                            self.vhost_path(), self.logger)
            self.vsock_device.start()
        self.logger.debug("Starting QEMU: " + shlex.join(argv))
        serial_out = (self.serial or {}).get("serial_out_path")
        try:
            self.qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL if serial_out else None,
                                         preexec_fn=parent_death_signal(os.getpid()))
        except OSError as exc:
            self.stop_qemu()
            raise ApiError("Internal error while starting microVM: cannot run QEMU: "
                           f"{os_error_text(exc)}") from None
        try:
            self.qmp = Qmp(f"{self.workdir}/qmp.sock", self.qemu)
        except ApiError:
            self.stop_qemu()
            self.qemu = None
            raise

    def start(self) -> None:
        self.check_boot_files()
        self.check_taps()
        self.launch([])
        self.state = "Running"
        self.logger.info("Successfully started microvm.")

    def stop_qemu(self) -> None:
        """End QEMU, then the vsock device (its host streams close). Callable twice."""
        if self.qemu is not None and self.qemu.poll() is None:
            self.qemu.kill()
            self.qemu.wait()
        if self.vsock_device is not None:
            self.vsock_device.close()
            self.vsock_device = None

    # ---- snapshots

    def do_create_snapshot(self, cfg: dict[str, Any]) -> None:
        assert self.qmp is not None
        if self.state != "Paused":
            raise ApiError("Create snapshot error: Cannot save the microVM state: the microVM "
                           "must be paused (PATCH /vm {\"state\": \"Paused\"}) first.")
        if cfg.get("snapshot_type") == "Diff" and not self.machine["track_dirty_pages"]:
            raise ApiError("Create snapshot error: Diff snapshots require track_dirty_pages.")
        mem = os.path.abspath(cfg["mem_file_path"])
        if self.vsock is None:
            mem_format = "qemu-migration-stream"
            self.save_memory(mem)
        else:
            mem_format = MEM_FORMAT_COLD_BOOT
            try:
                with open(mem, "w") as out:
                    out.write(f"{MEM_FORMAT_COLD_BOOT}: {COLD_BOOT_WHY}\n")
            except OSError as exc:
                raise ApiError(f"Create snapshot error: {os_error_text(exc)}") from None
            self.logger.warn(f"Snapshot without guest memory: {COLD_BOOT_WHY}.")
        state: dict[str, Any] = {"fc_test_vmm_snapshot": 1, "vmm_version": VERSION,
                                 "mem_format": mem_format, "config": self.do_get_vm_config(None),
                                 "serial": self.serial}
        state["config"]["boot-source"] = self.boot_source
        try:
            with open(cfg["snapshot_path"], "w") as out:
                json.dump(state, out)
        except OSError as exc:
            raise ApiError(f"Create snapshot error: {os_error_text(exc)}") from None
        self.logger.info("Snapshot created.")

    def save_memory(self, path: str) -> None:
        """Write QEMU's migration stream (RAM and device state) of the paused guest."""
        assert self.qmp is not None
        self.qmp.execute("migrate", uri="exec:cat > " + shlex.quote(path))
        while True:
            status = self.qmp.execute("query-migrate").get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise ApiError(f"Create snapshot error: saving guest memory {status}.")
            time.sleep(0.05)

    def do_load_snapshot(self, cfg: dict[str, Any]) -> None:
        if self.boot_path:
            raise ApiError("Loading a microVM snapshot not allowed after configuring "
                           "boot-specific resources.")
        backend = cfg["mem_backend"]
        if backend["backend_type"] != "File":
            raise ApiError("Load snapshot error: the test VMM supports only the File backend.")
        try:
            with open(cfg["snapshot_path"]) as state_file:
                state = json.load(state_file)
            open(backend["backend_path"], "rb").close()
        except (OSError, ValueError) as exc:
            raise ApiError(f"Load snapshot error: Cannot open the snapshot files: {exc}") from None
        config = state["config"]
        if "vsock_override" in cfg and config["vsock"] is None:
            # Firecracker (src/vmm/src/persist.rs) looks the snapshot's vsock device up for a
            # vsock_override and fails with SnapshotStateFromFileError::UnknownVsockDevice
            # ("Unknown Vsock Device."), wrapped as RestoreFromSnapshotError::File ("Failed to
            # get snapshot state from file: {0}"), LoadSnapshotError::RestoreFromSnapshot
            # ("Failed to restore from snapshot: {0}") and VmmActionError::LoadSnapshot ("Load
            # snapshot error: {0}"). README §3: application errors are 400 with
            # {"fault_message": ...}; §7: "If the load fails, the process exits; do not reuse
            # it" (this double stays up after any failed load: a caller must not rely on it).
            raise ApiError("Load snapshot error: Failed to restore from snapshot: Failed to get "
                           "snapshot state from file: Unknown Vsock Device.")
        self.machine, self.boot_source = config["machine-config"], config["boot-source"]
        self.drives, self.nets = config["drives"], config["network-interfaces"]
        self.pmems, self.balloon = config["pmem"], config["balloon"]
        self.entropy, self.mmds_cfg = config["entropy"], config["mmds-config"]
        self.hotplug, self.serial = config["memory-hotplug"], state.get("serial")
        for override in cfg.get("network_overrides", []):
            for net in self.nets:
                if net["iface_id"] == override["iface_id"]:
                    net["host_dev_name"] = override["host_dev_name"]
        if config["vsock"] is not None:
            vsock = dict(config["vsock"])
            if "vsock_override" in cfg:
                vsock["uds_path"] = cfg["vsock_override"]["uds_path"]
            self.do_put_vsock(vsock)
        self.check_taps()
        mem = os.path.abspath(backend["backend_path"])
        if state.get("mem_format") == MEM_FORMAT_COLD_BOOT:
            self.logger.warn(f"Snapshot load boots the guest afresh: {COLD_BOOT_WHY}.")
            self.check_boot_files()
            self.launch(["-S"])
        else:
            self.launch(["-S", "-incoming", "exec:cat " + shlex.quote(mem)])
            assert self.qmp is not None
            while self.qmp.execute("query-status").get("status") == "inmigrate":
                if self.qemu is not None and self.qemu.poll() is not None:
                    raise ApiError("Load snapshot error: QEMU could not restore the memory file.")
                time.sleep(0.05)
        assert self.qmp is not None
        self.restored = True
        self.state = "Paused"
        if cfg.get("resume_vm"):
            self.qmp.execute("cont")
            self.state = "Running"
        self.logger.info("Snapshot loaded.")

    # ---- --config-file

    def configure_from_json(self, text: str) -> None:
        """Apply a --config-file document and boot; raise ApiError on any failure."""
        value, _ = parse_json(text.encode())
        if not isinstance(value, dict):
            raise ApiError(f"invalid type: {describe(value)}, expected struct VmmConfig")
        if "boot-source" not in value:
            raise ApiError("missing field `boot-source`")
        for key in value:
            if key not in CONFIG_FILE_SECTIONS:
                options = ", ".join(f"`{k}`" for k in CONFIG_FILE_SECTIONS)
                raise ApiError(f"unknown field `{key}`, expected one of {options}")
        steps = [("logger", "put_logger"), ("metrics", "put_metrics"),
                 ("machine-config", "put_machine_config"), ("cpu-config", "put_cpu_config"),
                 ("boot-source", "put_boot_source"), ("drives", "put_drive"),
                 ("pmem", "put_pmem"), ("network-interfaces", "put_net"),
                 ("vsock", "put_vsock"), ("balloon", "put_balloon"),
                 ("mmds-config", "put_mmds_config"), ("entropy", "put_entropy"),
                 ("memory-hotplug", "put_memory_hotplug")]
        for key, action in steps:
            if value.get(key) is None:
                continue
            try:
                section = check_value(value[key], CONFIG_FILE_SECTIONS[key])
            except ValueError as exc:
                raise ApiError(str(exc)) from None
            for item in section if isinstance(section, list) else [section]:
                if key in ("drives", "network-interfaces", "pmem"):
                    checked_id(item.get("drive_id", item.get("iface_id", item.get("id"))))
                self.run(Parsed(action, item))
        self.run(Parsed("action", {"action_type": "InstanceStart"}))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as PATCH /mmds applies it."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


# --------------------------------------------------------------------------- API server

STATUS_TEXT = {200: "200 OK", 204: "204 No Content", 400: "400 Bad Request",
               413: "413 Payload Too Large"}


class Controller:
    """Hands parsed requests from API threads to the VMM thread and the answers back."""

    def __init__(self, vmm: Vmm, logger: Logger, metrics: Metrics, payload_limit: int) -> None:
        self.vmm, self.logger, self.metrics = vmm, logger, metrics
        self.payload_limit = payload_limit
        self.requests: queue.Queue = queue.Queue()
        self.inflight = 0
        self.idle = threading.Condition()

    def handle(self, method: str, path: str, body: bytes | None) -> tuple[int, Any, str | None]:
        """Answer one request: (status, JSON body or None, deprecation message or None)."""
        verb = method.capitalize()
        if body is None or path.rstrip("/") == "/mmds":
            self.logger.info(f"The API server received a {verb} request on {json.dumps(path)}.")
        else:
            text = json.dumps(body.decode("utf-8", errors="replace"))
            self.logger.info(f"The API server received a {verb} request on {json.dumps(path)} "
                             f"with body {text}.")
        try:
            parsed = parse_request(method, path, body)
            reply: queue.Queue = queue.Queue(1)
            self.requests.put((parsed, reply))
            result = reply.get()
            if isinstance(result, ApiError):
                raise result
            status, data = result
        except ApiError as err:
            self.metrics.count(method, path, True)
            self.logger.error(f"Received Error. Status code: {STATUS_TEXT[err.status]}. "
                              f"Message: {err.message}")
            return err.status, {err.key: err.message}, None
        self.metrics.count(method, path, False)
        self.logger.info(f"The request was executed successfully. Status code: "
                         f"{STATUS_TEXT[status]}.")
        if parsed.deprecated:
            self.logger.warn(parsed.deprecated)
        return status, data, parsed.deprecated

    def serve_vmm(self) -> int:
        """The VMM thread: run requests one at a time; return when the guest has ended."""
        while True:
            try:
                parsed, reply = self.requests.get(timeout=0.1)
            except queue.Empty:
                pass
            else:
                try:
                    reply.put(self.vmm.run(parsed))
                except ApiError as err:
                    reply.put(err)
                except Exception as exc:  # a bug in the double must not hang the client
                    reply.put(ApiError(f"Internal error in the test VMM: {exc!r}"))
            qemu = self.vmm.qemu
            if qemu is not None and qemu.poll() is not None:
                self.logger.info(f"The guest has ended (QEMU exit status {qemu.returncode}).")
                return EXIT_OK if qemu.returncode == 0 else EXIT_GENERIC
            if time.monotonic() - self.metrics.last_flush > 60:
                self.metrics.flush()

    def begin(self) -> None:
        with self.idle:
            self.inflight += 1

    def end(self) -> None:
        with self.idle:
            self.inflight -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self.idle:
            self.idle.wait_for(lambda: self.inflight == 0, timeout)


class ApiHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 over the API socket, answering like Firecracker's micro_http server."""

    protocol_version = "HTTP/1.1"
    controller: Controller  # set on the subclass made by serve_api

    def version_string(self) -> str:
        return "Firecracker API"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def address_string(self) -> str:
        return "api-client"

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        self._reply(400, {"error": message or "Invalid HTTP request."}, None)

    def _reply(self, status: int, data: Any, deprecated: str | None) -> None:
        self.send_response(status)
        if deprecated:
            self.send_header("Deprecation", "true")
        payload = b""
        if data is not None:
            payload = json.dumps(data).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self) -> None:
        threading.current_thread().name = "fc_api"
        controller = self.controller
        controller.begin()
        try:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self.send_error(400, "Invalid value. Key:Content-Length; Value: "
                                f"{self.headers.get('Content-Length')}")
                return
            if length > controller.payload_limit:
                self.close_connection = True
                while length > 0:  # drain it, so the client is not cut off mid-send
                    chunk = self.rfile.read(min(length, 65536))
                    length = length - len(chunk) if chunk else 0
                self._reply(400, {"error": f"Request payload with size {length} is larger than "
                                  f"the limit of {controller.payload_limit} allowed by server.\n"
                                  "All previous unanswered requests will be dropped."}, None)
                return
            body = self.rfile.read(length) if length else None
            status, data, deprecated = controller.handle(self.command, self.path, body)
            self._reply(status, data, deprecated)
        except OSError:
            self.close_connection = True
        finally:
            controller.end()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = do_HEAD = do_OPTIONS = _handle


class UnixApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve_api(path: str, controller: Controller) -> UnixApiServer:
    """Bind the API socket (raise OSError if the path exists) and serve it on a thread."""
    if os.path.lexists(path):
        raise OSError(98, "Address in use")
    handler = type("Handler", (ApiHandler,), {"controller": controller})
    server = UnixApiServer(path, handler)
    threading.Thread(target=server.serve_forever, name="fc_api", daemon=True).start()
    return server


# --------------------------------------------------------------------------- command line

VALUE_FLAGS = {"api-sock", "id", "seccomp-filter", "start-time-us", "start-time-cpu-us",
               "parent-cpu-time-us", "config-file", "metadata", "log-path", "level", "module",
               "metrics-path", "describe-snapshot", "http-api-max-payload-size",
               "mmds-size-limit"}
SWITCH_FLAGS = {"no-seccomp", "no-api", "show-level", "show-log-origin", "boot-timer",
                "version", "snapshot-version", "help", "enable-pci"}


class ArgError(Exception):
    pass


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Firecracker's argument rules: --name value or --name=value, each at most once."""
    args: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        name, has_eq, value = token[2:].partition("=")
        if not token.startswith("--") or name not in VALUE_FLAGS | SWITCH_FLAGS:
            raise ArgError(f"Found argument '{token}' which wasn't expected, or isn't valid "
                           "in this context.")
        if name in args:
            raise ArgError(f"The argument '--{name}' was provided more than once.")
        if name in VALUE_FLAGS:
            if not has_eq:
                i += 1
                if i >= len(argv) or argv[i].startswith("--"):
                    raise ArgError(f"The argument '--{name}' requires a value, but none was "
                                   "supplied.")
                value = argv[i]
            args[name] = value
        elif has_eq:
            raise ArgError(f"Found argument '{token}' which wasn't expected, or isn't valid "
                           "in this context.")
        else:
            args[name] = True
        i += 1
    if "no-api" in args and "config-file" not in args:
        raise ArgError("Argument 'config-file' required, but not found.")
    if "no-seccomp" in args and "seccomp-filter" in args:
        raise ArgError("Argument 'no-seccomp' cannot be used together with argument "
                       "'seccomp-filter'.")
    return args


def finish(controller: Controller | None, vmm: Vmm | None, logger: Logger, code: int) -> None:
    """Leave like Firecracker: final metrics, a last log line, the API socket left in place."""
    if controller is not None:
        controller.wait_idle(2.0)
    if vmm is not None:
        vmm.stop_qemu()
        vmm.metrics.flush()
        if vmm.workdir is not None:
            shutil.rmtree(vmm.workdir, ignore_errors=True)
    if code == EXIT_OK:
        logger.info("Firecracker exiting successfully. exit_code=0")
    else:
        logger.error(f"Firecracker exiting with error. exit_code={code}")
    sys.stdout.flush()
    os._exit(code)


def main(argv: list[str]) -> None:
    threading.current_thread().name = "main"
    try:
        args = parse_args(argv)
    except ArgError as exc:
        sys.stderr.write(f"Arguments parsing error: {exc} \n\nFor more information try --help.\n")
        sys.exit(EXIT_ARG_PARSING)
    if args.get("help"):
        print(f"Firecracker v{VERSION}\n\nA Firecracker-compatible test VMM (see the source).")
        return
    if args.get("version"):
        print(f"Firecracker v{VERSION}\n")
        return
    if args.get("snapshot-version"):
        print("v8.0.0")
        return
    instance_id = args.get("id", DEFAULT_INSTANCE_ID)
    if not (0 < len(instance_id) <= 64 and all(c.isalnum() or c == "-" for c in instance_id)):
        sys.stderr.write(f"Invalid instance ID: {instance_id!r}\n")
        sys.exit(EXIT_GENERIC)
    logger = Logger(instance_id)
    level = args.get("level")
    if level is not None and level.lower() not in LEVELS:
        sys.stderr.write(f"Error: Invalid value for logger level: {level}.Possible values: "
                         "[Error, Warning, Info, Debug]\n")
        sys.exit(EXIT_BAD_CONFIG)
    try:
        logger.configure(args.get("log-path"), level, args.get("show-level"),
                         args.get("show-log-origin"))
    except OSError as exc:
        sys.stderr.write(f"Error: Could not initialize logger: {exc}\n")
        sys.exit(EXIT_GENERIC)
    logger.info(f"Running Firecracker v{VERSION}")
    metrics = Metrics()
    try:
        payload_limit = int(args.get("http-api-max-payload-size", DEFAULT_PAYLOAD_LIMIT))
        mmds_limit = int(args.get("mmds-size-limit", payload_limit))
        if "metrics-path" in args:
            metrics.fd = open_nonblock(args["metrics-path"])
    except (OSError, ValueError) as exc:
        logger.error(f"Could not initialize metrics or limits: {exc}")
        sys.exit(EXIT_GENERIC)
    vmm = Vmm(instance_id, logger, metrics, bool(args.get("enable-pci")), mmds_limit)
    if "metrics-path" in args:
        vmm.metrics_cfg = {"metrics_path": args["metrics-path"]}
    if "metadata" in args:
        with open(args["metadata"]) as meta:
            vmm.mmds_data = json.load(meta)
    controller = Controller(vmm, logger, metrics, payload_limit)
    if not args.get("no-api"):
        path = args.get("api-sock", DEFAULT_API_SOCK)
        try:
            serve_api(path, controller)
        except OSError:
            message = f"Failed to open the API socket at: {path}. Check that it is not already used."
            logger.error(message)
            sys.stderr.write(message + "\n")
            finish(None, vmm, logger, EXIT_GENERIC)
    if "config-file" in args:
        try:
            with open(args["config-file"]) as config:
                vmm.configure_from_json(config.read())
        except (OSError, ApiError) as exc:
            text = exc.message if isinstance(exc, ApiError) else str(exc)
            logger.error(f"Configuration for VMM from one single json failed: {text}")
            sys.stderr.write(f"Error: Configuration for VMM from one single json failed: {text}\n")
            finish(None, vmm, logger, EXIT_BAD_CONFIG)
        logger.info("Successfully started microvm that was configured from one single json")
    threading.current_thread().name = "fc_vmm"
    finish(controller, vmm, logger, controller.serve_vmm())


if __name__ == "__main__":
    main(sys.argv[1:])
