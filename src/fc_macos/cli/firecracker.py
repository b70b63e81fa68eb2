"""Firecracker API commands against one named microVM, through the agent's raw relay.

Bodies are checked against the Firecracker 1.16.1 spec on this host before they
are sent (fc_macos.firecracker.spec.validate_body), so mistakes are reported
with the field and the rule they break, without a round trip.
"""

from __future__ import annotations

import json
from typing import Any

import click

from fc_macos.cli.common import AppState, emit, json_option, pass_state
from fc_macos.errors import AgentRequestError, UsageError

name_option = click.option("--name", required=True, help="Name of the microVM.")


def fc_call(state: AppState, name: str, method: str, path: str, body: Any = None, *, validate: bool = True) -> Any:
    """Validate and relay one call; returns Firecracker's parsed answer (None for 204)."""
    if validate:
        from fc_macos.firecracker.spec import validate_body

        validate_body(method, path, body)
    _status, answer = state.call_agent(lambda client: client.firecracker(name, method, path, body))
    return answer


def _report(state: AppState, answer: Any, done: str) -> None:
    emit(state, answer if answer is not None else {"ok": True}, done if answer is None else None)


def _vm_config(state: AppState, name: str, key: str, default: Any) -> Any:
    config = fc_call(state, name, "GET", "/vm/config") or {}
    return config.get(key) or default


def _json_arg(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}", hint='e.g. \'{"bandwidth": {"size": 1000, "refill_time": 100}}\'') from exc


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# -- boot-source ------------------------------------------------------------

@click.group("boot")
def boot_group() -> None:
    """The boot source (kernel, initrd, command line) of a microVM, before it starts.

    \b
    Examples:
      fc-macos boot get --name web
      fc-macos boot set --name web --kernel /var/lib/fc-agent/images/vmlinux
    """


@boot_group.command("set")
@name_option
@click.option("--kernel", required=True, help="Kernel path as the agent's host sees it.")
@click.option("--initrd", help="Initrd path as the agent's host sees it.")
@click.option("--boot-args", help="Kernel command line.")
@json_option
@pass_state
def boot_set(state: AppState, name: str, kernel: str, initrd: str | None, boot_args: str | None) -> None:
    """Set the boot source (PUT /boot-source); only before the microVM starts.

    \b
    Example:
      fc-macos boot set --name web --kernel /path/vmlinux --boot-args "console=ttyS0"
    """
    body = _drop_none(kernel_image_path=kernel, initrd_path=initrd, boot_args=boot_args)
    _report(state, fc_call(state, name, "PUT", "/boot-source", body), "Boot source set.")


@boot_group.command("get")
@name_option
@json_option
@pass_state
def boot_get(state: AppState, name: str) -> None:
    """Show the boot source (from GET /vm/config).

    \b
    Example:
      fc-macos boot get --name web --json
    """
    emit(state, _vm_config(state, name, "boot-source", {}))


# -- drives -----------------------------------------------------------------

@click.group("drives")
def drives_group() -> None:
    """Block devices of a microVM.

    \b
    Examples:
      fc-macos drives list --name web
      fc-macos drives add --name web --id data --path /var/lib/fc-agent/images/data.ext4 --read-only
    """


@drives_group.command("add")
@name_option
@click.option("--id", "drive_id", required=True, help="Drive id (letters, digits, '_').")
@click.option("--path", required=True, help="Backing file as the agent's host sees it.")
@click.option("--root", is_flag=True, help="Make it the root device.")
@click.option("--read-only", is_flag=True, help="Attach read-only.")
@json_option
@pass_state
def drives_add(state: AppState, name: str, drive_id: str, path: str, root: bool, read_only: bool) -> None:
    """Add or replace a drive (PUT /drives/ID); after start this is hot-plug.

    \b
    Example:
      fc-macos drives add --name web --id data --path /srv/data.ext4
    """
    body = {"drive_id": drive_id, "path_on_host": path, "is_root_device": root, "is_read_only": read_only}
    _report(state, fc_call(state, name, "PUT", f"/drives/{drive_id}", body), f"Drive {drive_id} added.")


@drives_group.command("list")
@name_option
@json_option
@pass_state
def drives_list(state: AppState, name: str) -> None:
    """List drives (from GET /vm/config).

    \b
    Example:
      fc-macos drives list --name web --json
    """
    emit(state, _vm_config(state, name, "drives", []))


