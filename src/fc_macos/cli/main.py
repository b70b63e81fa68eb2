"""The ``fc-macos`` command: global options, command registration and the one
place where errors become messages and exit codes.

Exit codes: 0 success, 1 failure, 2 usage error (click's own usage errors and
:class:`fc_macos.errors.UsageError`); otherwise ``FcMacosError.exit_code``.

Commands are registered by name in :data:`COMMANDS` and their modules imported
only when the command line names them, so that ``fc-macos --version`` and
``fc-macos microvm list --help`` start fast (``benchmarks/cli_startup.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from fc_macos._version import __version__
from fc_macos.cli.common import AppState, emit, json_option, pass_state, print_error
from fc_macos.config import PROVIDERS, home_dir
from fc_macos.errors import FcMacosError, UsageError

SHELLS = ("bash", "zsh", "fish")

#: Top-level command name -> "module:attribute" of its click command, imported on first use.
COMMANDS = {
    "setup": "fc_macos.cli.setup:setup_cmd",
    "doctor": "fc_macos.cli.setup:doctor_cmd",
    "vm": "fc_macos.cli.vm:vm_group",
    "run": "fc_macos.cli.microvm:run_cmd",
    "microvm": "fc_macos.cli.microvm:microvm_group",
    "images": "fc_macos.cli.images:images",
    "boot": "fc_macos.cli.fc_devices:boot_group",
    "drives": "fc_macos.cli.fc_devices:drives_group",
    "network": "fc_macos.cli.fc_devices:network_group",
    "balloon": "fc_macos.cli.fc_devices:balloon_group",
    "machine": "fc_macos.cli.fc_instance:machine_group",
    "actions": "fc_macos.cli.fc_instance:actions_group",
    "snapshots": "fc_macos.cli.fc_instance:snapshots_group",
    "metrics": "fc_macos.cli.fc_instance:metrics_group",
    "dashboard": "fc_macos.cli.dashboard:dashboard_cmd",
    "exec": "fc_macos.cli.exec:exec_cmd",
    "cp": "fc_macos.cli.cp:cp_cmd",
    "port-forward": "fc_macos.cli.ports:port_forward_cmd",
    "context": "fc_macos.cli.context:context_group",
}


class FcMacosGroup(click.Group):
    """The root group: imports the commands of :data:`COMMANDS` when they are
    named, and turns every FcMacosError into 'Error:' + 'Hint:' and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            from importlib import import_module

            module, attribute = COMMANDS[cmd_name].split(":")
            command = getattr(import_module(module), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FcMacosError as exc:
            state = ctx.find_object(AppState)
            print_error(state, exc.code, exc.message, exc.hint)
            ctx.exit(exc.exit_code)


@click.group(cls=FcMacosGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--provider", type=click.Choice(PROVIDERS), envvar="FC_MACOS_PROVIDER",
    help="Where fc-agent runs: 'tart' (a Linux VM on macOS) or 'local' (this Linux host). "
    "Default: the one in config.json, else tart on macOS and local on Linux.",
)
@click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), envvar="FC_MACOS_HOME",
    help="Directory holding config.json and agent.json (env FC_MACOS_HOME).",
)
@click.option(
    "--context", "context_name", metavar="NAME",
    help="Talk to the fc-agent of context NAME (a server over HTTPS, see 'fc-macos context --help'); "
    "env FC_MACOS_CONTEXT; default: the one 'fc-macos context use' chose, else the provider's own agent.",
)
@click.version_option(__version__, "--version", prog_name="fc-macos")
@click.pass_context
def cli(ctx: click.Context, provider: str | None, home: Path | None, context_name: str | None) -> None:
    """Run Firecracker microVMs on a Mac (through Tart) or on a Linux host with KVM.

    \b
    First time:
      fc-macos setup                      # prepare the VM and fc-agent
      fc-macos run --name web             # boot a microVM and attach its console
      fc-macos microvm list               # what runs
    A Linux server over the network (fc-agent --tls there):
      fc-macos context add lab --url https://lab:8443 --token-file token --fingerprint SHA256:...
      fc-macos --context lab microvm list
    Add --json to any command that reports data for machine-readable output.
    """
    context_env = os.environ.get("FC_MACOS_CONTEXT") or None
    explicit_provider = provider if ctx.get_parameter_source("provider") == click.core.ParameterSource.COMMANDLINE else None
    if explicit_provider and (context_name or context_env):
        where = f"--context {context_name}" if context_name else f"FC_MACOS_CONTEXT={context_env}"
        error = UsageError(f"--provider {explicit_provider} and {where} name two different agents",
                           hint="drop one of them (a context's agent is always reached through the remote provider)")
        print_error(None, error.code, error.message, error.hint)
        ctx.exit(error.exit_code)
    ctx.obj = AppState(home=home or home_dir(), provider_name=provider, context_name=context_name,
                       context_env=context_env)


@cli.command("version")
@json_option
@pass_state
def version_cmd(state: AppState) -> None:
    """Print the version of fc-macos (and of the agent, when it is reachable).

    \b
    Example:
      fc-macos version --json
    """
    data: dict[str, Any] = {"fc_macos": __version__, "python": sys.version.split()[0]}
    try:
        health = state.call_agent(lambda client: client.health())
        data["agent"] = health.get("version")
    except FcMacosError as exc:
        data["agent"] = None
        data["agent_error"] = exc.message
    text = f"fc-macos {data['fc_macos']} (python {data['python']})\nagent: {data['agent'] or 'not reachable'}"
    emit(state, data, text)


@cli.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion_cmd(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    Completion is click's own: the script calls fc-macos with
    _FC_MACOS_COMPLETE=<shell>_source set.

    \b
    Examples:
      eval "$(fc-macos completion bash)"                 # in ~/.bashrc
      eval "$(fc-macos completion zsh)"                  # in ~/.zshrc
      fc-macos completion fish > ~/.config/fish/completions/fc-macos.fish
    """
    from click.shell_completion import get_completion_class

    comp_cls = get_completion_class(shell)
    assert comp_cls is not None
    comp = comp_cls(cli, {}, "fc-macos", "_FC_MACOS_COMPLETE")
    click.echo(comp.source())


def main() -> None:
    cli(prog_name="fc-macos")


if __name__ == "__main__":
    main()
