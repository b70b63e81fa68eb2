"""Firecracker device commands on a named microVM: boot source, drives, network
interfaces and the balloon (relayed through the agent, validated here first)."""

from __future__ import annotations

from typing import Any

import click

from fc_macos.cli.common import AppState, json_option, pass_state
from fc_macos.cli.drive_commands import add_drive, drives_get
from fc_macos.cli.fc_relay import (
    config_section, drop_none, fc_call, json_arg, name_option, report, show_command,
)
from fc_macos.errors import FirecrackerAPIError

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
    body = drop_none(kernel_image_path=kernel, initrd_path=initrd, boot_args=boot_args)
    report(state, fc_call(state, name, "PUT", "/boot-source", body), "Boot source set.")


# -- drives -----------------------------------------------------------------

@click.group("drives")
def drives_group() -> None:
    """Block devices of a microVM.

    \b
    Examples:
      fc-macos drives list --name web
      fc-macos drives add --name web --id data --path ./data.ext4
      fc-macos drives get --name web --id data --out ./data-back.ext4
    """


@drives_group.command("add")
@name_option
@click.option("--id", "drive_id", required=True, help="Drive id (letters, digits, '_').")
@click.option("--path", required=True, help="A file here (uploaded unless the agent has it), or a name in the "
              "agent's image directory.")
@click.option("--root", is_flag=True, help="Make it the root device.")
@click.option("--read-only", is_flag=True, help="Attach read-only.")
@json_option
@pass_state
def drives_add(state: AppState, name: str, drive_id: str, path: str, root: bool, read_only: bool) -> None:
    """Add or replace a drive (after start: hot-plug).

    --path may name a file on this machine (it contains a '/' or exists
    here): it is uploaded to the agent's image directory first unless the
    agent already has that content. A bare name is a file there. A writable
    drive is the microVM's own copy (the image stays unchanged); the output
    says where, and 'fc-macos drives get' brings it back.

    \b
    Examples:
      fc-macos drives add --name web --id data --path ./data.ext4
      fc-macos drives add --name web --id ref --path reference.ext4 --read-only
    """
    add_drive(state, name, drive_id, path, root, read_only)


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
    body = drop_none(drive_id=drive_id, path_on_host=path, rate_limiter=json_arg(rate_limiter, "--rate-limiter"))
    report(state, fc_call(state, name, "PATCH", f"/drives/{drive_id}", body), f"Drive {drive_id} updated.")


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
    report(state, fc_call(state, name, "DELETE", f"/drives/{drive_id}", validate=False), f"Drive {drive_id} removed.")


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
    body = drop_none(iface_id=iface_id, host_dev_name=host_dev, guest_mac=mac, mtu=mtu)
    report(state, fc_call(state, name, "PUT", f"/network-interfaces/{iface_id}", body), f"Interface {iface_id} added.")


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
    body = drop_none(iface_id=iface_id, rx_rate_limiter=json_arg(rx_rate_limiter, "--rx-rate-limiter"),
                      tx_rate_limiter=json_arg(tx_rate_limiter, "--tx-rate-limiter"))
    report(state, fc_call(state, name, "PATCH", f"/network-interfaces/{iface_id}", body), f"Interface {iface_id} updated.")


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
    report(state, answer, f"Interface {iface_id} removed.")


# -- balloon ----------------------------------------------------------------

BALLOON_HINT = (
    "a balloon is added before the microVM starts: 'fc-macos run --name {name} --balloon MiB', or "
    "'fc-macos run --name {name} --no-start', 'fc-macos balloon set --name {name} --amount-mib N', "
    "'fc-macos actions start --name {name}'"
)
#: Firecracker's faults that mean "no balloon here" or "too late for one".
BALLOON_FAULTS = ("No balloon device", "not supported after starting", "not supported before starting")


def balloon_call(state: AppState, name: str, method: str, path: str, body: Any = None) -> Any:
    """:func:`fc_call` whose refusals for a missing balloon, or one set after
    the start, say how a balloon is added (before the start)."""
    try:
        return fc_call(state, name, method, path, body)
    except FirecrackerAPIError as exc:
        if not any(fault in exc.fault_message for fault in BALLOON_FAULTS):
            raise
        hint = BALLOON_HINT.format(name=name)
        if "before starting" in exc.fault_message:
            hint = f"this works once the microVM runs: 'fc-macos actions start --name {name}'"
        raise FirecrackerAPIError(exc.status, exc.fault_message, body=exc.body, hint=hint) from exc


@click.group("balloon")
def balloon_group() -> None:
    """The memory balloon device of a microVM.

    A balloon is added before the microVM starts: 'run --balloon MiB', or
    'run --no-start' then 'balloon set' and 'actions start'. Once it runs,
    'balloon update' changes the target size and 'balloon stats' reports.

    \b
    Examples:
      fc-macos run --name web --memory 512 --balloon 64 --background
      fc-macos balloon update --name web --amount-mib 128
      fc-macos balloon stats --name web
      fc-macos run --name cfg --no-start && fc-macos balloon set --name cfg --amount-mib 64 --deflate-on-oom
      fc-macos actions start --name cfg
    """


@balloon_group.command("set")
@name_option
@click.option("--amount-mib", type=click.IntRange(0), required=True, help="Target balloon size in MiB.")
@click.option("--deflate-on-oom", is_flag=True, help="Let the guest deflate the balloon when it runs out of memory.")
@click.option("--stats-interval", type=click.IntRange(0), help="Statistics polling interval in seconds (0: off).")
@json_option
@pass_state
def balloon_set(state: AppState, name: str, amount_mib: int, deflate_on_oom: bool, stats_interval: int | None) -> None:
    """Install the balloon (PUT /balloon) on a microVM made with 'run --no-start'.

    Firecracker takes a balloon only before the start; on a running microVM
    use 'run --balloon MiB' next time, or 'balloon update' for one it has.

    \b
    Example:
      fc-macos run --name web --no-start
      fc-macos balloon set --name web --amount-mib 64 --stats-interval 1
      fc-macos actions start --name web
    """
    body = drop_none(amount_mib=amount_mib, deflate_on_oom=deflate_on_oom, stats_polling_interval_s=stats_interval)
    report(state, balloon_call(state, name, "PUT", "/balloon", body), "Balloon set.")


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
    report(state, balloon_call(state, name, "PATCH", "/balloon", {"amount_mib": amount_mib}), "Balloon updated.")


boot_group.add_command(show_command("get", "Show the boot source (from GET /vm/config).",
                                    "fc-macos boot get --name web --json", config_section("boot-source", {})))
drives_group.add_command(show_command("list", "List drives (from GET /vm/config).",
                                      "fc-macos drives list --name web --json", config_section("drives", [])))
network_group.add_command(show_command("list", "List network interfaces (from GET /vm/config).",
                                       "fc-macos network list --name web", config_section("network-interfaces", [])))
balloon_group.add_command(show_command("get", "Show the balloon configuration (GET /balloon).",
                                       "fc-macos balloon get --name web",
                                       lambda state, name: balloon_call(state, name, "GET", "/balloon")))
balloon_group.add_command(show_command("stats", "Show balloon statistics (GET /balloon/statistics; needs "
                                       "--stats-interval > 0, which 'run --balloon' sets).",
                                       "fc-macos balloon stats --name web --json",
                                       lambda state, name: balloon_call(state, name, "GET", "/balloon/statistics")))

drives_group.add_command(drives_get)

GROUPS = (boot_group, drives_group, network_group, balloon_group)
