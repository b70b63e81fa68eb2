"""``fc-macos setup`` and ``fc-macos doctor``: prepare the agent, check prerequisites."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from fc_macos.cli.common import AppState, ClickProgress, emit, json_option, pass_state

_file = click.Path(dir_okay=False, path_type=Path)


@click.command("setup")
@click.option("--cpus", type=click.IntRange(1, 64), help="CPUs of the Linux VM (tart).")
@click.option("--memory", "memory_mib", type=click.IntRange(512), metavar="MiB", help="Memory of the Linux VM in MiB (tart).")
@click.option("--force", is_flag=True, help="Redo every step, restarting what runs.")
@click.option("--skip-assets", is_flag=True, help="Do not install guest kernel/rootfs images.")
@click.option("--vm-name", help="Name of the Linux VM (tart).")
@click.option("--image", metavar="OCI", help="OCI image of the Linux VM (tart).")
@click.option("--firecracker-bin", type=_file, help="Firecracker binary to use (default: 'firecracker' on PATH; on a "
              "remote context, uploaded to its fc-agent, which runs it for new microVMs).")
@click.option("--firecracker-mirror", metavar="URL", envvar="FC_MACOS_FIRECRACKER_MIRROR",
              help="Fetch the pinned Firecracker release from this mirror instead of GitHub's releases "
              "(the same paths: URL/VERSION/firecracker-VERSION-ARCH.tgz; the pinned sha256 still applies; "
              "env FC_MACOS_FIRECRACKER_MIRROR).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Install the image set 'fc-macos images build --out DIR' made (kernel, initrd, rootfs).")
@click.option("--kernel", type=_file, help="Guest kernel (uncompressed vmlinux) to install.")
@click.option("--initrd", type=_file, help="Guest initrd to install.")
@click.option("--rootfs", type=_file, help="Guest root filesystem (ext4) to install.")
@json_option
@pass_state
def setup_cmd(state: AppState, memory_mib: int | None, **options: object) -> None:
    """Prepare everything: the Linux VM (or this host), Firecracker, guest
    images and fc-agent. Safe to run again: finished steps are skipped.

    With --json, progress is printed as JSON lines ({"event": "step"|"done"|
    "skip"|"info", ...}) and the last line is {"event": "result", ...}.

    Guest images: --images DIR installs a set made by 'fc-macos images build';
    --kernel/--initrd/--rootfs install single files (a kernel built with an
    initrd needs its --initrd); with neither, setup builds them from the online
    source. Re-running with other images replaces the old ones.

    Firecracker: --firecracker-bin, else the one installed, else 'firecracker'
    on the machine's PATH, else the pinned release: --firecracker-mirror or
    GitHub, downloaded on this machine, sha256-checked, kept in <home>/downloads/.

    \b
    Examples:
      fc-macos setup
      fc-macos --provider local setup --firecracker-bin ./firecracker --images ./images
      fc-macos setup --kernel vmlinux --initrd initrd.img --rootfs rootfs.ext4
    """
    from fc_macos.providers.base import SetupOptions

    opts = SetupOptions(memory_mib=memory_mib, **options)  # type: ignore[arg-type]
    provider = state.provider
    endpoint = provider.setup(opts, ClickProgress(state.json))
    state.config.save(state.home)
    if state.json:
        click.echo(json.dumps({"event": "result", "provider": provider.name, "agent_url": endpoint.url}))
    else:
        click.echo(f"fc-agent is ready at {endpoint.url}. Try: fc-macos run --name demo")


@click.command("doctor")
@json_option
@pass_state
def doctor_cmd(state: AppState) -> None:
    """Check every prerequisite and say how to fix what fails (exit 1 if any fails).

    \b
    Example:
      fc-macos doctor
    """
    checks = state.provider.doctor()
    data = {"provider": state.provider.name, "ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}

    def show() -> None:
        for check in checks:
            mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red")
            click.echo(f"[{mark}] {check.name}: {check.detail}")
            if not check.ok and check.fix:
                click.echo(f"       fix: {check.fix}")

    emit(state, data, show)
    if not data["ok"]:
        raise click.exceptions.Exit(1)
