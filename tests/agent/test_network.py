"""microVM networks: the /30 plan, MAC and ip= derivation, allocation, the command
runner's errors, and (as root) real TAP devices through the agent: a lease that
survives an agent restart, is reused after delete, and a failed boot that leaves
no TAP. The agent runs with NAT off (this machine's firewall is never touched)."""

from __future__ import annotations

import json
import os
import subprocess

import logging

import pytest

from fc_macos.agent.network import (
    MAX_INDEX,
    CommandRunner,
    Lease,
    allocate,
    tap_exists,
    with_boot_arg,
)
from fc_macos.agent.settings import AgentSettings
from fc_macos.errors import ConflictError, NetworkError
from tests.helpers.agent import AUTH, kill_recorded_vmms, needs_net_admin, serve


def test_lease_follows_firecrackers_formula() -> None:
    first = Lease(0)
    assert (first.tap, first.host_ip, first.guest_ip, first.mac) == ("fc-tap-0", "172.16.0.1", "172.16.0.2", "06:00:AC:10:00:02")
    assert str(first.block) == "172.16.0.0/30"
    # N=64: 4N+1 = 257 -> 172.16.1.1
    n64 = Lease(64)
    assert (n64.host_ip, n64.guest_ip, n64.mac) == ("172.16.1.1", "172.16.1.2", "06:00:AC:10:01:02")
    last = Lease(MAX_INDEX)
    assert (last.host_ip, last.guest_ip) == ("172.16.255.253", "172.16.255.254")
    assert len(last.tap) <= 15  # Linux's interface name limit
    with pytest.raises(ValueError):
        Lease(MAX_INDEX + 1)


def test_boot_arg_and_its_insertion() -> None:
    lease = Lease(1)
    assert lease.boot_arg() == "ip=172.16.0.6::172.16.0.5:255.255.255.252::eth0:off"
    assert lease.boot_arg(["10.0.0.53", "10.0.0.54", "10.0.0.55"]).endswith(":eth0:off:10.0.0.53:10.0.0.54")
    assert with_boot_arg("console=ttyS0", lease) == "console=ttyS0 ip=172.16.0.6::172.16.0.5:255.255.255.252::eth0:off"
    mine = "console=ttyS0 ip=10.1.1.2::10.1.1.1:255.255.255.0::eth0:off"
    assert with_boot_arg(mine, lease) == mine  # the user's own ip= wins


def test_record_round_trip() -> None:
    record = Lease(7).to_record()
    assert record["tap"] == "fc-tap-7" and record["nat"] is None
    assert Lease.from_record(json.loads(json.dumps(record))) == Lease(7)
    assert Lease.from_record(None) is None
    assert Lease.from_record({"index": "7"}) is None
    assert Lease.from_record({"index": MAX_INDEX + 1}) is None


def test_allocate_takes_the_lowest_free_number_whose_tap_is_absent() -> None:
    present = {"fc-tap-1"}
    assert allocate([], exists=present.__contains__) == Lease(0)
    assert allocate([0], exists=present.__contains__) == Lease(2)  # fc-tap-1 belongs to someone else
    assert allocate([0, 2, 3], exists=present.__contains__) == Lease(4)
    assert allocate([0, 2, 3], exists=lambda name: False) == Lease(1)
    with pytest.raises(ConflictError) as full:
        allocate(range(MAX_INDEX + 1), exists=lambda name: False)
    assert full.value.code == "no_free_network" and "microvm rm" in (full.value.hint or "")


async def test_runner_turns_failures_into_network_errors_with_hints() -> None:
    runner = CommandRunner()
    assert await runner.run(["sh", "-c", "cat"], stdin="fed\n") == "fed\n"
    with pytest.raises(NetworkError) as denied:
        await runner.run(["sh", "-c", "echo 'ioctl(TUNSETIFF): Operation not permitted' >&2; exit 1"])
    assert "Operation not permitted" in denied.value.message
    assert denied.value.hint == "creating TAP devices needs root or CAP_NET_ADMIN: run fc-agent as root"
    with pytest.raises(NetworkError) as missing:
        await runner.run(["fct-no-such-program"])
    assert "not installed" in missing.value.message


# ------------------------------------------------------------ real TAPs (root)

