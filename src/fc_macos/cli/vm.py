"""``fc-macos vm ...``: the Linux VM that hosts fc-agent (for ``local``: the agent process)."""

from __future__ import annotations

from dataclasses import asdict

import click

from fc_macos.cli.common import AppState, ClickProgress, emit, json_option, pass_state


def _show_status(state: AppState, status: object, extra: dict[str, str] | None = None) -> None:
    data = {**asdict(status), **(extra or {})}  # type: ignore[call-overload]

    def show() -> None:
        lines = [("VM", f"{data['name']} ({data['provider']})"), ("State", data["state"])]
        if data.get("address"):
            lines.append(("Address", data["address"]))
        agent = data.get("agent_url") or "-"
        lines.append(("Agent", f"{agent} ({'ok' if data['agent_ok'] else 'not answering'})"))
        lines += [(str(k), "-" if v is None else v) for k, v in sorted((data.get("details") or {}).items())]
        width = max(len(label) for label, _ in lines) + 2
        for label, value in lines:
            click.echo(f"{label + ':':<{width}}{value}")

    emit(state, data, show)


@click.group("vm")
def vm_group() -> None:
    """Control the Linux VM that runs fc-agent (with --provider local: the agent itself).

    \b
    Examples:
      fc-macos vm status
      fc-macos vm stop && fc-macos vm start
    """


@vm_group.command("status")
@json_option
@pass_state
def vm_status(state: AppState) -> None:
    """Show whether the VM and fc-agent run, and the VM's address.

    The address is where the Mac reaches the published ports of microVMs
    ('fc-macos run -p', 'fc-macos microvm ports'): <address>:HOST_PORT.

    \b
    Example:
      fc-macos vm status --json       # {"address": ..., "agent_ok": ..., "state": ...}
    """
    _show_status(state, state.provider.vm_status())


@vm_group.command("start")
@json_option
@pass_state
def vm_start(state: AppState) -> None:
    """Start the VM and fc-agent (a no-op when they run).

    \b
    Example:
      fc-macos vm start
    """
    from fc_macos.progress import NullProgress

    # With --json, stdout is the one status object: progress is not printed.
    progress = NullProgress() if state.json else ClickProgress(False)
    _show_status(state, state.provider.vm_start(progress))


@vm_group.command("stop")
@click.option("--force", is_flag=True, help="Stop at once; with --provider local also stop every microVM.")
@json_option
@pass_state
def vm_stop(state: AppState, force: bool) -> None:
    """Stop the Linux VM, and so every microVM in it; a no-op when stopped.

    With --provider local there is no VM: this stops fc-agent, and its microVMs
    keep running (in their own sessions) until 'vm start' brings the agent back
    to them; --force stops them first.

    \b
    Examples:
      fc-macos vm stop
      fc-macos --provider local vm stop --force
    """
    report = state.provider.vm_stop(force=force)
    if not state.json:
        click.echo(report.message[0].upper() + report.message[1:] + ".")
    _show_status(state, report.status, extra={"message": report.message})


@vm_group.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def vm_shell(state: AppState, command: tuple[str, ...]) -> None:
    """Open a shell in the VM, or run COMMAND there; exits with its exit code.

    \b
    Examples:
      fc-macos vm shell
      fc-macos vm shell -- ls /var/lib/fc-agent
    """
    code = state.provider.vm_shell(list(command) or None)
    raise click.exceptions.Exit(code)


@vm_group.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@pass_state
def vm_logs(state: AppState, follow: bool) -> None:
    """Print fc-agent's log (and the VM's, where the provider has it).

    \b
    Example:
      fc-macos vm logs -f
    """
    for line in state.provider.vm_logs(follow=follow):
        click.echo(line, nl=not line.endswith("\n"))
