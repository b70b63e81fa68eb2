"""Outbound NAT rules: their text for nft and iptables, finding a microVM's rules
again (and dropping the shared table with the last of them), the rules lock, the uplink
and nameserver lookups, and real installs and removals with nft inside a network
namespace made for the test (never in this machine's own namespace: its firewall and
ip_forward stay untouched, and no traffic is sent)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from fc_macos.agent import nat
from fc_macos.agent.network import CommandRunner, Lease
from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import kill_recorded_vmms

REPO = Path(__file__).resolve().parents[2]


def test_nft_script_masquerades_the_guests_block_out_of_the_uplink() -> None:
    script = nat.nft_script(Lease(1), "eth9")
    assert "add table ip fc_macos" in script
    assert "add chain ip fc_macos postrouting { type nat hook postrouting priority 100 ; policy accept ; }" in script
    assert 'add rule ip fc_macos postrouting ip saddr 172.16.0.4/30 oifname "eth9" masquerade comment "fc-macos:fc-tap-1"' in script
    assert 'add rule ip fc_macos forward iifname "fc-tap-1" oifname "eth9" accept comment "fc-macos:fc-tap-1"' in script
    assert 'iifname "eth9" oifname "fc-tap-1" ct state related,established accept' in script


NFT_LISTING = """table ip fc_macos { # handle 7
	chain postrouting { # handle 1
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 172.16.0.0/30 oifname "eth0" masquerade comment "fc-macos:fc-tap-0" # handle 3
		ip saddr 172.16.0.4/30 oifname "eth0" masquerade comment "fc-macos:fc-tap-1" # handle 6
	}

	chain forward { # handle 2
		type filter hook forward priority filter; policy accept;
		iifname "fc-tap-0" oifname "eth0" accept comment "fc-macos:fc-tap-0" # handle 4
		iifname "eth0" oifname "fc-tap-0" ct state established,related accept comment "fc-macos:fc-tap-0" # handle 5
		iifname "fc-tap-10" oifname "eth0" accept comment "fc-macos:fc-tap-10" # handle 8
	}
}
"""


def test_nft_deletions_find_only_that_taps_rules() -> None:
    assert nat.nft_deletions(NFT_LISTING, "fc-tap-0") == [
        "delete rule ip fc_macos postrouting handle 3",
        "delete rule ip fc_macos forward handle 4",
        "delete rule ip fc_macos forward handle 5",
    ]
    assert nat.nft_deletions(NFT_LISTING, "fc-tap-1") == ["delete rule ip fc_macos postrouting handle 6"]
    assert nat.nft_deletions(NFT_LISTING, "fc-tap-2") == []


def test_the_last_networks_removal_deletes_the_table() -> None:
    only_tap_0 = "\n".join(line for line in NFT_LISTING.splitlines()
                           if "fc-tap-1" not in line)  # fmt: skip  (also drops fc-tap-10)
    assert nat.nft_deletions(only_tap_0, "fc-tap-0") == ["delete table ip fc_macos"]
    empty = "table ip fc_macos { # handle 7\n\tchain forward { # handle 2\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n"
    assert nat.nft_deletions(empty, "fc-tap-3") == ["delete table ip fc_macos"]  # an older agent's leftover
    assert len(nat.nft_rules(NFT_LISTING)) == 5


class Recording(CommandRunner):
    """Answers ``nft -a list table`` with a listing and records every command."""

    def __init__(self, listing: str) -> None:
        self.listing = listing
        self.calls: list[tuple[list[str], str | None]] = []

    async def run(self, argv: Sequence[str], *, stdin: str | None = None) -> str:
        self.calls.append((list(argv), stdin))
        return self.listing if "list" in argv else ""


async def test_removal_waits_for_the_rules_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nat, "LOCK", tmp_path / "nat.lock")
    runner = Recording(NFT_LISTING)
    async with nat.rules_lock():  # another create adding its rules
        removal = asyncio.create_task(nat.remove("fc-tap-0", "nft", runner))
        await asyncio.sleep(0.3)
        assert runner.calls == [] and not removal.done()
    await asyncio.wait_for(removal, 10)
    assert [argv for argv, _ in runner.calls] == [["nft", "-a", "list", "table", "ip", "fc_macos"], ["nft", "-f", "-"]]
    assert runner.calls[1][1] == ("delete rule ip fc_macos postrouting handle 3\ndelete rule ip fc_macos forward handle 4\n"
                                  "delete rule ip fc_macos forward handle 5\n")  # fmt: skip


def test_iptables_rules_and_their_deletion() -> None:
    rules = nat.iptables_rules(Lease(0), "ens3")
    assert rules[0] == ["-t", "nat", "-A", "POSTROUTING", "-s", "172.16.0.0/30", "-o", "ens3",
                        "-m", "comment", "--comment", "fc-macos:fc-tap-0", "-j", "MASQUERADE"]  # fmt: skip
    assert rules[1][:6] == ["-I", "FORWARD", "-i", "fc-tap-0", "-o", "ens3"]
    assert "RELATED,ESTABLISHED" in rules[2]
    listing = textwrap.dedent("""\
        -P FORWARD DROP
        -A FORWARD -i fc-tap-0 -o ens3 -m comment --comment fc-macos:fc-tap-0 -j ACCEPT
        -A FORWARD -i fc-tap-01 -o ens3 -m comment --comment fc-macos:fc-tap-01 -j ACCEPT
        -A FORWARD -i docker0 -j ACCEPT
    """)
    assert nat.iptables_deletions(listing, "filter", "fc-tap-0") == [
        ["-t", "filter", "-D", "FORWARD", "-i", "fc-tap-0", "-o", "ens3", "-m", "comment", "--comment",
         "fc-macos:fc-tap-0", "-j", "ACCEPT"],
    ]  # fmt: skip


def test_default_uplink_and_nameservers(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "ens4\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "ens3\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert nat.default_uplink(route) == "ens3"
    route.write_text("Iface\tDestination\tGateway\n")
    assert nat.default_uplink(route) is None
    assert nat.default_uplink(tmp_path / "missing") is None
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.53\nnameserver ::1\nnameserver 9.9.9.9\n")
    assert nat.host_nameservers(resolv) == ["10.0.0.53", "9.9.9.9"]


def test_status_names_the_tool_or_says_why_not() -> None:
    off = nat.status(False)
    assert off["nat"] is None and "--no-nat" in off["hint"]
    on = nat.status(True)
    if shutil.which("nft") or shutil.which("iptables"):
        assert on["nat"] in ("nft", "iptables") and on["hint"] is None
    else:
        assert on["nat"] is None and "apt-get install nftables" in on["hint"]


# --------------------------------------------- a real install, in a private netns


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with a veth "uplink" (its peer stays inside too) and a
    default route through it (nothing is reachable from there), removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2: run the tests as root")
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed: apt-get install nftables (scripts/setup-test-host)")
    name = f"fct-nat-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            "ip link add fct-up0 type veth peer name fct-up1",  # both ends stay in the namespace
            "ip addr add 10.251.0.2/24 dev fct-up0",
            "ip link set fct-up0 up",
            "ip route add default via 10.251.0.1 dev fct-up0",
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


INSTALL_AND_REMOVE = """
import asyncio, json
from pathlib import Path
from fc_macos.agent import nat, network

