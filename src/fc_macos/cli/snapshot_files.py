"""``fc-macos snapshots list`` and ``snapshots rm``: the snapshot files the agent
has (where they live, which microVM made them, the disk a restore boots on)
and removing them. Registered on the ``snapshots`` group by
:mod:`fc_macos.cli.fc_instance`."""

from __future__ import annotations

from typing import Any

import click

from fc_macos.cli.common import AppState, emit, json_option, pass_state, table


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "gone"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


def _print(listing: dict[str, Any]) -> None:
    snapshots = listing.get("snapshots", [])
    directory = listing.get("directory")
    if not snapshots:
        click.echo(f"No snapshots in {directory}. Make one of a paused microVM with: "
                   "fc-macos snapshots create --name NAME --snapshot-path NAME.snap --mem-path NAME.mem")
        return
    rows = []
    for snap in snapshots:
        disk = snap.get("disk") or "-"
        if snap.get("disk") and not snap.get("disk_exists"):
            disk += " (gone)"
        rows.append([_short(snap["snapshot_path"], directory), _short(snap.get("mem_path"), directory),
                     snap.get("microvm") or "-", _size(snap.get("snapshot_bytes")) + " + " + _size(snap.get("mem_bytes"))
                     if snap.get("mem_path") else _size(snap.get("snapshot_bytes")), disk])  # fmt: skip
    click.echo(table(rows, ["SNAPSHOT", "MEMORY", "MADE BY", "SIZE", "DISK"]))
    click.echo(f"(bare names are in {directory} on the agent's machine)")


def _short(path: str | None, directory: Any) -> str:
    if not path:
        return "-"
    prefix = f"{directory}/"
    return path[len(prefix):] if isinstance(directory, str) and path.startswith(prefix) else path


@click.command("list")
@json_option
@pass_state
def snapshots_list(state: AppState) -> None:
    """List the agent's snapshots: their files, the microVM that made each, and
    the disk a restore boots on (that microVM's; gone once it is removed).

    \b
    Example:
      fc-macos snapshots list --json
    """
    listing = state.call_agent(lambda client: client.list_snapshots())
    emit(state, listing, lambda: _print(listing))


@click.command("rm")
@click.option("--snapshot-path", "paths", required=True, multiple=True,
              help="The snapshot's state file: a bare name in the agent's snapshot directory, or the path "
              "'snapshots list' shows (repeatable). Its memory file goes with it.")  # fmt: skip
@json_option
@pass_state
def snapshots_rm(state: AppState, paths: tuple[str, ...]) -> None:
    """Remove snapshots (the state file and its memory file).

    \b
    Example:
      fc-macos snapshots rm --snapshot-path web.snap
    """

    async def remove(client: Any) -> list[str]:
        return [file for path in paths for file in await client.delete_snapshot(path)]

    removed = state.call_agent(remove)
    emit(state, {"removed": removed}, "\n".join(f"Removed {f}." for f in removed))


COMMANDS = (snapshots_list, snapshots_rm)
