"""``fc-macos drives add`` (a file of this machine is uploaded first, a
writable drive becomes the microVM's own copy) and ``fc-macos drives get``
(download a microVM's drive file, e.g. the copy a writable drive wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fc_macos.cli.common import AppState, ClickProgress, emit, json_option, pass_state
from fc_macos.cli.local_files import agent_file
from fc_macos.cli.progress_bar import human
from fc_macos.progress import NullProgress, Progress


def transfer_progress(state: AppState) -> Progress:
    """A bar on a terminal; nothing with --json (whose stdout is one JSON document)."""
    return NullProgress() if state.json else ClickProgress(as_json=False)


def get_back_hint(name: str, drive_id: str) -> str:
    return f"fc-macos drives get --name {name} --id {drive_id} --out FILE (once it is stopped or paused)"


def add_drive(state: AppState, name: str, drive_id: str, path: str, root: bool, read_only: bool) -> None:
    """Attach ``path`` (uploaded first if it is a file of this machine the agent lacks) as drive ``drive_id``."""

    async def attach(client: Any) -> tuple[Any, Any]:
        resolved = await agent_file(client, path, transfer_progress(state))
        note = resolved.note(f"drive {drive_id}")
        if note:
            click.echo(note, err=True)
        answer = await client.attach_drive(name, drive_id, resolved.value, read_only=read_only, root=root)
        return resolved, answer

    resolved, answer = state.call_agent(attach)
    text = f"Drive {drive_id} added"
    if read_only:
        text += f" (read-only: {answer['path']})."
    else:
        text += (f": {name} writes its own copy at {answer['path']} (on the agent's machine); "
                 f"{answer['source']} stays as it was. Get the copy back with: {get_back_hint(name, drive_id)}")
    emit(state, {**answer, "local_file": resolved.to_dict()}, text)


@click.command("get")
@click.option("--name", required=True, help="Name of the microVM.")
@click.option("--id", "drive_id", required=True, help="Drive id ('rootfs' for the root drive).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write here.")
@json_option
@pass_state
def drives_get(state: AppState, name: str, drive_id: str, out: Path) -> None:
    """Download a microVM's drive file to --out on this machine.

    A writable drive (and the rootfs) is the microVM's own copy, in its work
    directory on the agent's machine: this is how its contents come back.
    Refused while the microVM runs: stop it (or pause it: a paused guest's
    disk may lack what it has not flushed yet).

    \b
    Examples:
      fc-macos microvm stop --name web
      fc-macos drives get --name web --id data --out ./data-after.ext4
      fc-macos drives get --name web --id rootfs --out ./web-rootfs.ext4
    """
    result = state.call_agent(lambda client: client.download_drive(name, drive_id, out,
                                                                   progress=transfer_progress(state)))
    emit(state, {**result, "out": str(out)}, f"Saved drive {drive_id} of {name} ({human(float(result['size']))}, "
                                             f"from {result['path']}) to {out}.")


__all__ = ["add_drive", "drives_get", "get_back_hint", "transfer_progress"]
