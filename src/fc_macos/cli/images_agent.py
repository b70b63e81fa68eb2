"""``fc-macos images add|rm`` and ``images list`` without a directory: the
files in the agent's image directory, where microVM specs find bare names
(``run --rootfs NAME``, ``drives add --path NAME``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from fc_macos.cli.common import AppState, ClickProgress, emit, json_option, pass_state, table
from fc_macos.cli.progress_bar import human
from fc_macos.errors import UsageError


def _progress(state: AppState) -> ClickProgress:
    return ClickProgress(as_json=state.json)


def describe_upload(answer: dict[str, Any], local: Path) -> str:
    """One line saying what an upload of ``local`` did."""
    name, size = answer.get("name"), human(float(answer.get("size") or 0))
    outcome = answer.get("outcome")
    if outcome == "present":
        return f"{name}: already on the agent with this content ({size}), nothing sent."
    if outcome == "linked":
        return f"{name}: the agent already had this content as {answer.get('linked_from')}; linked ({size}), nothing sent."
    return f"Uploaded {local} as {name} ({size}) to {answer.get('path')}."


@click.command("add")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Name in the agent's image directory (one FILE only; default: the file's name).")
@click.option("--replace", is_flag=True, help="Replace an image of that name that has other content.")
@json_option
@pass_state
def add_cmd(state: AppState, files: tuple[Path, ...], name: str | None, replace: bool) -> None:
    """Upload each FILE into the agent's image directory.

    Each file is hashed (sha256), then streamed with a progress bar; the
    agent checks size and sha256 before the file appears under its name, so
    an interrupted upload leaves nothing behind. Content the agent already has,
    under any name, is not sent again. Uploaded files are then usable by name:
    'fc-macos run --rootfs NAME', 'fc-macos drives add --path NAME'. A file
    named vmlinux, initrd.img or rootfs.ext4 becomes the default that 'run'
    boots without --kernel/--initrd/--rootfs.

    With --json, progress comes as JSON lines ({"event": "transfer", ...})
    and the last line is {"event": "result", "images": [...]}.

    \b
    Examples:
      fc-macos images add ./my-rootfs.ext4
      fc-macos images add ./build/vmlinux --name vmlinux-6.1
      fc-macos images add data.ext4 --replace --json
    """
    if name is not None and len(files) > 1:
        raise UsageError("--name applies to a single FILE", hint="upload the files one at a time to name each")
    progress = _progress(state)

    async def upload(client: Any) -> list[dict[str, Any]]:
        return [await client.upload_image(path, name, replace=replace, progress=progress) for path in files]

    answers = state.call_agent(upload)
    if state.json:
        click.echo(json.dumps({"event": "result", "images": answers}, sort_keys=True))
        return
    for answer, path in zip(answers, files):
        click.echo(describe_upload(answer, path))


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
@json_option
@pass_state
def rm_cmd(state: AppState, names: tuple[str, ...]) -> None:
    """Delete each NAME from the agent's image directory.

    Refused for a file a microVM uses (its kernel, initrd, rootfs or a drive):
    remove that microVM first.

    \b
    Example:
      fc-macos images rm my-rootfs.ext4
    """

    async def remove(client: Any) -> None:
        for image in names:
            await client.delete_image(image)

    state.call_agent(remove)
    emit(state, {"removed": list(names)}, "\n".join(f"Removed {n}." for n in names))


def list_agent(state: AppState) -> None:
    """Print the agent's image directory."""
    data = state.call_agent(lambda client: client.list_images())
    images = data.get("images", [])

    def text() -> None:
        click.echo(f"{data.get('directory')} ({human(float(data.get('free_bytes') or 0))} free)")
        if not images:
            click.echo("No images. Upload one with: fc-macos images add FILE")
            return
        rows = [[i["name"], human(float(i["size"])), (i.get("sha256") or "-")[:16]] for i in images]
        click.echo(table(rows, ["NAME", "SIZE", "SHA256"]))

    emit(state, data, text)


COMMANDS = (add_cmd, rm_cmd)

__all__ = ["COMMANDS", "add_cmd", "describe_upload", "list_agent", "rm_cmd"]
