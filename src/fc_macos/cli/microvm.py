"""``fc-macos run`` and ``fc-macos microvm ...``: create, inspect, attach to, stop
and remove microVMs through fc-agent."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from fc_macos.agent.wire import (
    DEFAULT_BOOT_ARGS, ENDED_STATES, FAILED, MAX_MEMORY_MIB, MAX_VCPUS, RUNNING, MicroVMInfo, MicroVMSpec,
)
from fc_macos.cli.common import AppState, emit, format_duration, json_option, pass_state, table
from fc_macos.cli.drive_commands import transfer_progress
from fc_macos.cli.local_files import create_microvm
from fc_macos.cli.ports import agent_host, parse_publish, ports_cmd, ports_text, reach_at
from fc_macos.cli.microvm_lifecycle import restart_cmd, start_cmd
from fc_macos.errors import ConflictError, UsageError

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient

name_option = click.option("--name", required=True, help="Name of the microVM.")


def _uptime(info: MicroVMInfo) -> float | None:
    if info.uptime_s is not None:
        return info.uptime_s
    if info.state == RUNNING and info.started_at:
        return max(0.0, time.time() - info.started_at)
    return None


def _print_table(infos: list[MicroVMInfo]) -> None:
    if not infos:
        click.echo("No microVMs. Create one with: fc-macos run --name demo --background")
        return
    rows = [
        [i.name, i.state, str(i.vcpus), f"{i.memory_mib} MiB", str(i.pid or "-"), format_duration(_uptime(i)),
         str((i.network or {}).get("guest_ip") or "-"), _agent_state(i), ports_text(i.ports)]
        for i in infos
    ]
    click.echo(table(rows, ["NAME", "STATE", "VCPUS", "MEMORY", "PID", "UPTIME", "ADDRESS", "AGENT", "PORTS"]))


def _agent_state(info: MicroVMInfo) -> str:
    """The guest agent's state for the list ('-' while the microVM does not run)."""
    return str((info.guest_agent or {}).get("state") or "-")


def _agent_line(agent: dict[str, object]) -> str:
    parts = [str(agent.get("state"))]
    if agent.get("version"):
        parts.append(f"version {agent['version']}")
    if isinstance(agent.get("ready_s"), (int, float)):
        parts.append(f"ready {agent['ready_s']:.1f} s after start")
    if agent.get("reason") and agent.get("state") != "ready":
        parts.append(str(agent["reason"]))
    return ", ".join(parts)


def _print_details(info: MicroVMInfo) -> None:
    click.echo(f"Name:      {info.name}")
    click.echo(f"State:     {info.state}")
    click.echo(f"PID:       {info.pid or '-'}")
    click.echo(f"vCPUs:     {info.vcpus}")
    click.echo(f"Memory:    {info.memory_mib} MiB")
    click.echo(f"Uptime:    {format_duration(_uptime(info))}")
    if info.cpu_percent is not None:
        click.echo(f"CPU:       {info.cpu_percent:.1f}%")
    if info.memory_rss_mib is not None:
        click.echo(f"RSS:       {info.memory_rss_mib:.1f} MiB")
    if info.exit_status is not None:
        click.echo(f"Exit:      {info.exit_status}")
    if info.error:
        click.echo(f"Error:     {info.error}")
    for key, label in (("kernel", "Kernel"), ("initrd", "Initrd"), ("rootfs", "Rootfs"), ("boot_args", "Boot args")):
        if info.spec.get(key):
            click.echo(f"{label + ':':<11}{info.spec[key]}")
    if info.network:
        click.echo(f"Network:   {_network_line(info.network)}")
    if info.guest_agent:
        click.echo(f"Guest agent: {_agent_line(info.guest_agent)}")
        guest = info.guest_agent.get("guest")
        if isinstance(guest, dict):
            click.echo(f"Guest:     {_guest_line(guest)}")
    if info.vsock:
        click.echo(f"vsock:     CID {info.vsock.get('guest_cid')} ({info.vsock.get('uds_path')})")
    if info.ports:
        click.echo(f"Ports:     {ports_text(info.ports)}")


def _guest_line(guest: dict[str, Any]) -> str:
    """What the guest says of itself: hostname, kernel, its addresses (loopback left out)."""
    parts = [f"{guest.get('hostname') or '?'}, Linux {guest.get('kernel') or '?'} ({guest.get('arch') or '?'})"]
    if isinstance(guest.get("uptime_s"), (int, float)):
        parts.append(f"up {format_duration(float(guest['uptime_s']))}")
    addresses = [f"{a.get('ifname')} {a.get('address')}/{a.get('prefixlen')}" for a in guest.get("addresses") or ()
                 if isinstance(a, dict) and a.get("ifname") != "lo"]
    parts.append("addresses: " + (", ".join(addresses) if addresses else "none but loopback"))
    return "; ".join(parts)