@drives_group.command("update")
@name_option
@click.option("--id", "drive_id", required=True, help="Drive id.")
@click.option("--path", help="New backing file.")
@click.option("--rate-limiter", help="Rate limiter as JSON.")
@json_option
@pass_state
def drives_update(state: AppState, name: str, drive_id: str, path: str | None, rate_limiter: str | None) -> None:
    """Change a running microVM's drive (PATCH /drives/ID).

    \b
    Example:
      fc-macos drives update --name web --id data --path /srv/data2.ext4
    """
    body = _drop_none(drive_id=drive_id, path_on_host=path, rate_limiter=_json_arg(rate_limiter, "--rate-limiter"))
    _report(state, fc_call(state, name, "PATCH", f"/drives/{drive_id}", body), f"Drive {drive_id} updated.")


@drives_group.command("remove")
@name_option
@click.option("--id", "drive_id", required=True, help="Drive id.")
@json_option
@pass_state
def drives_remove(state: AppState, name: str, drive_id: str) -> None:
    """Hot-unplug a drive (DELETE /drives/ID; a Firecracker developer preview).

    \b
    Example:
      fc-macos drives remove --name web --id data
    """
    # Not in the 1.16.1 swagger (see firecracker/README.md): Firecracker decides.
    _report(state, fc_call(state, name, "DELETE", f"/drives/{drive_id}", validate=False), f"Drive {drive_id} removed.")


# -- network ----------------------------------------------------------------

@click.group("network")
def network_group() -> None:
    """Network interfaces (TAP devices) of a microVM.

    \b
    Example:
      fc-macos network add --name web --id eth0 --host-dev tap0 --mac 06:00:AC:10:00:02
    """


@network_group.command("add")
@name_option
@click.option("--id", "iface_id", required=True, help="Interface id (letters, digits, '_').")
@click.option("--host-dev", required=True, help="TAP device on the agent's host.")
@click.option("--mac", help="Guest MAC address.")
@click.option("--mtu", type=click.IntRange(68, 65535), help="MTU.")
@json_option
@pass_state
def network_add(state: AppState, name: str, iface_id: str, host_dev: str, mac: str | None, mtu: int | None) -> None:
    """Add a network interface (PUT /network-interfaces/ID), before start.

    \b
    Example:
      fc-macos network add --name web --id eth0 --host-dev tap0
    """
    body = _drop_none(iface_id=iface_id, host_dev_name=host_dev, guest_mac=mac, mtu=mtu)
    _report(state, fc_call(state, name, "PUT", f"/network-interfaces/{iface_id}", body), f"Interface {iface_id} added.")


@network_group.command("list")
@name_option
@json_option
@pass_state
def network_list(state: AppState, name: str) -> None:
    """List network interfaces (from GET /vm/config).

    \b
    Example:
      fc-macos network list --name web
    """
    emit(state, _vm_config(state, name, "network-interfaces", []))


@network_group.command("update")
@name_option
@click.option("--id", "iface_id", required=True, help="Interface id.")
@click.option("--rx-rate-limiter", help="Receive rate limiter as JSON.")
@click.option("--tx-rate-limiter", help="Transmit rate limiter as JSON.")
@json_option
@pass_state
def network_update(state: AppState, name: str, iface_id: str, rx_rate_limiter: str | None, tx_rate_limiter: str | None) -> None:
    """Change an interface's rate limiters (PATCH /network-interfaces/ID).

    \b
    Example:
      fc-macos network update --name web --id eth0 --rx-rate-limiter '{"bandwidth": {"size": 100000, "refill_time": 100}}'
    """
    body = _drop_none(iface_id=iface_id, rx_rate_limiter=_json_arg(rx_rate_limiter, "--rx-rate-limiter"),
                      tx_rate_limiter=_json_arg(tx_rate_limiter, "--tx-rate-limiter"))
    _report(state, fc_call(state, name, "PATCH", f"/network-interfaces/{iface_id}", body), f"Interface {iface_id} updated.")


