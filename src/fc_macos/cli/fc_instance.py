"""Firecracker instance commands on a named microVM: machine configuration and
info, actions (start, pause, resume, stop), snapshots and metrics."""

from __future__ import annotations

import json
from typing import Any

import click

from fc_macos.cli import snapshot_files
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
    "start": ("PUT", "/actions", {"action_type": "InstanceStart"},
              "Boot a microVM made with 'fc-macos run --no-start' (InstanceStart)."),
    "pause": ("PATCH", "/vm", {"state": "Paused"}, "Pause the microVM's vCPUs (PATCH /vm)."),
    "resume": ("PATCH", "/vm", {"state": "Resumed"}, "Resume a paused microVM (PATCH /vm)."),
    "stop": ("PUT", "/actions", {"action_type": "SendCtrlAltDel"}, "Ask the guest to shut down (SendCtrlAltDel, x86_64)."),
}


@click.group("actions")
def actions_group() -> None:
    """Instance actions: start, pause, resume, stop.

    \b
    Examples:
      fc-macos run --name web --no-start && fc-macos actions start --name web
      fc-macos actions pause --name web
      fc-macos actions resume --name web
    """


def _action_command(action: str) -> click.Command:
    method, path, body, doc = _ACTIONS[action]

    @name_option
    @json_option
    @pass_state
    def command(state: AppState, name: str) -> None:
        done = (f"Started {name}. Attach with: fc-macos microvm shell --name {name}" if action == "start"
                else f"{action.capitalize()}: done.")
        report(state, fc_call(state, name, method, path, body), done)

    command.__doc__ = f"{doc}\n\n\b\nExample:\n  fc-macos actions {action} --name web"
    return click.command(action)(command)


for _action in _ACTIONS:
    actions_group.add_command(_action_command(_action))


# -- snapshots -------------------------------------------------------------

@click.group("snapshots")
def snapshots_group() -> None:
    """Snapshots of a paused microVM, and new microVMs restored from them.

    Bare names (and relative paths) live in the agent's snapshot directory
    (<state-dir>/snapshots on the agent's machine). A restored guest boots on
    the disk of the microVM that made the snapshot, so a load is refused while
    that microVM (or another restore of it) runs.

    \b
    Example:
      fc-macos actions pause --name web
      fc-macos snapshots create --name web --snapshot-path web.snap --mem-path web.mem
      fc-macos microvm stop --name web     # the restored guest uses web's disk
      fc-macos snapshots load --name web2 --snapshot-path web.snap --mem-path web.mem
      fc-macos snapshots list
      fc-macos snapshots rm --snapshot-path web.snap
    """


@snapshots_group.command("create")
@name_option
@click.option("--snapshot-path", required=True,
              help="Where to write the VM state: a name in the agent's snapshot directory, or an absolute path.")
@click.option("--mem-path", required=True, help="Where to write guest memory (same rules).")
@click.option("--type", "snapshot_type", type=click.Choice(["Full", "Diff"]), default="Full", show_default=True)
@json_option
@pass_state
def snapshots_create(state: AppState, name: str, snapshot_path: str, mem_path: str, snapshot_type: str) -> None:
    """Write a snapshot of a paused microVM (PUT /snapshot/create).

    \b
    Examples:
      fc-macos snapshots create --name web --snapshot-path web.snap --mem-path web.mem
      fc-macos snapshots create --name web --snapshot-path /var/lib/fc-agent/snapshots/a.snap --mem-path /var/lib/fc-agent/snapshots/a.mem
    """

    async def on_agent(client: Any) -> tuple[str, str]:
        return await client.snapshot_path(snapshot_path), await client.snapshot_path(mem_path)

    snap, mem = state.call_agent(on_agent)
    body = {"snapshot_path": snap, "mem_file_path": mem, "snapshot_type": snapshot_type}
    fc_call(state, name, "PUT", "/snapshot/create", body)
    emit(state, {"snapshot_path": snap, "mem_path": mem},
         f"Snapshot of {name} written to {snap} and {mem}. Restore it into a new microVM with: "
         f"fc-macos snapshots load --name NEW --snapshot-path {snapshot_path} --mem-path {mem_path}")


@snapshots_group.command("load")
@click.option("--name", required=True, help="Name of the NEW microVM to create from the snapshot.")
@click.option("--snapshot-path", required=True,
              help="The VM state file: a name in the agent's snapshot directory, or an absolute path there "
              "or in an image directory.")
@click.option("--mem-path", required=True, help="The guest memory file (same rules).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Resume the guest once loaded (--no-resume: it stays paused until 'fc-macos actions resume').")
@json_option
@pass_state
def snapshots_load(state: AppState, name: str, snapshot_path: str, mem_path: str, resume: bool) -> None:
    """Create the microVM NAME from a snapshot (a fresh Firecracker, PUT /snapshot/load).

    Its vCPUs, memory, kernel and drives come from the snapshot; the drives
    are the original's files, so the load is refused while the original (or
    another restore of the snapshot) runs or is paused: stop it first.

    \b
    Examples:
      fc-macos snapshots load --name web2 --snapshot-path web.snap --mem-path web.mem
      fc-macos snapshots load --name web2 --snapshot-path web.snap --mem-path web.mem --no-resume --json
    """
    from fc_macos.agent.wire import MicroVMSpec, SnapshotSpec

    spec = MicroVMSpec(name=name, snapshot=SnapshotSpec(snapshot_path=snapshot_path, mem_path=mem_path, resume=resume))
    info = state.call_agent(lambda client: client.create_microvm(spec))
    emit(state, info.to_dict(),
         f"Restored microVM {info.name} ({info.state}, pid {info.pid}). Attach with: "
         f"fc-macos microvm shell --name {info.name}")


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


for _command in snapshot_files.COMMANDS:
    snapshots_group.add_command(_command)

GROUPS = (machine_group, actions_group, snapshots_group, metrics_group)
