"""Outbound NAT for microVM networks, best effort (Firecracker's network-setup recipe).

When the agent's ``nat`` setting is on and ``nft`` (preferred) or ``iptables`` is
installed, each microVM's /30 is masqueraded out of the default-route interface
(the *uplink*) and forwarding between its TAP and the uplink is accepted;
``net.ipv4.ip_forward`` is set to 1 (and left on: the agent cannot know whether
something else on the machine, a container runtime or a router, has come to rely on
it since; ``sysctl -w net.ipv4.ip_forward=0`` resets it, and a reboot does too).
With nft the rules live in one shared table ``ip fc_macos`` (chains ``postrouting``
and ``forward``), which :func:`remove` deletes with the last rule in it (of any
fc-agent on the machine); with iptables they are added to the ``nat POSTROUTING``
and ``filter FORWARD`` chains. Every rule carries the comment ``fc-macos:<tap>``, so
:func:`remove` finds a microVM's rules without knowing the uplink it was set up with
(also after an agent crash half-way through a boot). Adding and removing hold a lock
file (:data:`LOCK`), so a removal that drops the table never races a rule being added.

Without either tool, or without a default route, the microVM still has its
link to the agent's machine; :func:`status` says why NAT is unavailable.
Rule text is built by pure functions (:func:`nft_script`, :func:`iptables_rules`)
and applied through :class:`~fc_macos.agent.network.CommandRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import shlex
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fc_macos.agent.network import CommandRunner, Lease
from fc_macos.errors import NetworkError

log = logging.getLogger("fc_agent.nat")

TABLE = "fc_macos"
TOOLS = ("nft", "iptables")
PROC_ROUTE = Path("/proc/net/route")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
RESOLV_CONF = Path("/etc/resolv.conf")
#: Held while rules are added or removed, by every fc-agent on the machine (NAT needs root).
LOCK = Path("/run/lock/fc-macos-nat.lock")
INSTALL_HINT = "install nftables on the agent's machine ('apt-get install nftables') and restart fc-agent"
OFF_HINT = "NAT is off (fc-agent --no-nat); start fc-agent with --nat for guests to reach other networks"


def tag(tap: str) -> str:
    """The comment that marks a microVM's rules."""
    return f"fc-macos:{tap}"


def find_tool(enabled: bool) -> str | None:
    """``"nft"`` or ``"iptables"`` (the first installed) when NAT is ``enabled``, else None."""
    if not enabled:
        return None
    return next((tool for tool in TOOLS if shutil.which(tool)), None)


def status(enabled: bool) -> dict[str, Any]:
    """What ``GET /v1/info`` reports: ``{"nat": tool | None, "hint": why not | None}``."""
    tool = find_tool(enabled)
    if tool is not None:
        return {"nat": tool, "hint": None}
    return {"nat": None, "hint": OFF_HINT if not enabled else f"neither nft nor iptables is installed: {INSTALL_HINT}"}


def default_uplink(route_file: Path = PROC_ROUTE) -> str | None:
    """The interface of the IPv4 default route (from ``/proc/net/route``), or None."""
    try:
        lines = route_file.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


@dataclass(frozen=True)
class NatSetup:
    """NAT for one lease: the tool that installed it and the uplink it uses."""

    tool: str
    uplink: str


def nft_script(lease: Lease, uplink: str) -> str:
    """The ``nft -f -`` input that adds the shared table/chains (idempotent ``add``)
    and the lease's three rules."""
    t = f'comment "{tag(lease.tap)}"'
    return "\n".join(
        [
            f"add table ip {TABLE}",
            f"add chain ip {TABLE} postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}",
            f"add chain ip {TABLE} forward {{ type filter hook forward priority 0 ; policy accept ; }}",
            f'add rule ip {TABLE} postrouting ip saddr {lease.block} oifname "{uplink}" masquerade {t}',
            f'add rule ip {TABLE} forward iifname "{lease.tap}" oifname "{uplink}" accept {t}',
            f'add rule ip {TABLE} forward iifname "{uplink}" oifname "{lease.tap}" ct state related,established accept {t}',
        ]
    ) + "\n"


def nft_rules(listing: str) -> list[tuple[str, str, str]]:
    """``(chain, handle, rule text)`` for every rule in the output of
    ``nft -a list table ip fc_macos``."""
    chain = None
    out = []
    for line in listing.splitlines():
        started = re.match(r"\s*chain (\S+) \{", line)
        if started:
            chain = started.group(1)
            continue
        if re.match(r"\s*}", line):
            chain = None
            continue
        handle = re.search(r"# handle (\d+)\s*$", line)
        if chain and handle:
            out.append((chain, handle.group(1), line.strip()))
    return out


def nft_deletions(listing: str, tap: str) -> list[str]:
    """The ``nft -f`` commands that remove the rules marked for ``tap`` from the listing
    (``nft -a list table ip fc_macos``): ``delete rule`` for each, or ``delete table``
    when no other rule is left in it (the last microVM network is gone)."""
    marker = f'comment "{tag(tap)}"'
    rules = nft_rules(listing)
    mine = [(chain, handle) for chain, handle, text in rules if marker in text]
    if len(mine) == len(rules):  # also an empty table an older agent left behind
        return [f"delete table ip {TABLE}"]
    return [f"delete rule ip {TABLE} {chain} handle {handle}" for chain, handle in mine]