def _network_line(net: dict[str, object]) -> str:
    nat = f"NAT via {net.get('nat')} out of {net.get('uplink')}" if net.get("nat") else f"no NAT: {net.get('nat_hint')}"
    return (f"guest {net.get('guest_ip')} (mac {net.get('mac')}), host {net.get('host_ip')} on "
            f"{net.get('tap')}; {nat}")


@click.command("run")
@click.option("--name", help="Name of the microVM (default: microvm-N).")
@click.option("--vcpus", type=click.IntRange(1, MAX_VCPUS), default=1, show_default=True, help="Number of vCPUs.")
@click.option("--memory", "memory_mib", type=click.IntRange(16, MAX_MEMORY_MIB), default=256, show_default=True,
              metavar="MiB", help="Memory in MiB.")
@click.option("--kernel", help="Kernel: a file here (uploaded unless the agent has it) or a file name in the agent's "
              "image directory (default: vmlinux).")
@click.option("--initrd", help="Initrd, the same way (default: initrd.img when installed).")
@click.option("--rootfs", help="Root filesystem, the same way; each microVM boots its own copy (default: rootfs.ext4).")
@click.option("--boot-args", default=DEFAULT_BOOT_ARGS, show_default=True, help="Kernel command line.")
@click.option("--background", "-d", is_flag=True, help="Do not attach the console; print the microVM and return.")
@click.option("--start/--no-start", default=True, show_default=True,
              help="--no-start: configure the microVM but do not boot it, so that devices can be added "
              "before 'fc-macos actions start'.")
@click.option("--network", is_flag=True,
              help="Give the guest an eth0 on its own TAP device and /30 of 172.16.0.0/16 (reachable from the "
              "agent's machine; NATed out of its default route when the agent has nft or iptables).")
@click.option("-p", "--publish", "publish", multiple=True, metavar="[ADDR:]HOST_PORT:GUEST_PORT",
              help="Publish a guest port on the agent's machine while the microVM runs (repeatable): the Mac "
              "reaches <vm address>:HOST_PORT (see 'fc-macos vm status').")
@click.option("--balloon", "balloon_mib", type=click.IntRange(0, MAX_MEMORY_MIB), metavar="MiB",
              help="Add a memory balloon with this target size (a balloon can only be added before the start; "
              "resize it later with 'fc-macos balloon update').")
@click.option("--vsock/--no-vsock", default=True, show_default=True,
              help="The vsock device and the guest agent (exec, cp, ports); --no-vsock boots without them.")
@click.option("--wait/--no-wait", "wait", default=None,
              help="Return only once the guest agent answers (the default with --background or --json).")
@click.option("--wait-timeout", "wait_timeout_s", type=click.FloatRange(0, 3600, min_open=True), default=60.0,
              show_default=True, metavar="S", help="How long --wait waits for the guest agent.")
@json_option
@pass_state
def run_cmd(state: AppState, background: bool, publish: tuple[str, ...], wait: bool | None,
            **fields: object) -> None:
    """Create and boot a microVM, then attach its serial console.

    Press Ctrl+] to detach; the microVM keeps running. With --background
    (or --json) the console is not attached. With --no-start the microVM is
    only configured (state 'created'): add network interfaces, drives or
    change the machine, then start it. With --network the guest's eth0 is
    configured at boot (its address, the TAP and NAT are in the output).
    --kernel/--initrd/--rootfs naming a file of this machine (with a '/', or
    present here) upload it to the agent first unless it has that content
    (see 'fc-macos images'); a bare name is a file in the agent's image directory.

    \b
    Examples:
      fc-macos run --name web --vcpus 2 --memory 512
      fc-macos run --name mine --rootfs ./my-rootfs.ext4   # uploaded once, then reused
      fc-macos run --name job-1 --background --json
      fc-macos run --name web --network --background   # prints: Network: guest 172.16.0.2 ...
      fc-macos run --name web -p 8080:80 --background  # <vm address>:8080 reaches the guest's :80
      fc-macos run --name web --memory 512 --balloon 64 --background
      fc-macos run --name web --no-start
      fc-macos network add --name web --id eth0 --host-dev tap0
      fc-macos actions start --name web
    """
    data = {k: v for k, v in fields.items() if v is not None}
    data["ports"] = [asdict(parse_publish(text)) for text in publish]
    starts, has_agent = bool(data.get("start", True)), bool(data.get("vsock", True))
    if wait is None:  # wait when not attaching the console: the user wants the microVM usable at once
        wait = (background or state.json) and starts and has_agent
    if wait:
        data["wait"] = "guest_agent"
    spec = MicroVMSpec.from_dict(data)
    local: list[dict[str, object]] = []  # files of this machine made the agent's (cli/local_files.py)
    info = state.call_agent(lambda client: create_microvm(client, spec, progress=transfer_progress(state),
                                                          say=lambda line: click.echo(line, err=True), record=local))
    extra = {"local_files": local} if local else {}
    if not spec.start:
        name = info.name
        emit(state, info.to_dict() | extra,
             f"Configured {name} (pid {info.pid}), not started. Add devices with "
             f"'fc-macos network add --name {name} ...' / 'fc-macos drives add --name {name} ...' "
             f"(or 'fc-macos machine config --name {name} --vcpus N'), then start it with "
             f"'fc-macos actions start --name {name}'.")
        return
    if background or state.json:
        emit(state, info.to_dict() | extra, "\n".join([f"Started microVM {info.name} (pid {info.pid}). "
                                               f"Attach with: fc-macos microvm shell --name {info.name}",
                                               *_started_lines(state, info)]))
        return
    click.echo(f"Started microVM {info.name} (pid {info.pid}).", err=True)
    for line in _started_lines(state, info):
        click.echo(line, err=True)
    _attach(state, info.name)


