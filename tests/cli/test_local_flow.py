"""End to end on the ``local`` provider: the fc-macos CLI, the real fc-agent, the test
VMM as Firecracker and real guests under QEMU (slow: marked ``guest``)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.config import AgentEndpoint
from fc_macos.providers.local import check_kvm
from tests.cli.terminal import shell_runs
from tests.helpers.guest_world import setup_args as local_setup_args

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not check_kvm().ok, reason="the local provider needs a usable /dev/kvm"),
]


def cli_argv(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), *args]


def fc(home: Path, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cli_argv(home, *args),
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def events(output: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def home(short_tmp: Path) -> Iterator[Path]:
    # short: the agent's state lives under it, and each microVM's vsock socket path must fit 107 bytes
    home = short_tmp / "home"
    yield home
    fc(home, "vm", "stop", "--force", check=False)


def test_local_flow_end_to_end(home: Path) -> None:
    setup_args = local_setup_args()
    first = events(fc(home, *setup_args).stdout)
    assert first[-1]["event"] == "result"

    missing = fc(home, "run", "--name", "nokernel", "--kernel", "no-such-vmlinux", "--background", check=False)
    assert missing.returncode == 1 and "no-such-vmlinux" in missing.stderr and "Hint:" in missing.stderr
    assert json.loads(fc(home, "microvm", "list", "--json").stdout) == []  # nothing half-made

    for index in (1, 2, 3):
        info = json.loads(fc(home, "run", "--name", f"vm-{index}", "--background", "--json").stdout)
        assert info["state"] == "running"
    listed = json.loads(fc(home, "microvm", "list", "--json").stdout)
    assert sorted(vm["name"] for vm in listed) == ["vm-1", "vm-2", "vm-3"]
    assert all(vm["state"] == "running" and vm["pid"] for vm in listed)
    assert len({vm["pid"] for vm in listed}) == 3

    output = shell_runs(cli_argv(home, "microvm", "shell", "--name", "vm-1"), "vm-1", b"echo $((6*7))-from-the-guest", b"42-from-the-guest")
    assert b"42-from-the-guest" in output

    stopped = json.loads(fc(home, "microvm", "stop", "--name", "vm-1", "--json").stdout)
    assert stopped["state"] == "stopped"
    fc(home, "microvm", "rm", "--name", "vm-1")
    gone = fc(home, "microvm", "status", "--name", "vm-1", check=False)
    assert gone.returncode == 1 and "Hint: run 'fc-macos microvm list'" in gone.stderr

    machine = json.loads(fc(home, "machine", "info", "--name", "vm-2", "--json").stdout)
    assert machine["state"] == "Running"
    boot = json.loads(fc(home, "boot", "get", "--name", "vm-2", "--json").stdout)
    assert boot["kernel_image_path"].endswith("vmlinux")
    metrics = json.loads(fc(home, "metrics", "get", "--name", "vm-2", "--json").stdout)
    assert isinstance(metrics["utc_timestamp_ms"], int), metrics

    endpoint = AgentEndpoint.load(home)
    assert endpoint is not None
    AgentEndpoint(endpoint.url, "not-the-token").save(home)
    refused = fc(home, "microvm", "list", check=False)
    assert refused.returncode == 1 and f"the token in {home / 'agent.json'} does not match" in refused.stderr
    endpoint.save(home)

    fc(home, "vm", "stop")  # the agent only: its microVMs keep running
    assert json.loads(fc(home, "vm", "status", "--json").stdout)["running"] is False
    fc(home, "vm", "start")
    survivors = json.loads(fc(home, "microvm", "list", "--json").stdout)
    assert {vm["name"]: vm["state"] for vm in survivors} == {"vm-2": "running", "vm-3": "running"}

    fc(home, "vm", "stop", "--force")  # the agent and every microVM
    unreachable = fc(home, "microvm", "list", check=False)
    assert unreachable.returncode == 1 and "fc-macos vm start" in unreachable.stderr

    again = events(fc(home, *setup_args).stdout)  # images and token kept, the agent started again
    assert {"token", "save-endpoint"} <= {e["name"] for e in again if e["event"] == "skip"}
    after_force = json.loads(fc(home, "microvm", "list", "--json").stdout)
    assert {vm["state"] for vm in after_force} == {"stopped"}
    third = events(fc(home, *setup_args).stdout)  # all in place: nothing to do
    skipped = {e["name"] for e in third if e["event"] == "skip"}
    assert {"install-images", "token", "start-agent", "save-endpoint"} <= skipped
    assert not [e for e in third if e["event"] == "done" and e["name"] in ("start-agent", "token")]


def test_local_flow_configure_before_start_then_snapshot_and_restore(home: Path, tmp_path: Path) -> None:
    assert events(fc(home, *local_setup_args()).stdout)[-1]["event"] == "result"

    # --no-vsock: the test VMM cannot carry a vsock device through a snapshot (QEMU cannot
    # migrate it), so it cold-boots such a restore; this test checks the guest's memory survives.
    configured = fc(home, "run", "--name", "pre", "--no-start", "--no-vsock")
    assert "fc-macos actions start --name pre" in configured.stdout
    extra = tmp_path / "extra.img"
    extra.write_bytes(b"\0" * (1024 * 1024))
    fc(home, "machine", "config", "--name", "pre", "--vcpus", "2")  # pre-boot calls, relayed
    fc(home, "drives", "add", "--name", "pre", "--id", "extra", "--path", str(extra), "--read-only")
    assert "Started pre" in fc(home, "actions", "start", "--name", "pre").stdout
    listed = {vm["name"]: vm for vm in json.loads(fc(home, "microvm", "list", "--json").stdout)}
    assert (listed["pre"]["state"], listed["pre"]["vcpus"]) == ("running", 2)

    marker = f"marker-{secrets.token_hex(4)}"
    shell_runs(cli_argv(home, "microvm", "shell", "--name", "pre"), "pre",
               f"export M={marker}; echo set-$M".encode(), f"set-{marker}".encode())
    fc(home, "actions", "pause", "--name", "pre")
    created = fc(home, "snapshots", "create", "--name", "pre", "--snapshot-path", "pre.snap", "--mem-path", "pre.mem")
    assert "/snapshots/pre.snap" in created.stdout  # a bare name lands in the agent's snapshot directory
    fc(home, "microvm", "stop", "--name", "pre", "--force")  # the restored guest uses pre's disk

    restored = json.loads(fc(home, "snapshots", "load", "--name", "restored", "--snapshot-path", "pre.snap",
                             "--mem-path", "pre.mem", "--json").stdout)
    assert (restored["state"], restored["vcpus"]) == ("running", 2)
    output = shell_runs(cli_argv(home, "microvm", "shell", "--name", "restored"), "restored",
                        b"echo got-$M", f"got-{marker}".encode())
    assert f"got-{marker}".encode() in output