async def main():
    runner = network.CommandRunner()
    lease, other = network.Lease(5), network.Lease(6)
    await network.create_tap(lease, runner)
    await network.create_tap(other, runner)
    setup = await nat.install(lease, "nft", runner)
    await nat.install(other, "nft", runner)
    installed = await runner.run(["nft", "-a", "list", "table", "ip", "fc_macos"])
    await nat.remove(lease.tap, "nft", runner)
    await nat.remove(lease.tap, "nft", runner)  # idempotent
    left = await runner.run(["nft", "-a", "list", "table", "ip", "fc_macos"])
    await nat.remove(other.tap, "nft", runner)  # the last network: the table goes
    tables = await runner.run(["nft", "list", "tables"])
    await nat.remove(other.tap, "nft", runner)  # idempotent without the table too
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    for each in (lease, other):
        await network.delete_tap(each.tap, runner)
    print(json.dumps({"uplink": setup.uplink, "installed": installed, "forward": forward, "left": left,
                      "tables": tables, "tap_left": network.tap_exists(lease.tap)}))

asyncio.run(main())
"""


def host_firewall_and_forwarding() -> tuple[str, str]:
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return ruleset, Path("/proc/sys/net/ipv4/ip_forward").read_text()


def test_nft_install_and_removal_inside_a_namespace(netns: str) -> None:
    host_before = host_firewall_and_forwarding()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", INSTALL_AND_REMOVE],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["uplink"] == "fct-up0"  # the namespace's default route
    assert 'ip saddr 172.16.0.20/30 oifname "fct-up0" masquerade comment "fc-macos:fc-tap-5"' in result["installed"]
    assert 'iifname "fc-tap-5" oifname "fct-up0" accept' in result["installed"]
    assert result["forward"] == "1"  # left on after the last network too (README: why, and how to reset)
    assert "fc-tap-5" not in result["left"] and "fc-tap-6" in result["left"]  # shared table stays for tap 6
    assert "fc_macos" not in result["tables"]
    assert result["tap_left"] is False
    assert host_firewall_and_forwarding() == host_before


AGENT_IN_NAMESPACE = """
import asyncio, json, sys
from pathlib import Path
from fc_macos.agent.manager import MicroVMManager
from fc_macos.agent.settings import AgentSettings
from fc_macos.agent.wire import MicroVMSpec
from fc_macos.errors import BootError

