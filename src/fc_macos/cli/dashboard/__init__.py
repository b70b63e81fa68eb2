"""``fc-macos dashboard``: a live full-screen view of the Linux VM, fc-agent and
the microVMs, with keys to attach, follow logs, stop, pause, delete and create.

Modules: :mod:`.model` (what is shown, as plain data and text), :mod:`.source`
(polls and actions against the agent and the provider), :mod:`.app` and
:mod:`.screens` (the Textual UI). Textual is imported only when the command
runs, never at the CLI's start.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from fc_macos.cli.common import AppState, pass_state

if TYPE_CHECKING:
    from fc_macos.cli.dashboard.app import DashboardApp


def attach_command(state: AppState, name: str) -> list[str]:
    """The command that attaches this terminal to ``name``'s console: this
    fc-macos's own ``microvm shell``, with the same home and provider (or context)."""
    context = state.provider.endpoint().context if state.provider.name == "remote" else None
    agent = ["--context", context] if context else ["--provider", state.config.provider]
    return [sys.executable, "-m", "fc_macos.cli.main", "--home", str(state.home), *agent,
            "microvm", "shell", "--name", name]


def build_app(state: AppState) -> DashboardApp:
    """The dashboard for ``state``'s provider and saved agent endpoint."""
    from fc_macos.cli.dashboard.app import DashboardApp
    from fc_macos.cli.dashboard.source import DashboardSource

    provider = state.provider
    source = DashboardSource(endpoint=provider.endpoint, vm_status=provider.vm_status, home=state.home)
    return DashboardApp(source, lambda name: attach_command(state, name))


@click.command("dashboard")
@pass_state
def dashboard_cmd(state: AppState) -> None:
    """A live full-screen view of the Linux VM, fc-agent and every microVM.

    Shows the VM (state, address, CPUs, memory, disk, load), the agent
    (reachable or not, version, uptime) and a table of microVMs (state,
    vCPUs, memory, CPU % over the last second, RSS, uptime, guest address,
    published ports, guest agent), refreshed every second. Keys (also in the
    footer; ? shows them all): Enter attaches the console (Ctrl+] comes back),
    l follows the log, s stops, p pauses or resumes, d deletes, n creates,
    / filters, q quits.

    \b
    Example:
      fc-macos dashboard
      fc-macos --provider local dashboard
    """
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        from fc_macos.errors import UsageError

        raise UsageError("the dashboard needs a terminal (stdin and stdout)",
                         hint="for scripts use 'fc-macos microvm list --json'")
    build_app(state).run()