def iptables_rules(lease: Lease, uplink: str) -> list[list[str]]:
    """The lease's iptables rules as ``[-t table] -A|-I chain ...`` argument lists."""
    comment = ["-m", "comment", "--comment", tag(lease.tap)]
    return [
        ["-t", "nat", "-A", "POSTROUTING", "-s", str(lease.block), "-o", uplink, *comment, "-j", "MASQUERADE"],
        ["-I", "FORWARD", "-i", lease.tap, "-o", uplink, *comment, "-j", "ACCEPT"],
        ["-I", "FORWARD", "-i", uplink, "-o", lease.tap, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
         *comment, "-j", "ACCEPT"],
    ]  # fmt: skip


def iptables_deletions(listing: str, table: str, tap: str) -> list[list[str]]:
    """``-D`` argument lists for the rules marked for ``tap`` in ``iptables -t TABLE -S``."""
    out = []
    for line in listing.splitlines():
        words = shlex.split(line)
        if len(words) > 2 and words[0] == "-A" and tag(tap) in words:
            out.append(["-t", table, "-D", *words[1:]])
    return out


@contextlib.asynccontextmanager
async def rules_lock(path: Path | None = None) -> AsyncIterator[None]:
    """Hold the flock of ``path`` (default :data:`LOCK`), polled so that a cancelled wait
    leaves nothing behind. When the lock file cannot be opened the rules are changed
    without it (logged)."""
    path = path or LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.warning("no NAT lock (%s): %s", path, exc.strerror or exc)
        yield
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def enable_forwarding(path: Path = IP_FORWARD) -> None:
    try:
        if path.read_text().strip() != "1":
            path.write_text("1\n")
            log.info("enabled IPv4 forwarding (%s)", path)
    except OSError as exc:
        raise NetworkError(
            f"cannot enable IPv4 forwarding ({path}): {exc.strerror or exc}",
            hint="run fc-agent as root, or start it with --no-nat",
        ) from exc


async def install(lease: Lease, tool: str, runner: CommandRunner, *, uplink: str | None = None) -> NatSetup:
    """Enable forwarding and add the lease's NAT rules with ``tool`` out of
    ``uplink`` (default: the default-route interface). NetworkError when there
    is no default route or a command fails; rules added before the failure are
    removed again."""
    uplink = uplink or default_uplink()
    if uplink is None:
        raise NetworkError(
            "the agent's machine has no IPv4 default route to masquerade guests out of",
            hint="give the machine a default route (then create the microVM again), or start fc-agent with --no-nat",
        )
    enable_forwarding()
    setup = NatSetup(tool=tool, uplink=uplink)
    try:
        async with rules_lock():
            if tool == "nft":
                await runner.run(["nft", "-f", "-"], stdin=nft_script(lease, uplink))
            else:
                for rule in iptables_rules(lease, uplink):
                    await runner.run(["iptables", "-w", *rule])
    except BaseException:
        await remove(lease.tap, tool, runner)
        raise
    log.info("NAT (%s) for %s (%s) out of %s", tool, lease.tap, lease.block, uplink)
    return setup


async def try_install(lease: Lease, enabled: bool, runner: CommandRunner) -> tuple[NatSetup | None, str | None]:
    """Best effort: ``(setup, None)`` when NAT is installed for ``lease``, else
    ``(None, why not and what to do)``. Never raises NetworkError."""
    tool = find_tool(enabled)
    if tool is None:
        return None, status(enabled)["hint"]
    try:
        return await install(lease, tool, runner), None
    except NetworkError as exc:
        log.warning("no NAT for %s: %s", lease.tap, exc.message)
        return None, f"{exc.message} ({exc.hint})"


def host_nameservers(resolv_conf: Path = RESOLV_CONF) -> list[str]:
    """The IPv4 nameservers of the agent's machine a guest behind NAT can use
    (loopback ones, e.g. systemd-resolved's 127.0.0.53, are left out)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.IPv4Address(words[1])
            except ValueError:
                continue
            if not address.is_loopback and not address.is_unspecified:
                found.append(str(address))
    return found[:2]


async def remove(tap: str, tool: str, runner: CommandRunner) -> None:
    """Remove every rule marked for ``tap``, and with nft the shared table once no rule is
    left in it. Idempotent; never raises (failures are logged: the caller is cleaning up).
    ip_forward stays on (see the module's docstring)."""
    try:
        async with rules_lock():
            if tool == "nft":
                try:
                    listing = await runner.run(["nft", "-a", "list", "table", "ip", TABLE])
                except NetworkError:
                    return  # no table: no rules
                deletions = nft_deletions(listing, tap)
                if deletions:
                    await runner.run(["nft", "-f", "-"], stdin="\n".join(deletions) + "\n")
                if deletions[:1] == [f"delete table ip {TABLE}"]:
                    log.info("removed the nft table ip %s with the last microVM network", TABLE)
            else:
                for table in ("nat", "filter"):
                    listing = await runner.run(["iptables", "-w", "-t", table, "-S"])
                    for rule in iptables_deletions(listing, table, tap):
                        await runner.run(["iptables", "-w", *rule])
    except NetworkError as exc:
        log.warning("cannot remove the NAT rules of %s: %s", tap, exc.message)


__all__ = [
    "NatSetup", "default_uplink", "find_tool", "host_nameservers", "install", "iptables_rules", "nft_script", "remove",
    "status", "try_install",
]  # fmt: skip
