"""Ports: ``fc-macos port-forward`` (listeners on this machine, bridged into
a microVM through the agent) and ``fc-macos microvm ports`` (ports the agent
publishes on its own machine: the Linux VM's address, reachable from the Mac);
``run -p`` parses its specs here too."""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from fc_macos.cli.common import AppState, emit, json_option, pass_state, table
from fc_macos.errors import ConflictError, FcMacosError, GuestAgentUnavailable, NotFoundError, UsageError

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient
    from fc_macos.agent.wire import PortSpec
    from fc_macos.forward import ForwardSpec, Listening

#: How often port-forward checks that its microVM still runs (it ends when not).
WATCH_S = 2.0
PUBLISH_HINT = "write [ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80 or 127.0.0.1:8080:80"


def parse_publish(text: str) -> PortSpec:
    """``-p [ADDR:]HOST_PORT:GUEST_PORT`` (or ``PORT`` for the same on both
    sides); ADDR is an address of the agent's machine, default 0.0.0.0."""
    from fc_macos.agent.wire import DEFAULT_HOST_ADDR, PortSpec
    from fc_macos.forward import ForwardSpec

    spec = ForwardSpec.parse(text, default_addr=DEFAULT_HOST_ADDR)
    if spec.local_port == 0:
        raise UsageError(f"a published port needs a host port: {text!r}", hint=PUBLISH_HINT)
    return PortSpec.from_dict({"host_port": spec.local_port, "guest_port": spec.guest_port, "host_addr": spec.addr})


def agent_host(state: AppState) -> str:
    """The agent's machine as the Mac reaches it (the host of its saved URL)."""
    return urlsplit(state.endpoint().url).hostname or "127.0.0.1"


def reach_at(port: dict[str, Any], host: str) -> str:
    """Where a published port is reached from here."""
    addr = str(port.get("host_addr") or "0.0.0.0")
    if addr in ("0.0.0.0", "::"):
        addr = host
    return f"[{addr}]:{port.get('host_port')}" if ":" in addr else f"{addr}:{port.get('host_port')}"


def ports_text(ports: Sequence[dict[str, Any]]) -> str:
    """``8080->80, 127.0.0.1:9000->9000`` (the address only when not every address)."""
    def one(port: dict[str, Any]) -> str:
        addr = port.get("host_addr") or "0.0.0.0"
        prefix = "" if addr in ("0.0.0.0", "::") else f"{addr}:"
        return f"{prefix}{port.get('host_port')}->{port.get('guest_port')}"

    return ", ".join(one(p) for p in ports) or "-"


def print_ports(ports: Sequence[dict[str, Any]], host: str, name: str) -> None:
    if not ports:
        click.echo(f"No published ports. Publish one with: fc-macos microvm ports --name {name} --add 8080:80")
        return
    rows = [[f"{p.get('host_addr')}:{p.get('host_port')}", str(p.get("guest_port")), reach_at(p, host)] for p in ports]
    click.echo(table(rows, ["LISTENS ON", "GUEST PORT", "REACH AT"]))


@click.command("ports")
@click.option("--name", required=True, help="Name of the microVM.")
@click.option("--add", "add", multiple=True, metavar="[ADDR:]HOST_PORT:GUEST_PORT",
              help="Publish a guest port on the agent's machine (repeatable).")
@click.option("--remove", "remove", multiple=True, type=click.IntRange(1, 65535), metavar="HOST_PORT",
              help="Stop publishing a host port (repeatable).")
@json_option
@pass_state
def ports_cmd(state: AppState, name: str, add: tuple[str, ...], remove: tuple[int, ...]) -> None:
    """List, add or remove the ports the agent publishes for microVM NAME.

    A published port listens on the agent's machine (the Linux VM; with
    --provider local, this one) while the microVM runs, so the Mac reaches
    <vm address>:HOST_PORT (see 'fc-macos vm status'). The guest needs no
    network device: connections go through the guest agent. The removals
    happen first, then the additions; when one fails, the ports stay as they
    were.

    \b
    Examples:
      fc-macos microvm ports --name web
      fc-macos microvm ports --name web --add 8080:80 --add 127.0.0.1:9000:9000
      fc-macos microvm ports --name web --remove 8080 --json
    """
    specs = [parse_publish(text) for text in add]

    async def change(client: AgentClient) -> list[dict[str, Any]]:
        if not specs and not remove:
            return await client.list_ports(name)
        before = await client.list_ports(name)
        try:
            for port in remove:
                await client.unpublish_port(name, port)
            for spec in specs:
                await client.publish_port(name, spec.host_port, spec.guest_port, host_addr=spec.host_addr)
        except FcMacosError as exc:
            restored = await _restore_ports(client, name, before)
            exc.message += "; nothing was changed" if restored else (
                f"; not every port could be published again: see 'fc-macos microvm ports --name {name}'")
            raise
        return await client.list_ports(name)

    ports = state.call_agent(change)
    emit(state, ports, lambda: print_ports(ports, agent_host(state), name))


