"""Guest networking: one TAP device and one /30 per microVM (Firecracker's recipe).

The plan follows Firecracker's network-setup docs (see docs/design.md): microVM
network number ``N`` (0-based) owns ``172.16.0.0/16``'s ``N``-th /30, so

    TAP (host side)  172.16.[(4N+1)/256].[(4N+1)%256]/30   on device ``fc-tap-N``
    guest (eth0)     172.16.[(4N+2)/256].[(4N+2)%256]      MAC 06:00:<guest IP as 4 hex bytes>

and the guest learns its address from the kernel command line
``ip=<guest>::<tap>:255.255.255.252::eth0:off[:<dns>]`` (the kernel itself with
CONFIG_IP_PNP, else the rootfs ``/init``). A :class:`Lease` is that plan for one
``N``; the manager keeps leases in the microVM's record and hands out the
lowest free ``N`` whose TAP does not exist yet (other agents on the same machine
use the same names). The TAP is created with ``ip tuntap add`` through a
:class:`CommandRunner` (the process boundary; tests give their own) and removed
with ``ip link del``. Outbound NAT lives in :mod:`fc_macos.agent.nat`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fc_macos.errors import ConflictError, NetworkError

log = logging.getLogger("fc_agent.network")

SUBNET = ipaddress.IPv4Network("172.16.0.0/16")
#: /30 blocks in SUBNET: N runs from 0 to MAX_INDEX.
MAX_INDEX = SUBNET.num_addresses // 4 - 1
NETMASK = "255.255.255.252"
PREFIX_LEN = 30
TAP_PREFIX = "fc-tap-"  # fc-tap-16383: 12 characters, under Linux's 15
GUEST_IFACE = "eth0"
SYS_CLASS_NET = Path("/sys/class/net")
ROOT_HINT = "creating TAP devices needs root or CAP_NET_ADMIN: run fc-agent as root"


@dataclass(frozen=True)
class Lease:
    """Network number ``index`` of the plan: its TAP name, addresses and MAC."""

    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index <= MAX_INDEX:
            raise ValueError(f"network index {self.index} is outside 0..{MAX_INDEX}")

    @property
    def tap(self) -> str:
        return f"{TAP_PREFIX}{self.index}"

    @property
    def block(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((int(SUBNET.network_address) + 4 * self.index, PREFIX_LEN))

    @property
    def host_ip(self) -> str:
        return str(self.block.network_address + 1)

    @property
    def guest_ip(self) -> str:
        return str(self.block.network_address + 2)

    @property
    def mac(self) -> str:
        """``06:00:`` then the guest IP's four bytes (Firecracker's fcnet-setup.sh convention)."""
        octets = ipaddress.IPv4Address(self.guest_ip).packed
        return "06:00:" + ":".join(f"{b:02X}" for b in octets)

    def boot_arg(self, nameservers: Sequence[str] = ()) -> str:
        """The kernel's ``ip=`` parameter for the guest (up to two DNS servers after ``off``)."""
        fields = [self.guest_ip, "", self.host_ip, NETMASK, "", GUEST_IFACE, "off", *list(nameservers)[:2]]
        return "ip=" + ":".join(fields)

    def to_record(self) -> dict[str, Any]:
        """What the microVM record and MicroVMInfo.network carry (NAT fields are added by the boot step)."""
        return {
            "index": self.index,
            "tap": self.tap,
            "host_ip": self.host_ip,
            "guest_ip": self.guest_ip,
            "mac": self.mac,
            "netmask": NETMASK,
            "nat": None,
            "uplink": None,
            "nat_hint": None,
        }

    @classmethod
    def from_record(cls, record: Any) -> Lease | None:
        """The lease in a microVM record's ``network`` value (None when absent or malformed)."""
        if not isinstance(record, dict) or not isinstance(record.get("index"), int):
            return None
        try:
            return cls(record["index"])
        except ValueError:
            return None


@dataclass
class GuestNetwork:
    """One microVM's network while it boots: its lease, the runner for host
    commands and ``record``, what the microVM record and ``MicroVMInfo.network`` keep
    (the boot step fills in the NAT fields)."""

    lease: Lease
    runner: CommandRunner = field(default_factory=lambda: CommandRunner())
    record: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.record = self.lease.to_record()


