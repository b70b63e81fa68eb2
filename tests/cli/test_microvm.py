"""``fc-macos run --network`` in-process (CliRunner) against a real fc-agent process
(started with --no-nat: this machine's firewall is never touched) with the test
VMM: the JSON and text output carry the network block, the TAP exists on this
machine, and 'microvm rm' removes it. Needs root for the TAP; starts a guest
under QEMU without waiting for it (marked ``guest``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fc_macos.agent.network import tap_exists
from fc_macos.cli.main import cli
from fc_macos.config import AgentEndpoint
from tests.agent.conftest import GUEST_BOOT_ARGS, TEST_VMM, kill_recorded_vmms, needs_net_admin
from tests.helpers.guest_images import build_test_images

pytestmark = [
    pytest.mark.guest,
    pytest.mark.timeout(300),
    needs_net_admin,
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent_home(short_tmp: Path) -> Iterator[Path]:
    """A real fc-agent (--no-nat) serving the offline guest images; its endpoint saved in a home."""
    images = build_test_images()
    port = free_port()
    state_dir, token_file, home = short_tmp / "state", short_tmp / "token", short_tmp / "home"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fc_macos.agent.main", "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file),
         "--state-dir", str(state_dir), "--firecracker-bin", str(TEST_VMM), "--image-dir", str(images.kernel.parent),
         "--no-nat", "--log-level", "WARNING"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "fc-agent exited"
                assert time.monotonic() < deadline, "fc-agent did not answer"
                time.sleep(0.1)
        AgentEndpoint(url, token_file.read_text().strip()).save(home)
        yield home
    finally:
        proc.terminate()
        proc.wait(10)
        kill_recorded_vmms(state_dir)


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


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
        assert invoke(agent_home, "microvm", "rm", "--name", "netcli", "--force").exit_code == 0
        assert not tap_exists(net["tap"])
    finally:
        if tap_exists(net["tap"]):
            subprocess.run(["ip", "link", "del", "dev", net["tap"]], check=False)