async def _restore_ports(client: AgentClient, name: str, before: list[dict[str, Any]]) -> bool:
    """Make ``name``'s ports ``before`` again (undoing a change that failed
    midway); whether that worked (a port may have been taken meanwhile)."""
    def key(port: dict[str, Any]) -> tuple[Any, ...]:
        return port.get("host_addr"), port.get("host_port"), port.get("guest_port")

    try:
        now = await client.list_ports(name)
        wanted, present = {key(p) for p in before}, {key(p) for p in now}
        for port in now:
            if key(port) not in wanted:
                await client.unpublish_port(name, int(port["host_port"]), host_addr=port.get("host_addr"))
        for port in before:
            if key(port) not in present:
                await client.publish_port(name, int(port["host_port"]), int(port["guest_port"]),
                                          host_addr=port.get("host_addr"))
    except FcMacosError:
        return False
    return True


async def _check_forwardable(client: AgentClient, name: str) -> None:
    from fc_macos.agent.wire import RUNNING, not_running_hint

    info = await client.get_microvm(name)
    if info.state != RUNNING:
        raise ConflictError(f"microVM {name!r} is {info.state}, so nothing in it can be reached",
                            hint=not_running_hint(name, info.state))
    agent = info.guest_agent or {}
    if agent.get("state") == "absent":
        raise GuestAgentUnavailable(f"microVM {name!r} has no guest agent: {agent.get('reason') or 'absent'}",
                                    hint="port-forward goes through the guest agent; boot it with vsock (the default)",
                                    code="guest_agent_absent")


async def _forward(state: AppState, name: str, specs: list[ForwardSpec]) -> None:
    import asyncio

    from fc_macos.agent.client import AgentClient
    from fc_macos.forward import Forwarder

    def report(message: str) -> None:
        click.echo(message, err=True)

    async with AgentClient.from_endpoint(state.endpoint(), home=state.home) as client:
        await _check_forwardable(client, name)
        async with Forwarder(client, name, specs, on_event=report) as forwarder:
            _announce(state, name, forwarder.listening)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, stop.set)
            stopped, gone = loop.create_task(stop.wait()), loop.create_task(_until_gone(client, name))
            try:
                await asyncio.wait({stopped, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    loop.remove_signal_handler(signum)
                for task in (stopped, gone):
                    task.cancel()
                await asyncio.gather(stopped, gone, return_exceptions=True)
            if gone.done() and not gone.cancelled():
                raise ConflictError(f"{gone.result()}: port-forward ends",
                                    hint=f"start it again ('fc-macos microvm start --name {name}', or a new one "
                                    "with 'fc-macos run'), then forward again")


async def _until_gone(client: AgentClient, name: str) -> str:
    """Wait until microVM ``name`` no longer runs; why (deleted, or its state).
    An agent that does not answer for a while is waited for."""
    import asyncio

    from fc_macos.agent.wire import RUNNING

    while True:
        await asyncio.sleep(WATCH_S)
        try:
            info = await client.get_microvm(name)
        except NotFoundError:
            return f"microVM {name!r} was deleted"
        except FcMacosError:
            continue
        if info.state != RUNNING:
            return f"microVM {name!r} is {info.state}"


def _announce(state: AppState, name: str, listening: list[Listening]) -> None:
    if state.json:
        data = [{"addr": item.addr, "port": item.port, "guest_port": item.guest_port} for item in listening]
        click.echo(json.dumps(data), nl=True)
        return
    for item in listening:
        click.echo(f"Forwarding {item.addr}:{item.port} -> {name}:{item.guest_port}")
    click.echo("Press Ctrl+C to stop.", err=True)


@click.command("port-forward")
@click.option("--name", required=True, help="Name of the microVM.")
@click.argument("specs", nargs=-1, required=True, metavar="[ADDR:]LOCAL:GUEST...")
@json_option
@pass_state
def port_forward_cmd(state: AppState, name: str, specs: tuple[str, ...]) -> None:
    """Forward local ports to ports in microVM NAME until Ctrl+C.

    Listens on this machine (default 127.0.0.1; 0.0.0.0 for every address),
    many connections at once, each through its own tunnel of the agent. LOCAL
    0 (or ':GUEST') picks a free port; --json prints the listeners as one JSON
    line first. Ends (exit 1) when the microVM stops or is deleted.

    \b
    Examples:
      fc-macos port-forward --name web 8080:80
      fc-macos port-forward --name web 0.0.0.0:8080:80 5432:5432
      fc-macos port-forward --name web :80 --json     # [{"addr": "127.0.0.1", "port": 41234, ...}]
    """
    import asyncio

    from fc_macos.forward import ForwardSpec

    parsed = [ForwardSpec.parse(text) for text in specs]
    asyncio.run(_forward(state, name, parsed))