async def main(state_dir, vmm, image_dir):
    settings = AgentSettings(token="t", state_dir=Path(state_dir), firecracker_bin=vmm,
                             image_dirs=(Path(image_dir),), nat=True)
    manager = MicroVMManager(settings)
    await manager.start()
    out = {}
    info = await manager.create(MicroVMSpec(name="natted", network=True, start=False))
    out["network"], out["boot_args"] = info.network, info.spec["boot_args"]
    out["installed"] = await manager.net_runner.run(["nft", "-a", "list", "table", "ip", "fc_macos"])
    await manager.delete("natted", force=True)
    out["after_delete"] = await manager.net_runner.run(["nft", "list", "ruleset"])
    try:  # no ELF kernel: InstanceStart fails after attach_network installed the rules
        await manager.create(MicroVMSpec(name="bad", network=True))
    except BootError as exc:
        out["failed_step"] = exc.step
    out["after_failure"] = await manager.net_runner.run(["nft", "list", "ruleset"])
    await manager.close()
    print(json.dumps(out))

asyncio.run(main(*sys.argv[1:]))
"""


def test_the_agent_installs_nat_for_a_microvm_and_removes_it_inside_a_namespace(
    netns: str, settings: AgentSettings, image_dir: Path
) -> None:
    """The manager with nat on, in a namespace of its own: rules follow the microVM's
    lifetime (delete, and a failed boot's cleanup)."""
    host_before = host_firewall_and_forwarding()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", AGENT_IN_NAMESPACE,
             str(settings.state_dir), settings.firecracker_bin, str(image_dir)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
    finally:
        kill_recorded_vmms(settings.state_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    net = out["network"]
    assert net["nat"] == "nft" and net["uplink"] == "fct-up0" and net["nat_hint"] is None
    block = ipaddress.ip_network(f"{net['guest_ip']}/30", strict=False)
    assert f'ip saddr {block} oifname "fct-up0" masquerade comment "fc-macos:{net["tap"]}"' in out["installed"]
    dns = nat.host_nameservers()
    assert f"ip={net['guest_ip']}::{net['host_ip']}:255.255.255.252::eth0:off" in out["boot_args"]
    if dns:
        assert out["boot_args"].endswith(":off:" + ":".join(dns))
    assert net["tap"] not in out["after_delete"] and "fc_macos" not in out["after_delete"]  # no table left
    assert out["failed_step"] == "start_instance"
    assert "fc_macos" not in out["after_failure"]
    assert host_firewall_and_forwarding() == host_before