def _started_lines(state: AppState, info: MicroVMInfo) -> list[str]:
    """What else a started microVM has: network, guest agent, published ports."""
    lines = [f"Network: {_network_line(info.network)}"] if info.network else []
    agent = info.guest_agent or {}
    if agent.get("state") == "ready":
        ready = f" in {agent['ready_s']:.1f} s" if isinstance(agent.get("ready_s"), (int, float)) else ""
        lines.append(f"Guest agent: ready{ready} (fc-macos exec --name {info.name} -- CMD)")
    elif agent.get("state"):
        lines.append(f"Guest agent: {_agent_line(agent)}")
    if info.ports:
        host = agent_host(state)
        lines += [f"Published: {p.get('host_addr')}:{p.get('host_port')} -> {info.name}:{p.get('guest_port')} "
                  f"(reach it at {reach_at(p, host)})" for p in info.ports]
    return lines


def _attach(state: AppState, name: str) -> None:
    from fc_macos.cli.console import attach

    outcome = attach(state, name)
    click.echo(err=True)  # the guest's last line may not have ended
    if outcome == "detached":
        click.echo(f"Detached from {name}; it keeps running. Stop it with: fc-macos microvm stop --name {name}",
                   err=True)
    else:
        click.echo(f"The console of {name} closed (the microVM stopped or the agent went away).", err=True)
        _say_if_failed(state, name)


def _say_if_failed(state: AppState, name: str) -> None:
    """After the console closed: an error (exit 1) when the microVM failed (a guest kernel panic ...)."""
    from fc_macos.errors import FcMacosError

    try:
        info = state.call_agent(lambda client: client.get_microvm(name))
    except FcMacosError:
        return
    if info.state == FAILED:
        raise FcMacosError(
            f"microVM {name} failed: {info.error or 'see its console'}",
            hint=f"read its console with 'fc-macos microvm logs --name {name}'; remove it with "
            f"'fc-macos microvm rm --name {name}', or boot it again with 'fc-macos microvm start --name {name}'",
        )


@click.group("microvm")
def microvm_group() -> None:
    """Inspect and control microVMs.

    \b
    Examples:
      fc-macos microvm list
      fc-macos microvm shell --name web
      fc-macos microvm stop --name web && fc-macos microvm start --name web
      fc-macos microvm restart --name web
      fc-macos microvm rm --all --force
    """


@microvm_group.command("list")
@json_option
@pass_state
def list_cmd(state: AppState) -> None:
    """List microVMs (alias: ls). --json prints an array of objects.

    Each row: state, vCPUs, memory, pid, uptime, the guest's network
    address, its guest agent (ready, starting, absent ...) and its published
    ports (HOST_PORT->GUEST_PORT); --json has them as "guest_agent" and
    "ports".

    \b
    Example:
      fc-macos microvm list --json
    """
    infos = state.call_agent(lambda client: client.list_microvms())
    emit(state, [i.to_dict() for i in infos], lambda: _print_table(infos))


@microvm_group.command("status")
@click.option("--name", help="Only this microVM (default: all).")
@json_option
@pass_state
def status_cmd(state: AppState, name: str | None) -> None:
    """Show the details of one microVM, or of all of them.

    \b
    Examples:
      fc-macos microvm status --name web
      fc-macos microvm status --json
    """
    if name:
        info = state.call_agent(lambda client: client.get_microvm(name))
        emit(state, info.to_dict(), lambda: _print_details(info))
        return
    infos = state.call_agent(lambda client: client.list_microvms())

    def show() -> None:
        for index, item in enumerate(infos):
            if index:
                click.echo()
            _print_details(item)
        if not infos:
            _print_table(infos)

    emit(state, [i.to_dict() for i in infos], show)