def fc_taps() -> set[str]:
    return {name for name in os.listdir("/sys/class/net") if name.startswith("fc-tap-")}


def tap_address(name: str) -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", name], capture_output=True, text=True, check=True)
    return out.stdout.split()[3]


def remove_taps(names: set[str]) -> None:
    for name in names:
        subprocess.run(["ip", "link", "del", "dev", name], capture_output=True, check=False)


@needs_net_admin
async def test_lease_survives_an_agent_restart_and_is_reused_after_delete(settings: AgentSettings) -> None:
    """Unstarted microVMs (start=false) get their TAP and eth0 like booted ones."""
    before = fc_taps()
    client = await serve(settings)
    try:
        resp = await client.post("/v1/microvms", json={"name": "n1", "network": True, "start": False}, headers=AUTH)
        n1 = await resp.json()
        assert resp.status == 201, n1
        net = n1["network"]
        assert tap_exists(net["tap"]) and tap_address(net["tap"]) == f"{net['host_ip']}/30"
        assert net["nat"] is None and "--no-nat" in net["nat_hint"]
        assert f"ip={net['guest_ip']}::{net['host_ip']}:255.255.255.252::eth0:off" in n1["spec"]["boot_args"]
        config = await (await client.get("/v1/microvms/n1/firecracker/vm/config", headers=AUTH)).json()
        assert config["network-interfaces"][0]["host_dev_name"] == net["tap"]
        assert config["network-interfaces"][0]["guest_mac"] == net["mac"]
        assert "ip=" in config["boot-source"]["boot_args"]

        await client.close()  # the agent goes away; the microVM and its TAP stay
        assert tap_exists(net["tap"])
        client = await serve(settings)
        again = await (await client.get("/v1/microvms/n1", headers=AUTH)).json()
        assert again["state"] == "created" and again["network"] == net
        resp = await client.post("/v1/microvms", json={"name": "n2", "network": True, "start": False}, headers=AUTH)
        n2 = (await resp.json())["network"]
        assert n2["index"] != net["index"] and n2["tap"] != net["tap"]

        assert (await client.delete("/v1/microvms/n1?force=true", headers=AUTH)).status == 204
        assert not tap_exists(net["tap"])
        resp = await client.post("/v1/microvms", json={"name": "n3", "network": True, "start": False}, headers=AUTH)
        assert (await resp.json())["network"]["index"] == net["index"]  # the freed /30 is the lowest again
        for name in ("n2", "n3"):
            assert (await client.delete(f"/v1/microvms/{name}?force=true", headers=AUTH)).status == 204
        assert fc_taps() - before == set()
    finally:
        await client.close()
        kill_recorded_vmms(settings.state_dir)
        remove_taps(fc_taps() - before)


@needs_net_admin
async def test_a_failed_boot_leaves_no_tap(settings: AgentSettings, caplog: pytest.LogCaptureFixture) -> None:
    """The settings' vmlinux is no ELF kernel: InstanceStart fails after the TAP was made."""
    caplog.set_level(logging.INFO, logger="fc_agent.network")
    before = fc_taps()
    client = await serve(settings)
    try:
        resp = await client.post("/v1/microvms", json={"name": "bad", "network": True}, headers=AUTH)
        body = await resp.json()
        assert resp.status == 422 and body["step"] == "start_instance", body
        made = [r.getMessage() for r in caplog.records if r.name == "fc_agent.network" and "fc-tap-" in r.getMessage()]
        assert made, "attach_network should have created a TAP before start_instance failed"
        assert fc_taps() == before
        assert (await (await client.get("/v1/microvms", headers=AUTH)).json()) == {"microvms": []}
    finally:
        await client.close()
        kill_recorded_vmms(settings.state_dir)
        remove_taps(fc_taps() - before)


async def test_info_says_nat_is_off(settings: AgentSettings) -> None:
    client = await serve(settings)
    try:
        info = await (await client.get("/v1/info", headers=AUTH)).json()
        assert info["network"]["subnet"] == "172.16.0.0/16" and info["network"]["tap_prefix"] == "fc-tap-"
        assert info["network"]["nat"] is None and "--no-nat" in info["network"]["hint"]
    finally:
        await client.close()
