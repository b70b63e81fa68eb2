"""What the dashboard shows, as plain data and text: no Textual, no I/O.

:class:`Snapshot` is one look at the Linux VM (the provider's
:class:`~fc_macos.providers.base.VMStatus`), the agent machine
(``GET /v1/host``), the agent and its microVMs. The functions below turn it
into the panels' lines and the table's rows, so that the screen is a pure
function of a snapshot (which is what the snapshot test relies on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fc_macos.agent.wire import MicroVMInfo
from fc_macos.cli.common import format_duration
from fc_macos.cli.microvm import _uptime
from fc_macos.providers.base import VMStatus

COLUMNS = ("NAME", "STATE", "VCPUS", "MEMORY", "CPU %", "RSS", "UPTIME", "ADDRESS", "PORTS", "GUEST AGENT")
#: How old the last good answer may be before the screen calls it stale.
STALE_AFTER_S = 2.5


@dataclass(frozen=True)
class AgentFacts:
    """The agent as the last poll saw it. ``error``/``hint`` when it did not answer."""

    url: str | None
    reachable: bool
    version: str | None = None
    uptime_s: float | None = None
    error: str | None = None
    hint: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """One look at everything. ``microvms`` and ``host`` are the last ones the
    agent gave (kept while it does not answer); ``updated_at`` is when
    (``time.monotonic()``), None before the first answer."""

    vm: VMStatus | None
    agent: AgentFacts
    host: dict[str, Any] | None = None
    microvms: tuple[MicroVMInfo, ...] = ()
    updated_at: float | None = None
    notes: tuple[str, ...] = field(default=())


def _used(part: dict[str, Any] | None) -> str:
    """``1.2 / 3.8 GiB`` from ``{"used_mib", "total_mib"}``."""
    used, total = (part or {}).get("used_mib"), (part or {}).get("total_mib")
    if not isinstance(used, (int, float)) or not isinstance(total, (int, float)) or total <= 0:
        return "-"
    return f"{used / 1024:.1f} / {total / 1024:.1f} GiB ({100 * used / total:.0f}%)"


def vm_lines(snap: Snapshot) -> list[str]:
    """The Linux VM panel: name, state, address, CPUs, memory and disk used, load."""
    vm, host = snap.vm, snap.host or {}
    cpus = host.get("cpus") or (vm.details.get("cpus") if vm else None)
    load = host.get("load")
    load_text = " ".join(f"{v:.2f}" for v in load) if isinstance(load, list) else "-"
    cpu_now = host.get("cpu_percent")
    lines = [
        f"name     {vm.name if vm else '?'} ({vm.provider if vm else '?'})",
        f"state    {vm.state if vm else 'checking...'}",
        f"address  {(vm.address if vm else None) or '-'}",
        f"CPUs     {cpus or '-'}" + (f"   busy {cpu_now:.0f}%" if isinstance(cpu_now, (int, float)) else ""),
        f"memory   {_used(host.get('memory'))}",
        f"disk     {_used(host.get('disk'))}",
        f"load     {load_text}",
    ]
    return lines


def agent_lines(snap: Snapshot, now: float | None = None) -> list[str]:
    """The agent panel: reachable or not (and why), version, uptime, last update."""
    agent = snap.agent
    now = time.monotonic() if now is None else now
    lines = [f"url      {agent.url or '- (not set up)'}",
             "status   reachable" if agent.reachable else "status   UNREACHABLE (why: below)",
             f"version  {agent.version or '-'}"]
    lines.append(f"uptime   {format_duration(agent.uptime_s)}")
    if snap.updated_at is None and not agent.reachable:
        lines.append("data     none yet")
    elif (age := stale_for(snap, now)) is not None:
        lines.append(f"data     from {format_duration(age)} ago (stale)")
    lines.extend(snap.notes)
    return lines


def alert_lines(snap: Snapshot) -> list[str]:
    """Why the agent does not answer and what to do (empty while it answers)."""
    agent = snap.agent
    if agent.reachable:
        return []
    lines = [f"fc-agent UNREACHABLE: {agent.error or 'no answer'}"]
    if agent.hint:
        lines.append(f"Hint: {agent.hint}")
    return lines


def stale_for(snap: Snapshot, now: float) -> float | None:
    """How old the shown data is, when older than :data:`STALE_AFTER_S` (else None)."""
    if snap.updated_at is None:
        return None
    age = now - snap.updated_at
    return age if age > STALE_AFTER_S else None


def guest_address(info: MicroVMInfo) -> str:
    net = info.network or {}
    return str(net.get("guest_ip") or "-")


def ports_text(info: MicroVMInfo) -> str:
    """Published ports (``MicroVMInfo.ports`` where the agent has them) as ``8080->80``."""
    ports = getattr(info, "ports", None)
    if not ports:
        return "-"
    parts = []
    for port in ports:
        if isinstance(port, dict):
            addr = port.get("host_addr")
            prefix = f"{addr}:" if addr and addr not in ("0.0.0.0", "::") else ""
            parts.append(f"{prefix}{port.get('host_port')}->{port.get('guest_port')}")
    return ",".join(parts) or "-"


def guest_agent_text(info: MicroVMInfo) -> str:
    """The guest agent's state (``MicroVMInfo.guest_agent`` where the agent has it)."""
    guest = getattr(info, "guest_agent", None)
    if not isinstance(guest, dict) or not guest.get("state"):
        return "-"
    state = str(guest["state"])
    if state == "ready" and guest.get("version"):
        return f"ready {guest['version']}"
    return state


def row(info: MicroVMInfo) -> tuple[str, ...]:
    """One table row, in :data:`COLUMNS` order."""
    cpu = f"{info.cpu_percent:.1f}" if info.cpu_percent is not None else "-"
    rss = f"{info.memory_rss_mib:.0f} MiB" if info.memory_rss_mib is not None else "-"
    return (info.name, info.state, str(info.vcpus), f"{info.memory_mib} MiB", cpu, rss,
            format_duration(_uptime(info)), guest_address(info), ports_text(info), guest_agent_text(info))


def visible(infos: tuple[MicroVMInfo, ...], text: str) -> list[MicroVMInfo]:
    """The microVMs a filter shows: ``text`` in the name or equal to the state (case-insensitive)."""
    needle = text.strip().lower()
    if not needle:
        return list(infos)
    return [i for i in infos if needle in i.name.lower() or needle == i.state.lower()]