@microvm_group.command("shell")
@name_option
@pass_state
def shell_cmd(state: AppState, name: str) -> None:
    """Attach to the serial console of a microVM (a shell on ttyS0).

    Press Ctrl+] to detach. Without a terminal, stdin is sent as is (scripts).

    \b
    Examples:
      fc-macos microvm shell --name web
      echo 'uname -a' | fc-macos microvm shell --name web
    """
    _attach(state, name)


@microvm_group.command("logs")
@name_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the microVM stops.")
@click.option("--source", type=click.Choice(["serial", "firecracker", "metrics"]), default="serial", show_default=True,
              help="The guest's console output or Firecracker's own log.")
@click.option("--tail", type=click.IntRange(0), help="Only the last N lines.")
@pass_state
def logs_cmd(state: AppState, name: str, follow: bool, source: str, tail: int | None) -> None:
    """Print a microVM's console output or Firecracker log.

    \b
    Examples:
      fc-macos microvm logs --name web --tail 50
      fc-macos microvm logs --name web --source firecracker -f
    """

    async def stream(client: AgentClient) -> None:
        async for chunk in client.logs(name, source=source, tail=tail, follow=follow):
            click.echo(chunk, nl=False)

    state.call_agent(stream)


@microvm_group.command("stop")
@click.option("--name", help="The microVM to stop.")
@click.option("--all", "stop_all", is_flag=True, help="Stop every running microVM.")
@click.option("--force", is_flag=True, help="Kill at once instead of asking the guest to shut down.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds to wait for a graceful stop before killing.")
@json_option
@pass_state
def stop_cmd(state: AppState, name: str | None, stop_all: bool, force: bool, timeout_s: float) -> None:
    """Stop a microVM (--name) or all of them (--all). Its files stay until 'rm'.

    \b
    Examples:
      fc-macos microvm stop --name web
      fc-macos microvm stop --all --force
    """
    if bool(name) == stop_all:
        raise UsageError("give either --name NAME or --all", hint="see 'fc-macos microvm stop --help'")

    async def stop(client: AgentClient) -> list[MicroVMInfo]:
        if name:
            return [await client.stop_microvm(name, force=force, timeout_s=timeout_s)]
        running = [i for i in await client.list_microvms() if i.state not in ENDED_STATES]
        return [await client.stop_microvm(i.name, force=force, timeout_s=timeout_s) for i in running]

    stopped = state.call_agent(stop)
    text = "\n".join(f"Stopped {i.name}." for i in stopped) or "No running microVMs."
    emit(state, [i.to_dict() for i in stopped] if stop_all else stopped[0].to_dict(), text)


@microvm_group.command("rm")
@click.option("--name", help="The microVM to remove.")
@click.option("--all", "rm_all", is_flag=True, help="Remove every microVM (refused while any runs, unless --force).")
@click.option("--force", is_flag=True, help="Stop it (them) first if it runs.")
@json_option
@pass_state
def rm_cmd(state: AppState, name: str | None, rm_all: bool, force: bool) -> None:
    """Remove a stopped microVM (--name) or every microVM (--all) and their files.

    Without --force a running microVM is refused (with --all: nothing is
    removed, and the running ones are named); --force stops it first.

    \b
    Examples:
      fc-macos microvm rm --name web --force
      fc-macos microvm rm --all
    """
    if bool(name) == rm_all:
        raise UsageError("give either --name NAME or --all", hint="see 'fc-macos microvm rm --help'")

    async def remove(client: AgentClient) -> list[str]:
        if name:
            names = [name]
        else:
            every = await client.list_microvms()
            names = [i.name for i in every]
            running = [i.name for i in every if i.state not in ENDED_STATES]
            if running and not force:
                raise ConflictError(
                    f"{len(running)} microVM(s) still run: {', '.join(running)}; nothing was removed",
                    hint="stop them first ('fc-macos microvm stop --all'), or add --force to stop and remove them",
                    code="running",
                )
        for each in names:
            await client.delete_microvm(each, force=force)
        return names

    removed = state.call_agent(remove)
    if name:
        emit(state, {"name": name, "removed": True}, f"Removed {name}.")
    else:
        emit(state, [{"name": n, "removed": True} for n in removed],
             "\n".join(f"Removed {n}." for n in removed) or "No microVMs to remove.")


_ls_alias = copy.copy(list_cmd)
_ls_alias.hidden = True  # 'ls' works; the help lists 'list' once
microvm_group.add_command(_ls_alias, "ls")
microvm_group.add_command(ports_cmd)
microvm_group.add_command(start_cmd)
microvm_group.add_command(restart_cmd)
