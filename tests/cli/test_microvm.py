"""``fc-macos run --network`` in-process (CliRunner) against a real fc-agent process
(started with --no-nat: this machine's firewall is never touched) with the test
VMM: the JSON and text output carry the network block, the TAP exists on this
machine, 'microvm list' shows the guest address, and 'microvm rm' removes it. Needs root for the TAP; starts a guest
under QEMU without waiting for it (marked ``guest``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.agent.network import tap_exists
from tests.helpers.agent import GUEST_BOOT_ARGS, needs_net_admin
from tests.helpers.cli_agent import agent_home as serving_home
from tests.helpers.cli_agent import invoke

pytestmark = [
    pytest.mark.guest,
    pytest.mark.timeout(300),
    needs_net_admin,
]


@pytest.fixture
def agent_home(short_tmp: Path) -> Iterator[Path]:
    with serving_home(short_tmp) as home:
        yield home


def test_run_network_reports_the_network_and_rm_removes_the_tap(agent_home: Path) -> None:
    result = invoke(agent_home, "run", "--name", "netcli", "--network", "--memory", "128",
                    "--boot-args", GUEST_BOOT_ARGS, "--background", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    net = info["network"]
    try:
        assert info["spec"]["network"] is True
        assert net["tap"].startswith("fc-tap-") and tap_exists(net["tap"])
        assert net["guest_ip"].startswith("172.16.") and net["mac"].startswith("06:00:AC:10:")
        assert net["nat"] is None and "--no-nat" in net["nat_hint"]
        status = invoke(agent_home, "microvm", "status", "--name", "netcli")
        assert f"Network:   guest {net['guest_ip']} (mac {net['mac']}), host {net['host_ip']} on {net['tap']}" in status.output
        header, row = invoke(agent_home, "microvm", "list").output.splitlines()[:2]
        assert row[header.index("ADDRESS"):].split()[0] == net["guest_ip"]  # the list's address column
        assert invoke(agent_home, "microvm", "rm", "--name", "netcli", "--force").exit_code == 0
        assert not tap_exists(net["tap"])
    finally:
        if tap_exists(net["tap"]):
            subprocess.run(["ip", "link", "del", "dev", net["tap"]], check=False)
