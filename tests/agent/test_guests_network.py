"""A real guest with network=true (agent NAT off): its /init configures eth0 from
ip=, it pings its TAP address, this machine reaches a TCP listener in the guest,
and deleting the microVM removes the TAP. Traffic stays between this machine and
the guest. Slow: marked ``guest``; needs root for the TAP."""

from __future__ import annotations

import asyncio
import os

import pytest

from fc_macos.agent.network import tap_exists
from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import (
    AUTH, GUEST_BOOT_ARGS, SHELL_PROMPT, ConsoleReader, kill_recorded_vmms, needs_net_admin, serve,
)  # fmt: skip

pytestmark = [
    pytest.mark.guest,
    pytest.mark.timeout(600),
    needs_net_admin,
]


async def read_from_guest(host: str, port: int, attempts: int = 60) -> bytes:
    """Connect to ``host:port`` (retrying while the listener starts) and read to EOF."""
    for _ in range(attempts):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(1)
            continue
        try:
            data = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
        if data:
            return data
        await asyncio.sleep(1)
    raise AssertionError(f"nothing answered on {host}:{port}")


async def test_guest_network_ping_tcp_and_delete(guest_settings: AgentSettings) -> None:
    assert guest_settings.nat is False
    client = await serve(guest_settings)
    tap = None
    try:
        resp = await client.post(
            "/v1/microvms",
            json={"name": "net", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, "network": True},
            headers=AUTH,
        )
        vm = await resp.json()
        assert resp.status == 201, vm
        net = vm["network"]
        tap, guest_ip, host_ip = net["tap"], net["guest_ip"], net["host_ip"]
        assert tap_exists(tap)

        ws = await client.ws_connect("/v1/microvms/net/console", headers=AUTH)
        console = ConsoleReader(ws)
        # the Debian test kernel has no CONFIG_IP_PNP: the rootfs /init applies ip=
        await console.wait_for(f"fc-microvm: eth0 {guest_ip}/30 via {host_ip}".encode())
        await console.wait_for(SHELL_PROMPT, poke=b"\n")

        out = await console.run(f"ping -c 1 -W 5 {host_ip} && echo ping-ok-$((3+4))")
        assert b"ping-ok-7" in out, out[-600:]
        await console.run("cat /sys/class/net/eth0/address; echo mac-$((1+1))")
        assert net["mac"].lower().encode() in console.seen

        await console.run("nc -ll -p 8080 -e echo hello-from-guest & true")
        assert await read_from_guest(guest_ip, 8080) == b"hello-from-guest\n"
        await ws.close()

        assert (await client.delete("/v1/microvms/net?force=true", headers=AUTH)).status == 204
        assert not tap_exists(tap)
    finally:
        await client.close()
        kill_recorded_vmms(guest_settings.state_dir)
        if tap and tap_exists(tap):
            os.system(f"ip link del dev {tap}")
