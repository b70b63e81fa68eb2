"""The Firecracker API command groups (``boot``, ``drives``, ``network``, ``machine``,
``actions``, ``snapshots``, ``metrics``, ``balloon``), each against one named
microVM through the agent's raw relay."""

from __future__ import annotations

import click

from fc_macos.cli import fc_devices, fc_instance


def register(group: click.Group) -> None:
    for command in (*fc_devices.GROUPS, *fc_instance.GROUPS):
        group.add_command(command)