def tap_exists(name: str) -> bool:
    return (SYS_CLASS_NET / name).exists()


def allocate(used: Iterable[int], *, exists: Callable[[str], bool] = tap_exists) -> Lease:
    """The lowest network number not in ``used`` whose TAP device does not exist
    (so that agents with different state directories do not collide).
    ConflictError (409 ``no_free_network``) when all of them are taken."""
    taken = set(used)
    for index in range(MAX_INDEX + 1):
        if index not in taken and not exists(f"{TAP_PREFIX}{index}"):
            return Lease(index)
    raise ConflictError(
        f"no free /30 left in {SUBNET} for another microVM network",
        hint="remove microVMs you no longer need ('fc-macos microvm rm --name NAME')",
        code="no_free_network",
    )


def with_boot_arg(boot_args: str, lease: Lease, nameservers: Sequence[str] = ()) -> str:
    """``boot_args`` plus the lease's ``ip=`` parameter, unless the user gave one."""
    if any(arg.startswith("ip=") for arg in boot_args.split()):
        return boot_args
    return f"{boot_args} {lease.boot_arg(nameservers)}".strip()


class CommandRunner:
    """Runs the host's network commands (``ip``, ``nft``, ``iptables``); the process
    boundary of this module, so tests can give a recording runner instead."""

    async def run(self, argv: Sequence[str], *, stdin: str | None = None) -> str:
        """Run ``argv`` and return its stdout; NetworkError (with a hint) on failure."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate(None if stdin is None else stdin.encode())
        except FileNotFoundError as exc:
            raise NetworkError(
                f"'{argv[0]}' is not installed on the agent's machine",
                hint="install iproute2 ('apt-get install iproute2')" if argv[0] == "ip" else f"install {argv[0]}",
            ) from exc
        except OSError as exc:
            raise NetworkError(f"cannot run {argv[0]}: {exc}", hint="see fc-agent's log") from exc
        if proc.returncode != 0:
            text = (err or out).decode(errors="replace").strip()
            raise NetworkError(f"'{' '.join(argv)}' failed: {text}", hint=failure_hint(text))
        return out.decode(errors="replace")


def failure_hint(stderr: str) -> str:
    lowered = stderr.lower()
    if "not permitted" in lowered or "permission denied" in lowered:
        return ROOT_HINT
    if "/dev/net/tun" in lowered or "no such device" in lowered:
        return "the kernel needs TUN/TAP support: load it with 'modprobe tun'"
    return "see fc-agent's log, and 'ip link' / 'ip addr' on the agent's machine"


async def create_tap(lease: Lease, runner: CommandRunner) -> None:
    """Create the lease's TAP device, give it the host address and bring it up.
    On failure nothing of it remains. Not idempotent (a second call fails)."""
    if tap_exists(lease.tap):
        raise NetworkError(
            f"the TAP device {lease.tap} exists already",
            hint=f"another microVM or program uses it; remove it with 'ip link del {lease.tap}' if it is a leftover",
        )
    await runner.run(["ip", "tuntap", "add", "dev", lease.tap, "mode", "tap"])
    try:
        await runner.run(["ip", "addr", "add", f"{lease.host_ip}/{PREFIX_LEN}", "dev", lease.tap])
        await runner.run(["ip", "link", "set", "dev", lease.tap, "up"])
    except BaseException:
        await delete_tap(lease.tap, runner)
        raise
    log.info("TAP %s up with %s/%d (guest %s)", lease.tap, lease.host_ip, PREFIX_LEN, lease.guest_ip)


async def delete_tap(name: str, runner: CommandRunner) -> None:
    """Remove TAP device ``name``; a device that is already gone is fine. Never raises
    (a failure is logged: the caller is cleaning up)."""
    if not tap_exists(name):
        return
    try:
        await runner.run(["ip", "link", "del", "dev", name])
    except NetworkError as exc:
        log.warning("cannot remove TAP %s: %s (%s)", name, exc.message, exc.hint)


__all__ = [
    "CommandRunner",
    "GUEST_IFACE",
    "GuestNetwork",
    "Lease",
    "MAX_INDEX",
    "NETMASK",
    "SUBNET",
    "TAP_PREFIX",
    "allocate",
    "create_tap",
    "delete_tap",
    "tap_exists",
    "with_boot_arg",
]
