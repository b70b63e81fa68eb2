"""The fc-macos CLI in-process (CliRunner): help, usage errors, JSON shapes and
error formatting, against the real fc-agent (a process, with the test VMM and
the offline guest images). Most microVMs here are configured, not started
(``run --no-start``): the Firecracker API answers without a guest booting.
Snapshots and metrics of a booted guest: tests/cli/test_local_flow.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from fc_macos.agent_sync import BlockingAgent
from fc_macos.cli.main import cli
from fc_macos.config import AgentEndpoint
from tests.helpers.agent import GUEST_BOOT_ARGS, TOKEN, AgentProcess, agent_process
from tests.helpers.guest_images import build_test_images


@pytest.fixture
def agent(short_tmp: Path) -> Iterator[AgentProcess]:
    with agent_process(short_tmp, (build_test_images().kernel.parent,)) as running:
        yield running


@pytest.fixture
def home(tmp_path: Path, agent: AgentProcess) -> Path:
    AgentEndpoint(agent.url, agent.token).save(tmp_path)
    return tmp_path


def vm_config(agent: AgentProcess, name: str) -> dict[str, Any]:
    """What the microVM's Firecracker reports (GET /vm/config through the relay)."""
    with BlockingAgent(agent.url, agent.token) as client:
        return client.run(lambda c: c.firecracker(name, "GET", "/vm/config"))[1]  # type: ignore[no-any-return]


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
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


def test_run_background_list_json_and_status(home: Path) -> None:
    booted = invoke(home, "run", "--name", "web", "--vcpus", "2", "--memory", "512", "--boot-args", GUEST_BOOT_ARGS,
                    "--background")
    assert booted.exit_code == 0, booted.output
    created = json.loads(invoke(home, "run", "--no-start", "--json").output)
    assert created["name"].startswith("microvm-") and created["state"] == "created"
    listed = invoke(home, "microvm", "list", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.output)
    assert isinstance(rows, list) and [r["name"] for r in rows] == ["web", created["name"]]
    for row in rows:
        assert {"name", "state", "vcpus", "memory_mib", "pid"} <= set(row)
    assert (rows[0]["state"], rows[0]["vcpus"], rows[0]["memory_mib"]) == ("running", 2, 512)
    table = invoke(home, "microvm", "ls").output.splitlines()
    assert table[0].split() == ["NAME", "STATE", "VCPUS", "MEMORY", "PID", "UPTIME", "ADDRESS", "AGENT", "PORTS"]
    assert table[1].split()[:3] == ["web", "running", "2"]
    one = json.loads(invoke(home, "microvm", "status", "--name", "web", "--json").output)
    assert one["name"] == "web" and one["pid"] == rows[0]["pid"]
    every = json.loads(invoke(home, "microvm", "status", "--json").output)
    assert len(every) == 2
    details = invoke(home, "microvm", "status", "--name", "web").output
    assert "Name:      web" in details and "vCPUs:     2" in details and "Memory:    512 MiB" in details
    assert f"Boot args: {GUEST_BOOT_ARGS}" in details


def test_unknown_microvm_is_a_clear_error_and_json_error_object(home: Path) -> None:
    result = invoke(home, "microvm", "status", "--name", "ghost")
    assert result.exit_code == 1
    assert "Error: no microVM named 'ghost'" in result.output
    assert "Hint: run 'fc-macos microvm list'" in result.output
    as_json = invoke(home, "microvm", "status", "--name", "ghost", "--json")
    assert as_json.exit_code == 1
    error = json.loads(as_json.output.splitlines()[0])
    assert error == {"error": "not_found", "message": "no microVM named 'ghost'", "hint": "run 'fc-macos microvm list'"}


def test_stop_all_and_rm(home: Path) -> None:
    for name in ("a", "b"):
        assert invoke(home, "run", "--name", name, "--no-start").exit_code == 0
    conflict = invoke(home, "microvm", "rm", "--name", "a")
    assert conflict.exit_code == 1 and "microVM 'a' is created" in conflict.output
    assert "--force" in conflict.output
    stopped = json.loads(invoke(home, "microvm", "stop", "--all", "--json").output)
    assert sorted(s["name"] for s in stopped) == ["a", "b"] and {s["state"] for s in stopped} == {"stopped"}
    assert invoke(home, "microvm", "rm", "--name", "a").exit_code == 0
    assert [row["name"] for row in json.loads(invoke(home, "microvm", "list", "--json").output)] == ["b"]


def test_wrong_token_and_missing_setup(home: Path, agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory) -> None:
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
    assert f"Error: cannot reach fc-agent at http://127.0.0.1:{port}: connection refused\n" in result.output
    assert "ssl:default" not in result.output and "Connect call failed" not in result.output
    assert "fc-macos vm start" in result.output


