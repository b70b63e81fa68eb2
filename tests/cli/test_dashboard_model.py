"""The dashboard's text, from data alone: published ports and the guest agent
where the agent reports them (and '-' where it does not yet), the filter, the
panels when the agent is unreachable or old."""

from __future__ import annotations

from typing import Any

from fc_macos.agent.wire import MicroVMInfo
from fc_macos.cli.dashboard import model
from fc_macos.cli.dashboard.app import plain
from fc_macos.cli.dashboard.model import AgentFacts, Snapshot
from fc_macos.providers.base import VMStatus


def info(name: str = "web", state: str = "running", **extra: Any) -> MicroVMInfo:
    fields = {"name": name, "state": state, "pid": 10, "vcpus": 2, "memory_mib": 512, "spec": {}, "created_at": 0.0,
              "uptime_s": 75.0, "cpu_percent": 3.25, "memory_rss_mib": 40.4}
    fields.update(extra)
    made = MicroVMInfo.from_dict(fields)
    for key in ("ports", "guest_agent"):  # fields that newer agents report (issue 6); tolerated either way
        if key in extra and not hasattr(made, key):
            object.__setattr__(made, key, extra[key])
    return made


def test_row_has_every_column() -> None:
    row = model.row(info(network={"guest_ip": "172.16.0.2"}))
    assert len(row) == len(model.COLUMNS)
    assert row == ("web", "running", "2", "512 MiB", "3.2", "40 MiB", "1m15s", "172.16.0.2", "-", "-")


def test_ports_and_guest_agent_when_reported() -> None:
    vm = info(ports=[{"host_addr": "0.0.0.0", "host_port": 8080, "guest_port": 80},
                     {"host_addr": "127.0.0.1", "host_port": 2222, "guest_port": 22}],
              guest_agent={"state": "ready", "version": "0.1.0", "ready_s": 1.2, "reason": None})
    assert model.ports_text(vm) == "8080->80,127.0.0.1:2222->22"
    assert model.guest_agent_text(vm) == "ready 0.1.0"
    assert model.guest_agent_text(info(guest_agent={"state": "absent", "reason": "not ext4"})) == "absent"
    assert model.ports_text(info()) == "-" and model.guest_agent_text(info()) == "-"


def test_filter_matches_names_and_states() -> None:
    vms = (info("web-1"), info("web-2", "stopped"), info("db", "paused"))
    assert [v.name for v in model.visible(vms, "WEB")] == ["web-1", "web-2"]
    assert [v.name for v in model.visible(vms, "paused")] == ["db"]
    assert [v.name for v in model.visible(vms, " ")] == ["web-1", "web-2", "db"]


def test_unreachable_agent_panels() -> None:
    snap = Snapshot(vm=VMStatus("fc-macos", "tart", True, False, "stopped"),
                    agent=AgentFacts(url="http://192.168.64.2:8642", reachable=False, version="0.1.0",
                                     error="cannot reach fc-agent", hint="start it with 'fc-macos vm start'"),
                    microvms=(info(),), updated_at=100.0)
    assert "status   UNREACHABLE (why: below)" in model.agent_lines(snap, now=110.0)
    assert "data     from 10s ago (stale)" in model.agent_lines(snap, now=110.0)
    assert not any("stale" in line for line in model.agent_lines(snap, now=101.0))
    assert model.alert_lines(snap) == ["fc-agent UNREACHABLE: cannot reach fc-agent",
                                       "Hint: start it with 'fc-macos vm start'"]
    vm = model.vm_lines(snap)
    assert "state    stopped" in vm and "memory   -" in vm and "address  -" in vm


def test_vm_panel_from_host_figures() -> None:
    host = {"cpus": 4, "cpu_percent": 25.0, "load": [1.0, 0.5, 0.25],
            "memory": {"used_mib": 1536.0, "total_mib": 4096.0}, "disk": {"used_mib": 10240.0, "total_mib": 51200.0}}
    snap = Snapshot(vm=VMStatus("fc-macos", "tart", True, True, "running", "192.168.64.2"),
                    agent=AgentFacts(url=None, reachable=True), host=host)
    assert model.vm_lines(snap) == [
        "name     fc-macos (tart)", "state    running", "address  192.168.64.2", "CPUs     4   busy 25%",
        "memory   1.5 / 4.0 GiB (38%)", "disk     10.0 / 50.0 GiB (20%)", "load     1.00 0.50 0.25"]


def test_console_output_is_shown_without_control_sequences() -> None:
    assert plain("\x1b[1;32mok\x1b[0m\r\n\x1b]0;title\x07prompt# \x1b[6n") == "ok\nprompt# "


def test_the_command_needs_a_terminal_and_says_what_to_use_instead(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from fc_macos.cli.main import cli

    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "--provider", "local", "dashboard"])
    assert result.exit_code == 2
    assert "needs a terminal" in result.output and "fc-macos microvm list --json" in result.output
    assert "dashboard" in CliRunner().invoke(cli, ["--help"]).output
