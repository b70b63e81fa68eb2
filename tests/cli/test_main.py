"""The fc-macos CLI in-process (CliRunner): help, usage errors, JSON shapes and
error formatting, against a fake agent on a real socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from fc_macos.cli.main import cli
from fc_macos.config import AgentEndpoint
from tests.agent.fake_agent import TOKEN, FakeAgent


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with FakeAgent() as fake:
        yield fake


@pytest.fixture
def home(tmp_path: Path, agent: FakeAgent) -> Path:
    AgentEndpoint(agent.url, TOKEN).save(tmp_path)
    return tmp_path


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_every_command_has_help_with_an_example() -> None:
    missing = []
    for path in _commands(cli):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "fc-macos" not in result.output.split("Options:")[0].split("Usage:", 1)[1].split("\n", 1)[1]:
            missing.append(" ".join(path))
    assert missing == []


def test_the_go_tools_command_names_exist() -> None:
    names = {" ".join(p) for p in _commands(cli)}
    expected = {
        "setup", "run", "version", "doctor", "completion",
        "microvm list", "microvm ls", "microvm status", "microvm shell", "microvm logs", "microvm stop", "microvm rm",
        "vm status", "vm shell", "vm logs", "vm start", "vm stop",
        "boot set", "boot get", "drives add", "drives list", "drives update", "drives remove",
        "network add", "network list", "network update", "network remove",
        "machine config", "machine info", "machine version",
        "actions start", "actions pause", "actions resume", "actions stop",
        "snapshots create", "snapshots load", "metrics get",
        "balloon set", "balloon get", "balloon stats", "balloon update",
    }
    assert expected <= names


@pytest.mark.parametrize(
    "args",
    [
        ["microvm", "shell"],  # --name missing
        ["run", "--vcpus", "0"],
        ["run", "--memory", "lots"],
        ["microvm", "logs", "--name", "a", "--source", "kernel"],
        ["no-such-command"],
        ["--provider", "qemu", "microvm", "list"],
    ],
)
def test_click_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = invoke(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output


def test_domain_usage_errors_exit_2_with_a_hint(home: Path) -> None:
    result = invoke(home, "microvm", "stop")
    assert result.exit_code == 2
    assert "Error: give either --name NAME or --all" in result.output
    assert "Hint:" in result.output
    bad_name = invoke(home, "run", "--name", "Bad_Name", "--background")
    assert bad_name.exit_code == 2
    assert "invalid microVM name 'Bad_Name'" in bad_name.output


def test_run_background_list_json_and_status(home: Path, agent: FakeAgent) -> None:
    assert invoke(home, "run", "--name", "web", "--vcpus", "2", "--memory", "512", "--background").exit_code == 0
    created = json.loads(invoke(home, "run", "--background", "--json").output)
    assert created["name"] == "microvm-2" and created["state"] == "running"
    listed = invoke(home, "microvm", "list", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.output)
    assert isinstance(rows, list) and [r["name"] for r in rows] == ["web", "microvm-2"]
    for row in rows:
        assert {"name", "state", "vcpus", "memory_mib", "pid"} <= set(row)
    assert (rows[0]["vcpus"], rows[0]["memory_mib"]) == (2, 512)
    table = invoke(home, "microvm", "ls").output.splitlines()
    assert table[0].split() == ["NAME", "STATE", "VCPUS", "MEMORY", "PID", "UPTIME", "AGENT", "PORTS"]
    assert table[1].split()[:3] == ["web", "running", "2"]
    one = json.loads(invoke(home, "microvm", "status", "--name", "web", "--json").output)
    assert one["name"] == "web"
    every = json.loads(invoke(home, "microvm", "status", "--json").output)
    assert len(every) == 2
    details = invoke(home, "microvm", "status", "--name", "web").output
    assert "Name:      web" in details and "vCPUs:     2" in details and "Memory:    512 MiB" in details
    assert "Boot args: " in details


def test_unknown_microvm_is_a_clear_error_and_json_error_object(home: Path) -> None:
    result = invoke(home, "microvm", "status", "--name", "ghost")
    assert result.exit_code == 1
    assert "Error: no microVM named 'ghost'" in result.output
    assert "Hint: run 'fc-macos microvm list'" in result.output
    as_json = invoke(home, "microvm", "status", "--name", "ghost", "--json")
    assert as_json.exit_code == 1
    error = json.loads(as_json.output.splitlines()[0])
    assert error == {"error": "not_found", "message": "no microVM named 'ghost'", "hint": "run 'fc-macos microvm list'"}


def test_stop_all_and_rm(home: Path, agent: FakeAgent) -> None:
    for name in ("a", "b"):
        invoke(home, "run", "--name", name, "--background")
    conflict = invoke(home, "microvm", "rm", "--name", "a")
    assert conflict.exit_code == 1 and "is running" in conflict.output
    stopped = json.loads(invoke(home, "microvm", "stop", "--all", "--json").output)
    assert sorted(s["name"] for s in stopped) == ["a", "b"] and {s["state"] for s in stopped} == {"stopped"}
    assert invoke(home, "microvm", "rm", "--name", "a").exit_code == 0
    assert sorted(agent.microvms) == ["b"]


def test_wrong_token_and_missing_setup(home: Path, agent: FakeAgent, tmp_path_factory: pytest.TempPathFactory) -> None:
    AgentEndpoint(agent.url, "stale").save(home)
    result = invoke(home, "microvm", "list")
    assert result.exit_code == 1
    assert f"the token in {home / 'agent.json'} does not match" in result.output
    empty = tmp_path_factory.mktemp("empty")
    result = invoke(empty, "microvm", "list")
    assert result.exit_code == 1
    assert "Hint: run 'fc-macos setup' first" in result.output


def test_agent_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    AgentEndpoint(f"http://127.0.0.1:{port}", TOKEN).save(tmp_path)
    result = invoke(tmp_path, "microvm", "list", "--json")
    assert result.exit_code == 1
    assert json.loads(result.output.splitlines()[0])["error"] == "agent_unreachable"
    assert "fc-macos vm start" in result.output


def test_firecracker_commands_validate_before_sending(home: Path, agent: FakeAgent) -> None:
    invoke(home, "run", "--name", "a", "--background")
    result = invoke(home, "network", "add", "--name", "a", "--id", "bad-id", "--host-dev", "tap0")
    assert result.exit_code == 2
    assert "bad-id" in result.output
    not_json = invoke(home, "network", "update", "--name", "a", "--id", "eth0", "--rx-rate-limiter", "{size: 1}")
    assert not_json.exit_code == 2 and "--rx-rate-limiter is not valid JSON" in not_json.output
    assert agent.fc_calls == []  # never sent
    limiter = '{"bandwidth": {"size": 1000, "refill_time": 100}}'
    assert invoke(home, "network", "update", "--name", "a", "--id", "eth0", "--rx-rate-limiter", limiter).exit_code == 0
    assert agent.fc_calls.pop() == ("PATCH", "network-interfaces/eth0",
                                    {"iface_id": "eth0", "rx_rate_limiter": json.loads(limiter)})
    ok = invoke(home, "boot", "set", "--name", "a", "--kernel", "/images/vmlinux", "--boot-args", "console=ttyS0")
    assert ok.exit_code == 0, ok.output
    assert agent.fc_calls == [("PUT", "boot-source", {"kernel_image_path": "/images/vmlinux", "boot_args": "console=ttyS0"})]


def test_firecracker_faults_and_json_answers(home: Path, agent: FakeAgent) -> None:
    invoke(home, "run", "--name", "a", "--background")
    agent.fc_replies[("PATCH", "vm")] = (400, {"fault_message": "The requested operation is not supported before starting the microVM."})
    fault = invoke(home, "actions", "pause", "--name", "a")
    assert fault.exit_code == 1
    assert "Firecracker answered 400: The requested operation is not supported" in fault.output
    config = json.loads(invoke(home, "machine", "config", "--name", "a", "--json").output)
    assert config["vcpu_count"] == 1
    assert json.loads(invoke(home, "machine", "version", "--name", "a", "--json").output) == {"firecracker_version": "1.16.1"}
    assert invoke(home, "machine", "config", "--name", "a", "--vcpus", "2").exit_code == 0
    assert agent.fc_calls[-1] == ("PATCH", "machine-config", {"vcpu_count": 2})
    agent.fc_replies[("GET", "vm/config")] = (200, {"boot-source": {"kernel_image_path": "/k"}, "drives": [{"drive_id": "rootfs"}]})
    assert json.loads(invoke(home, "boot", "get", "--name", "a", "--json").output) == {"kernel_image_path": "/k"}
    assert json.loads(invoke(home, "drives", "list", "--name", "a", "--json").output) == [{"drive_id": "rootfs"}]
    assert invoke(home, "machine", "info", "--name", "ghost").exit_code == 1


def test_run_no_start_creates_and_prints_the_next_steps(home: Path, agent: FakeAgent) -> None:
    result = invoke(home, "run", "--name", "web", "--no-start")
    assert result.exit_code == 0, result.output
    assert agent.microvms["web"]["spec"]["start"] is False and agent.microvms["web"]["state"] == "created"
    assert "Configured web" in result.output and "fc-macos network add --name web" in result.output
    assert "fc-macos actions start --name web" in result.output
    started = invoke(home, "actions", "start", "--name", "web")
    assert started.exit_code == 0 and "Started web" in started.output
    assert agent.fc_calls[-1] == ("PUT", "actions", {"action_type": "InstanceStart"})


def test_snapshots_create_puts_bare_names_in_the_agents_snapshot_dir(home: Path, agent: FakeAgent) -> None:
    invoke(home, "run", "--name", "a", "--background")
    result = invoke(home, "snapshots", "create", "--name", "a", "--snapshot-path", "a.snap", "--mem-path", "/abs/a.mem")
    assert result.exit_code == 0, result.output
    assert agent.fc_calls[-1] == ("PUT", "snapshot/create", {
        "snapshot_path": "/var/lib/fc-agent/snapshots/a.snap", "mem_file_path": "/abs/a.mem", "snapshot_type": "Full"})
    assert "snapshots load --name NEW --snapshot-path a.snap" in result.output


def test_snapshots_load_creates_a_new_microvm(home: Path, agent: FakeAgent) -> None:
    result = invoke(home, "snapshots", "load", "--name", "b", "--snapshot-path", "a.snap", "--mem-path", "a.mem",
                    "--no-resume", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "paused"
    assert agent.microvms["b"]["spec"]["snapshot"] == {"snapshot_path": "a.snap", "mem_path": "a.mem", "resume": False}
    assert agent.fc_calls == []  # not a relay call: the agent makes the Firecracker process
    taken = invoke(home, "snapshots", "load", "--name", "b", "--snapshot-path", "a.snap", "--mem-path", "a.mem")
    assert taken.exit_code == 1 and "exists" in taken.output


def test_metrics_get_flushes_then_prints_the_last_record(home: Path, agent: FakeAgent) -> None:
    invoke(home, "run", "--name", "a", "--background")
    agent.log_sources.add("metrics")
    result = invoke(home, "metrics", "get", "--name", "a", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["utc_timestamp_ms"] == 3
    assert agent.fc_calls[-1] == ("PUT", "actions", {"action_type": "FlushMetrics"})


def test_logs_print_the_agents_text(home: Path) -> None:
    invoke(home, "run", "--name", "a", "--background")
    result = invoke(home, "microvm", "logs", "--name", "a", "--tail", "2")
    assert result.output == "serial line 4\nserial line 5\n"


def test_completion_prints_a_script_for_each_shell() -> None:
    for shell in ("bash", "zsh", "fish"):
        result = CliRunner().invoke(cli, ["completion", shell])
        assert result.exit_code == 0
        assert "_FC_MACOS_COMPLETE" in result.output


def test_completion_answers_through_the_environment_variable() -> None:
    env = {**os.environ, "_FC_MACOS_COMPLETE": "bash_complete", "COMP_WORDS": "fc-macos microvm s", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-m", "fc_macos.cli.main"], env=env, capture_output=True, text=True).stdout
    assert out.split() == ["plain,shell", "plain,status", "plain,stop"]


def test_version_flag() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_cli_starts_without_heavy_imports() -> None:
    code = "import sys, fc_macos.cli.main; heavy = [m for m in ('aiohttp', 'asyncio', 'fastjsonschema') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