@network_group.command("remove")
@name_option
@click.option("--id", "iface_id", required=True, help="Interface id.")
@json_option
@pass_state
def network_remove(state: AppState, name: str, iface_id: str) -> None:
    """Hot-unplug an interface (DELETE /network-interfaces/ID; developer preview).

    \b
    Example:
      fc-macos network remove --name web --id eth0
    """
    answer = fc_call(state, name, "DELETE", f"/network-interfaces/{iface_id}", validate=False)
    _report(state, answer, f"Interface {iface_id} removed.")


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
    body = _drop_none(vcpu_count=vcpus, mem_size_mib=memory_mib, smt=smt)
    if body:
        _report(state, fc_call(state, name, "PATCH", "/machine-config", body), "Machine configuration updated.")
    else:
        emit(state, fc_call(state, name, "GET", "/machine-config"))


@machine_group.command("info")
@name_option
@json_option
@pass_state
def machine_info(state: AppState, name: str) -> None:
    """Instance information: id, state, VMM version (GET /).

    \b
    Example:
      fc-macos machine info --name web --json
    """
    emit(state, fc_call(state, name, "GET", "/"))


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
        _report(state, fc_call(state, name, method, path, body), f"{action.capitalize()}: done.")

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
    _report(state, fc_call(state, name, "PUT", "/snapshot/create", body), "Snapshot created.")


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
    _report(state, fc_call(state, name, "PUT", "/snapshot/load", body), "Snapshot loaded.")


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
        try:
            text = "".join([chunk async for chunk in client.logs(name, source="metrics", tail=1)])
        except AgentRequestError as exc:
            if exc.status != 400:
                raise
            raise AgentRequestError(
                exc.status, exc.code, f"this fc-agent does not serve Firecracker metrics ({exc.message})",
                hint="metrics were flushed to metrics.json in the microVM's directory on the agent's machine; "
                "read it with 'fc-macos vm shell'",
            ) from exc
        return text.strip()

    line = state.call_agent(last_line)
    try:
        record = json.loads(line) if line else {}
    except ValueError:
        record = {"raw": line}
    emit(state, record)


# -- balloon ----------------------------------------------------------------

@click.group("balloon")
def balloon_group() -> None:
    """The memory balloon device of a microVM.

    \b
    Examples:
      fc-macos balloon set --name web --amount-mib 64 --deflate-on-oom
      fc-macos balloon stats --name web
    """


@balloon_group.command("set")
@name_option
@click.option("--amount-mib", type=click.IntRange(0), required=True, help="Target balloon size in MiB.")
@click.option("--deflate-on-oom", is_flag=True, help="Let the guest deflate the balloon when it runs out of memory.")
@click.option("--stats-interval", type=click.IntRange(0), help="Statistics polling interval in seconds (0: off).")
@json_option
@pass_state
def balloon_set(state: AppState, name: str, amount_mib: int, deflate_on_oom: bool, stats_interval: int | None) -> None:
    """Install the balloon (PUT /balloon), before start.

    \b
    Example:
      fc-macos balloon set --name web --amount-mib 64 --stats-interval 1
    """
    body = _drop_none(amount_mib=amount_mib, deflate_on_oom=deflate_on_oom, stats_polling_interval_s=stats_interval)
    _report(state, fc_call(state, name, "PUT", "/balloon", body), "Balloon set.")


@balloon_group.command("get")
@name_option
@json_option
@pass_state
def balloon_get(state: AppState, name: str) -> None:
    """Show the balloon configuration (GET /balloon).

    \b
    Example:
      fc-macos balloon get --name web
    """
    emit(state, fc_call(state, name, "GET", "/balloon"))


@balloon_group.command("stats")
@name_option
@json_option
@pass_state
def balloon_stats(state: AppState, name: str) -> None:
    """Show balloon statistics (GET /balloon/statistics; needs --stats-interval > 0).

    \b
    Example:
      fc-macos balloon stats --name web --json
    """
    emit(state, fc_call(state, name, "GET", "/balloon/statistics"))


@balloon_group.command("update")
@name_option
@click.option("--amount-mib", type=click.IntRange(0), required=True, help="New target size in MiB.")
@json_option
@pass_state
def balloon_update(state: AppState, name: str, amount_mib: int) -> None:
    """Change the balloon's target size on a running microVM (PATCH /balloon).

    \b
    Example:
      fc-macos balloon update --name web --amount-mib 128
    """
    _report(state, fc_call(state, name, "PATCH", "/balloon", {"amount_mib": amount_mib}), "Balloon updated.")


def register(group: click.Group) -> None:
    for command in (boot_group, drives_group, network_group, machine_group, actions_group,
                    snapshots_group, metrics_group, balloon_group):
        group.add_command(command)
