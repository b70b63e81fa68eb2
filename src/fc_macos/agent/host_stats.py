"""``GET /v1/host``: the agent machine's CPUs, memory, disk and load, and the
agent process itself (version, pid, uptime), for ``fc-macos dashboard``.

On a Mac the agent machine is the Tart VM, so these are the VM's figures; with
the ``local`` provider they are this machine's. Everything is read from
``/proc`` and ``statvfs`` on each request (cheap, no background task).
``cpu_percent`` is the whole machine's use (0-100, all CPUs together) over the
last interval, like a microVM's (about a second:
:class:`fc_macos.sampling.RecentSamples`); before that (the first request) it is
the average since boot.

The answer (every size in MiB)::

    {"hostname", "arch", "kernel", "cpus", "cpu_percent", "load": [1m, 5m, 15m],
     "uptime_s", "memory": {"total_mib", "used_mib", "available_mib"},
     "disk": {"path", "total_mib", "used_mib", "free_mib"},
     "agent": {"version", "pid", "started_at", "uptime_s"}}

``disk`` is the file system of the agent's state directory, where the
microVMs' disk copies, images and snapshots live.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from fc_macos import __version__
from fc_macos.agent.settings import AgentSettings
from fc_macos.sampling import RecentSamples

_MIB = 1024 * 1024


class MachineCPU:
    """The machine's CPU use over the last interval, from ``/proc/stat``'s ``cpu`` line.

    Not thread-safe (the agent calls it from its event loop only)."""

    def __init__(self, stat_path: Path = Path("/proc/stat")) -> None:
        self.stat_path = stat_path
        self._samples = RecentSamples()  # (busy, total) jiffies

    def _read(self) -> tuple[float, float]:
        for line in self.stat_path.read_text().splitlines():
            if line.startswith("cpu "):
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
                total = sum(values[:8])  # guest time is already counted in user/nice
                return total - idle, total
        raise OSError(f"no 'cpu' line in {self.stat_path}")

    def percent(self) -> float:
        now = time.monotonic()
        busy, total = self._read()
        base = self._samples.add(now, (busy, total))
        if base is not None and total > base[1][1]:
            busy_then, total_then = base[1]
            value = 100.0 * (busy - busy_then) / (total - total_then)
        else:
            value = 100.0 * busy / total if total else 0.0
        return round(max(0.0, min(100.0, value)), 1)


def _meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """``/proc/meminfo`` in KiB by field name."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def _uptime_s() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _agent_uptime_s(machine_uptime_s: float) -> float:
    """How long this process has run (field 22 of /proc/self/stat: its start, in ticks since boot)."""
    raw = Path("/proc/self/stat").read_text()
    start_ticks = int(raw[raw.rindex(")") + 2 :].split()[19])
    return max(0.0, machine_uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


def _mib(value: float) -> float:
    return round(value / _MIB, 1)


def collect(state_dir: Path, cpu: MachineCPU) -> dict[str, Any]:
    """The ``GET /v1/host`` answer for an agent whose state lives in ``state_dir``."""
    uptime = _uptime_s()
    mem = _meminfo()
    total_kib = mem.get("MemTotal", 0)
    available_kib = mem.get("MemAvailable", mem.get("MemFree", 0))
    disk_path = state_dir if state_dir.exists() else Path("/")
    disk = shutil.disk_usage(disk_path)
    agent_uptime = _agent_uptime_s(uptime)
    return {
        "hostname": socket.gethostname(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "cpus": os.cpu_count() or 1,
        "cpu_percent": cpu.percent(),
        "load": [round(v, 2) for v in os.getloadavg()],
        "uptime_s": round(uptime, 1),
        "memory": {
            "total_mib": round(total_kib / 1024, 1),
            "used_mib": round((total_kib - available_kib) / 1024, 1),
            "available_mib": round(available_kib / 1024, 1),
        },
        "disk": {"path": str(disk_path), "total_mib": _mib(disk.total), "used_mib": _mib(disk.used),
                 "free_mib": _mib(disk.free)},
        "agent": {"version": __version__, "pid": os.getpid(), "started_at": round(time.time() - agent_uptime, 3),
                  "uptime_s": round(agent_uptime, 1)},
    }


def handler(settings_key: web.AppKey[AgentSettings]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /v1/host`` handler of an app that keeps its settings under ``settings_key``."""
    cpu = MachineCPU()

    async def host(request: web.Request) -> web.Response:
        return web.json_response(collect(request.app[settings_key].state_dir, cpu))

    return host


def _number(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description}


_SIZES = {"type": "object", "additionalProperties": {"type": "number"}}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hostname", "arch", "kernel", "cpus", "cpu_percent", "load", "uptime_s", "memory", "disk", "agent"],
    "properties": {
        "hostname": {"type": "string"},
        "arch": {"type": "string"},
        "kernel": {"type": "string"},
        "cpus": {"type": "integer", "minimum": 1},
        "cpu_percent": _number("the whole machine's CPU use over the last interval, 0-100"),
        "load": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3,
                 "description": "load average over 1, 5 and 15 minutes"},
        "uptime_s": _number("seconds since the machine booted"),
        "memory": _SIZES | {"required": ["total_mib", "used_mib", "available_mib"]},
        "disk": {"type": "object", "required": ["path", "total_mib", "used_mib", "free_mib"],
                 "description": "the file system of the agent's state directory"},
        "agent": {"type": "object", "required": ["version", "pid", "started_at", "uptime_s"]},
    },
}

#: The OpenAPI operation of ``GET /v1/host`` (listed in :mod:`fc_macos.agent.openapi`).
OPENAPI_OPERATION: dict[str, Any] = {
    "operationId": "hostStats",
    "summary": "the agent machine's CPUs, memory, disk and load, and the agent's version and uptime",
    "responses": {
        "200": {"description": "host facts", "content": {"application/json": {"schema": SCHEMA}}},
        "401": {"description": "missing or wrong token",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    },
}
