"""``fc-macos microvm start`` and ``microvm restart``: boot a stopped microVM
again from its own disk with its own spec (like ``docker start``), or stop and
start it. Registered on the ``microvm`` group by :mod:`fc_macos.cli.microvm`."""

from __future__ import annotations

import click

from fc_macos.cli.common import AppState, emit, json_option, pass_state

wait_options = (
    click.option("--wait/--no-wait", "wait", default=True, show_default=True,
                 help="Return only once the guest agent answers (--no-wait: once it booted)."),
    click.option("--wait-timeout", "wait_timeout_s", type=click.FloatRange(0, 3600, min_open=True), default=60.0,
                 show_default=True, metavar="S", help="How long --wait waits for the guest agent."),
)  # fmt: skip


def _with_wait(command: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(wait_options):
        command = option(command)
    return command


def _report(state: AppState, verb: str, info: object) -> None:
    from fc_macos.agent.wire import MicroVMInfo
    from fc_macos.cli.microvm import _started_lines

    assert isinstance(info, MicroVMInfo)
    emit(state, info.to_dict(), "\n".join([
        f"{verb} {info.name} (pid {info.pid}) on its own disk. Attach with: fc-macos microvm shell --name {info.name}",
        *_started_lines(state, info),
    ]))  # fmt: skip


@click.command("start")
@click.option("--name", required=True, help="The stopped microVM to start.")
@_with_wait
@json_option
@pass_state
def start_cmd(state: AppState, name: str, wait: bool, wait_timeout_s: float) -> None:
    """Boot a stopped microVM again from its own disk, with its own spec.

    Its rootfs copy (kept when it stopped), vCPUs, memory, kernel, boot
    arguments, drives, network address and published ports are the ones it
    had. A running microVM is refused (restart it); one restored from a
    snapshot has no disk of its own (load the snapshot again). A guest that
    dies or panics before its guest agent answers is reported as failed,
    with its console's last lines.

    \b
    Examples:
      fc-macos microvm stop --name web && fc-macos microvm start --name web
      fc-macos microvm start --name web --no-wait --json
    """
    info = state.call_agent(lambda client: client.start_microvm(name, wait=wait, wait_timeout_s=wait_timeout_s))
    _report(state, "Started", info)


@click.command("restart")
@click.option("--name", required=True, help="The microVM to restart.")
@click.option("--force", is_flag=True, help="Kill it at once instead of asking the guest to shut down.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
              help="Seconds to wait for a graceful stop before killing.")
@_with_wait
@json_option
@pass_state
def restart_cmd(state: AppState, name: str, force: bool, timeout_s: float, wait: bool, wait_timeout_s: float) -> None:
    """Stop a microVM (if it runs) and start it again on its own disk.

    \b
    Examples:
      fc-macos microvm restart --name web
      fc-macos microvm restart --name web --force
    """
    info = state.call_agent(lambda client: client.restart_microvm(
        name, force=force, timeout_s=timeout_s, wait=wait, wait_timeout_s=wait_timeout_s))  # fmt: skip
    _report(state, "Restarted", info)


__all__ = ["restart_cmd", "start_cmd"]
