"""``fc-agent install-service``: fc-agent as a systemd service on this host.

Writes ``/etc/systemd/system/fc-agent.service`` (``--unit-file``) whose
``ExecStart`` is this Python running ``fc_macos.agent.main`` with the options
given, then ``systemctl daemon-reload``, ``enable`` and ``restart``.
``--print`` shows the unit and touches nothing; ``--dry-run`` also says what it
would write and run. Without ``systemctl`` nothing is written and it fails with
a ConfigError saying so. ``KillMode=process``: stopping or restarting the
service leaves the microVMs running; the new agent takes them over.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from fc_macos.errors import ConfigError
from fc_macos.fsutil import write_private_text

UNIT_FILE = Path("/etc/systemd/system/fc-agent.service")
SERVICE = "fc-agent"


def exec_start(agent_args: list[str]) -> list[str]:
    """The service's command: this interpreter running fc-agent with ``agent_args``."""
    return [sys.executable, "-m", "fc_macos.agent.main", *agent_args]


def unit_text(argv: list[str], *, tls: bool) -> str:
    """The unit file for the fc-agent command ``argv``."""
    what = "HTTPS" if tls else "HTTP"
    return (
        f"[Unit]\nDescription=fc-agent: Firecracker microVMs over {what} (fc-macos)\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        f"[Service]\nExecStart={shlex.join(argv)}\nRestart=on-failure\nRestartSec=2\nKillMode=process\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def systemctl_commands() -> list[list[str]]:
    return [["systemctl", "daemon-reload"], ["systemctl", "enable", SERVICE], ["systemctl", "restart", SERVICE]]


def install(unit: str, unit_file: Path, *, dry_run: bool = False) -> list[str]:
    """Write ``unit`` to ``unit_file`` and enable and (re)start the service;
    returns the lines that say what was done (or, with ``dry_run``, would be).
    ConfigError, with nothing written, when there is no systemctl; ConfigError
    quoting systemctl when it fails (e.g. systemd is not running)."""
    commands = systemctl_commands()
    report = [f"write {unit_file}", *(shlex.join(c) for c in commands)]
    if dry_run:
        return [f"would {line}" if i == 0 else f"would run: {line}" for i, line in enumerate(report)]
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise ConfigError("this host has no systemctl, so fc-agent cannot be installed as a systemd service",
                          hint="see the unit with 'fc-agent install-service --print' and run fc-agent under "
                          "your init system instead, or start it by hand: 'fc-agent --tls'")
    try:
        unit_file.parent.mkdir(parents=True, exist_ok=True)
        write_private_text(unit_file, unit)
        unit_file.chmod(0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {unit_file}: {exc}", hint="run it as root (sudo fc-agent install-service ...)") from exc
    for command in commands:
        done = subprocess.run([systemctl, *command[1:]], capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise ConfigError(f"'{shlex.join(command)}' failed: {(done.stderr or done.stdout).strip()[-500:]}",
                              hint=f"{unit_file} is written; fix the cause (is systemd running on this host?) "
                              f"and run 'systemctl enable --now {SERVICE}'")
    return [f"wrote {unit_file}", *(f"ran: {shlex.join(c)}" for c in commands)]
