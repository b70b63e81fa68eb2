"""Firecracker instance commands on a named microVM: machine configuration and
info, actions (start, pause, resume, stop), snapshots and metrics."""

from __future__ import annotations

import json
from typing import Any

import click

from fc_macos.cli.common import AppState, emit, json_option, pass_state
from fc_macos.cli.fc_relay import drop_none, fc_call, get_from, name_option, report, show_command

# -- machine ----------------------------------------------------------------

@click.group("machine")
def machine_group() -> None:
    """The microVM's machine: configuration, instance info, Firecracker version.

    \b
    Examples:
      fc-macos machine info --name web
      fc-macos machine config --name web --vcpus 2 --memory 512
    """


@machine_group.command("config")
@name_option
@click.option("--vcpus", type=click.IntRange(1, 32), help="Set the vCPU count (before start).")
@click.option("--memory", "memory_mib", type=click.IntRange(1), metavar="MiB", help="Set the memory size (before start).")
@click.option("--smt/--no-smt", default=None, help="Simultaneous multithreading (x86_64).")
@json_option
@pass_state
def machine_config(state: AppState, name: str, vcpus: int | None, memory_mib: int | None, smt: bool | None) -> None:
    """Show the machine configuration, or change it (PATCH /machine-config) when given options.

    \b
    Examples:
      fc-macos machine config --name web
      fc-macos machine config --name web --vcpus 2
    """
    body = drop_none(vcpu_count=vcpus, mem_size_mib=memory_mib, smt=smt)
    if body:
        report(state, fc_call(state, name, "PATCH", "/machine-config", body), "Machine configuration updated.")
    else:
        emit(state, fc_call(state, name, "GET", "/machine-config"))


machine_group.add_command(show_command("info", "Instance information: id, state, VMM version (GET /).",
                                       "fc-macos machine info --name web --json", get_from("/")))


@machine_group.command("version")
@name_option
@json_option
@pass_state
def machine_version(state: AppState, name: str) -> None:
    """The Firecracker version running the microVM (GET /version).

    \b
    Example:
      fc-macos machine version --name web
    """
    answer = fc_call(state, name, "GET", "/version")
    emit(state, answer, f"Firecracker {answer.get('firecracker_version', '?')}")


# -- actions ----------------------------------------------------------------

_ACTIONS: dict[str, tuple[str, str, dict[str, str], str]] = {
    "start": ("PUT", "/actions", {"action_type": "InstanceStart"}, "Boot a configured microVM (InstanceStart)."),
    "pause": ("PATCH", "/vm", {"state": "Paused"}, "Pause the microVM's vCPUs (PATCH /vm)."),
    "resume": ("PATCH", "/vm", {"state": "Resumed"}, "Resume a paused microVM (PATCH /vm)."),
    "stop": ("PUT", "/actions", {"action_type": "SendCtrlAltDel"}, "Ask the guest to shut down (SendCtrlAltDel, x86_64)."),
}


@click.group("actions")
def actions_group() -> None:
    """Instance actions: start, pause, resume, stop.

    \b
    Examples:
      fc-macos actions pause --name web
      fc-macos actions resume --name web
    """


def _action_command(action: str) -> click.Command:
    method, path, body, doc = _ACTIONS[action]

    @name_option
    @json_option
    @pass_state
    def command(state: AppState, name: str) -> None:
        report(state, fc_call(state, name, method, path, body), f"{action.capitalize()}: done.")

    command.__doc__ = f"{doc}\n\n\b\nExample:\n  fc-macos actions {action} --name web"
    return click.command(action)(command)


for _action in _ACTIONS:
    actions_group.add_command(_action_command(_action))


# -- snapshots --------------------------------------------------------------

@click.group("snapshots")
def snapshots_group() -> None:
    """Snapshots of a paused microVM, and loading them into a fresh one.

    \b
    Example:
      fc-macos actions pause --name web
      fc-macos snapshots create --name web --snapshot-path /tmp/web.snap --mem-path /tmp/web.mem
    """


@snapshots_group.command("create")
@name_option
@click.option("--snapshot-path", required=True, help="Where to write the VM state (agent's host).")
@click.option("--mem-path", required=True, help="Where to write guest memory (agent's host).")
@click.option("--type", "snapshot_type", type=click.Choice(["Full", "Diff"]), default="Full", show_default=True)
@json_option
@pass_state
def snapshots_create(state: AppState, name: str, snapshot_path: str, mem_path: str, snapshot_type: str) -> None:
    """Write a snapshot of a paused microVM (PUT /snapshot/create).

    \b
    Example:
      fc-macos snapshots create --name web --snapshot-path /tmp/web.snap --mem-path /tmp/web.mem
    """
    body = {"snapshot_path": snapshot_path, "mem_file_path": mem_path, "snapshot_type": snapshot_type}
    report(state, fc_call(state, name, "PUT", "/snapshot/create", body), "Snapshot created.")


@snapshots_group.command("load")
@name_option
@click.option("--snapshot-path", required=True, help="The VM state file (agent's host).")
@click.option("--mem-path", required=True, help="The guest memory file (agent's host).")
@click.option("--resume", is_flag=True, help="Resume the microVM once loaded.")
@json_option
@pass_state
def snapshots_load(state: AppState, name: str, snapshot_path: str, mem_path: str, resume: bool) -> None:
    """Load a snapshot into a microVM that has not started (PUT /snapshot/load).

    \b
    Example:
      fc-macos snapshots load --name fresh --snapshot-path /tmp/web.snap --mem-path /tmp/web.mem --resume
    """
    body = {"snapshot_path": snapshot_path, "mem_backend": {"backend_type": "File", "backend_path": mem_path},
            "resume_vm": resume}
    report(state, fc_call(state, name, "PUT", "/snapshot/load", body), "Snapshot loaded.")


# -- metrics ----------------------------------------------------------------

@click.group("metrics")
def metrics_group() -> None:
    """Firecracker's metrics for a microVM.

    \b
    Example:
      fc-macos metrics get --name web --json
    """


@metrics_group.command("get")
@name_option
@json_option
@pass_state
def metrics_get(state: AppState, name: str) -> None:
    """Flush Firecracker's metrics (FlushMetrics) and print the latest record.

    \b
    Example:
      fc-macos metrics get --name web
    """
    fc_call(state, name, "PUT", "/actions", {"action_type": "FlushMetrics"})

    async def last_line(client: Any) -> str:
        return "".join([chunk async for chunk in client.logs(name, source="metrics", tail=1)]).strip()

    line = state.call_agent(last_line)
    try:
        record = json.loads(line) if line else {}
    except ValueError:
        record = {"raw": line}
    emit(state, record)


GROUPS = (machine_group, actions_group, snapshots_group, metrics_group)