def test_firecracker_commands_validate_before_sending(home: Path, agent: AgentProcess) -> None:
    assert invoke(home, "run", "--name", "a", "--no-start").exit_code == 0
    result = invoke(home, "network", "add", "--name", "a", "--id", "bad-id", "--host-dev", "tap0")
    assert result.exit_code == 2
    assert "bad-id" in result.output
    not_json = invoke(home, "network", "update", "--name", "a", "--id", "eth0", "--rx-rate-limiter", "{size: 1}")
    assert not_json.exit_code == 2 and "--rx-rate-limiter is not valid JSON" in not_json.output
    assert vm_config(agent, "a")["network-interfaces"] == []  # never sent
    added = invoke(home, "network", "add", "--name", "a", "--id", "eth0", "--host-dev", "tap0")
    assert added.exit_code == 0, added.output
    assert [(i["iface_id"], i["host_dev_name"]) for i in vm_config(agent, "a")["network-interfaces"]] == [("eth0", "tap0")]
    kernel = str(build_test_images().kernel)
    ok = invoke(home, "boot", "set", "--name", "a", "--kernel", kernel, "--boot-args", "console=ttyS0")
    assert ok.exit_code == 0, ok.output
    boot = json.loads(invoke(home, "boot", "get", "--name", "a", "--json").output)
    assert (boot["kernel_image_path"], boot["boot_args"]) == (kernel, "console=ttyS0")


def test_firecracker_faults_and_json_answers(home: Path) -> None:
    assert invoke(home, "run", "--name", "a", "--no-start").exit_code == 0
    fault = invoke(home, "actions", "pause", "--name", "a")  # not started: Firecracker refuses
    assert fault.exit_code == 1
    assert "Firecracker answered 400: " in fault.output and "before starting the microVM" in fault.output
    config = json.loads(invoke(home, "machine", "config", "--name", "a", "--json").output)
    assert config["vcpu_count"] == 1
    assert json.loads(invoke(home, "machine", "version", "--name", "a", "--json").output) == {"firecracker_version": "1.16.1"}
    assert invoke(home, "machine", "config", "--name", "a", "--vcpus", "2").exit_code == 0
    assert json.loads(invoke(home, "machine", "config", "--name", "a", "--json").output)["vcpu_count"] == 2
    assert json.loads(invoke(home, "boot", "get", "--name", "a", "--json").output)["kernel_image_path"].endswith("vmlinux")
    drives = json.loads(invoke(home, "drives", "list", "--name", "a", "--json").output)
    assert [(d["drive_id"], d["is_root_device"]) for d in drives] == [("rootfs", True)]
    assert invoke(home, "machine", "info", "--name", "ghost").exit_code == 1


def test_run_no_start_then_actions_start_and_the_logs(home: Path, agent: AgentProcess) -> None:
    result = invoke(home, "run", "--name", "web", "--no-start", "--boot-args", GUEST_BOOT_ARGS)
    assert result.exit_code == 0, result.output
    assert json.loads(invoke(home, "microvm", "status", "--name", "web", "--json").output)["state"] == "created"
    assert "Configured web" in result.output and "fc-macos network add --name web" in result.output
    assert "fc-macos actions start --name web" in result.output
    started = invoke(home, "actions", "start", "--name", "web")
    assert started.exit_code == 0 and "Started web" in started.output
    assert json.loads(invoke(home, "microvm", "status", "--name", "web", "--json").output)["state"] == "running"
    logs = invoke(home, "microvm", "logs", "--name", "web", "--source", "firecracker", "--tail", "2")
    assert logs.exit_code == 0
    with BlockingAgent(agent.url, agent.token) as client:
        whole = client.run(lambda c: _text(c.logs("web", source="firecracker")))
    assert whole and logs.output == "".join(whole.splitlines(keepends=True)[-2:])


async def _text(chunks: Any) -> str:
    return "".join([chunk async for chunk in chunks])


def test_completion_prints_a_script_for_each_shell() -> None:
    for shell in ("bash", "zsh", "fish"):
        result = CliRunner().invoke(cli, ["completion", shell])
        assert result.exit_code == 0
        assert "_FC_MACOS_COMPLETE" in result.output


def test_completion_answers_through_the_environment_variable() -> None:
    env = {**os.environ, "_FC_MACOS_COMPLETE": "bash_complete", "COMP_WORDS": "fc-macos microvm s", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-m", "fc_macos.cli.main"], env=env, capture_output=True, text=True).stdout
    assert out.split() == ["plain,shell", "plain,start", "plain,status", "plain,stop"]


def test_version_flag() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


#: What a command that does not talk to the agent must not import (the CLI must start fast).
HEAVY = ("aiohttp", "asyncio", "fastjsonschema", "textual", "rich", "fc_macos.images", "fc_macos.providers",
         "fc_macos.agent.client", "fc_macos.firecracker", "fc_macos.cli.setup", "fc_macos.cli.fc_devices")


@pytest.mark.parametrize("args", [["--version"], ["microvm", "list", "--help"], ["vm", "--help"]])
def test_cli_starts_without_heavy_imports(args: list[str]) -> None:
    code = ("import sys\nfrom fc_macos.cli.main import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print([m for m in sys.modules if m.startswith(%r)], file=sys.stderr)" % (HEAVY,))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    assert "Usage:" in done.stdout or "0.1.0" in done.stdout
    assert done.stderr.strip() == "[]"


def test_importing_the_package_imports_only_its_version() -> None:
    code = "import sys, fc_macos; print(sorted(m for m in sys.modules if m.startswith('fc_macos')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['fc_macos', 'fc_macos._version']"


def test_list_and_vm_status_help_say_what_they_show() -> None:
    """Where the guest agent, the published ports and the VM's address are found."""
    listing = CliRunner().invoke(cli, ["microvm", "list", "--help"]).output
    assert "guest agent" in listing and "published ports" in listing and "guest_agent" in listing
    status = CliRunner().invoke(cli, ["vm", "status", "--help"]).output
    assert "address" in status and "published ports" in status
