"""``fc-macos images``: build and inspect guest image sets (kernel, initrd,
rootfs) on this machine, and the agent's image directory (``add``, ``rm``,
``list`` without a directory: :mod:`fc_macos.cli.images_agent`).

Works inside the root ``fc-macos`` group (``cli.add_command(images)``) and on
its own (``CliRunner().invoke(images, [...])``): errors are printed here with
their hint and exit code either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fc_macos.cli import images_agent
from fc_macos.cli.common import AppState, ClickProgress, emit, json_option, pass_state, print_error
from fc_macos.config import home_dir
from fc_macos.errors import FcMacosError
from fc_macos.images import SOURCES, ImageSet, build_images, verify_images
from fc_macos.progress import NullProgress


def _run(state: AppState, work: Callable[[], Any]) -> Any:
    try:
        return work()
    except FcMacosError as exc:
        print_error(state, exc.code, exc.message, exc.hint)
        raise click.exceptions.Exit(exc.exit_code) from None


def _describe(images: ImageSet) -> str:
    lines = [
        f"kernel:  {images.kernel} ({images.kernel_format})",
        f"initrd:  {images.initrd if images.initrd else '-'}",
        f"rootfs:  {images.rootfs}",
        f"arch:    {images.arch}",
        f"source:  {images.source}",
    ]
    return "\n".join(lines)


class _ShowsErrors(click.Group):
    """Prints FcMacosError with its hint and exits with its code (also when used on its own)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FcMacosError as exc:
            print_error(ctx.find_object(AppState), exc.code, exc.message, exc.hint)
            ctx.exit(exc.exit_code)


@click.group("images", cls=_ShowsErrors)
@click.pass_context
def images(ctx: click.Context) -> None:
    """Guest images: build image sets here (a kernel Firecracker boots, an
    initrd when it needs one, an ext4 rootfs whose /init starts a shell on the
    serial console), and manage the files of the agent's image directory,
    which microVMs name by file name (run --rootfs NAME, drives add --path NAME).

    \b
    Examples:
      fc-macos images build --source online --out ~/fc-images
      fc-macos images build --source debian --out ./images --kernel-deb linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb
      fc-macos images list ./images --json       # an image set built here
      fc-macos images add ./my-rootfs.ext4        # upload into the agent's image directory
      fc-macos images list                        # the agent's image directory
      fc-macos images rm my-rootfs.ext4
    """
    if ctx.find_object(AppState) is None:
        ctx.obj = AppState(home=home_dir())


@images.command("build")
@click.option("--source", type=click.Choice(SOURCES), default="online", show_default=True,
              help="online: Firecracker's CI kernel + Alpine minirootfs (pinned, sha256-checked); "
              "debian: Debian's cloud kernel package + busybox-static (offline-friendly).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for vmlinux, initrd.img, rootfs.ext4 and manifest.json.")
@click.option("--arch", type=click.Choice(["x86_64", "aarch64", "amd64", "arm64"]),
              help="Guest architecture (default: this machine's).")
@click.option("--kernel-deb", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="debian source: use this linux-image-*-cloud-* .deb instead of downloading one with apt-get.")
@click.option("--base-url", help="online source: fetch from this mirror instead of the pinned hosts "
              "(same paths; the pinned sha256 sums still apply).")
@click.option("--force", is_flag=True, help="Rebuild even when the directory is up to date.")
@json_option
@pass_state
def build_cmd(state: AppState, source: str, out_dir: Path, arch: str | None, kernel_deb: Path | None,
              base_url: str | None, force: bool) -> None:
    """Build an image set into --out. Does nothing when --out already holds a set
    built the same way (see manifest.json); builds atomically otherwise.

    \b
    Examples:
      fc-macos images build --out ~/fc-images
      fc-macos images build --source debian --out ./images --json
    """
    progress = NullProgress() if state.json else ClickProgress(as_json=False)
    built = _run(state, lambda: build_images(
        source, out_dir, arch, kernel_deb=kernel_deb, base_url=base_url, force=force, progress=progress,
    ))
    from fc_macos.providers.image_install import setup_command

    install = setup_command(out_dir.resolve())
    emit(state, {**built.to_dict(), "install": install}, f"{_describe(built)}\nInstall them with: {install}")


@images.command("list")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@json_option
@pass_state
def list_cmd(state: AppState, directory: Path | None) -> None:
    """List the agent's image directory, or the image set in DIRECTORY here.

    Without DIRECTORY: the files in the agent's image directory (name, size,
    sha256 when known) and its free space. With DIRECTORY: the image set built
    there on this machine ('images build --out'), after checking every file
    against its manifest.

    \b
    Examples:
      fc-macos images list
      fc-macos images list ~/fc-images --json
    """
    if directory is None:
        images_agent.list_agent(state)
        return
    found = _run(state, lambda: verify_images(directory))
    emit(state, found.to_dict(), _describe(found))


for _command in images_agent.COMMANDS:
    images.add_command(_command)
