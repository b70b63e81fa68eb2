"""The guest-image policy of ``fc-macos setup`` (step ``install-images``), for every provider.

In order:

1. ``--images DIR``: the image set ``fc-macos images build`` made in DIR (checked
   against its ``manifest.json``): its kernel, its initrd (or none: a stale one is
   removed) and its rootfs, plus the manifest, so that ``doctor`` can say where
   the images came from.
2. ``--kernel`` / ``--initrd`` / ``--rootfs``: those files (all checked before
   anything is copied). A kernel without ``--initrd`` removes the installed initrd
   (it belonged to the old kernel), and is refused when the kernel comes from an
   image set whose kernel needs its initrd. The old manifest is removed: it no
   longer describes the set.
3. Images already installed: skipped (``--force`` rebuilds them).
4. ``--skip-assets``: none.
5. Otherwise built on the agent's machine from the online source; offline, the
   hint says how to build them without internet.

Only changed files are copied (compared by SHA-256); a re-run is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fc_macos.errors import FcMacosError, SetupError
from fc_macos.image_names import BY_KIND, FILES, INITRD, KERNEL, MANIFEST, ROOTFS
from fc_macos.images.builder import read_manifest, verify_images
from fc_macos.images.digest import sha256_file
from fc_macos.progress import Progress
from fc_macos.providers.base import Check, Host, SetupOptions
from fc_macos.providers.setup_steps import Skipped

STEP = "install-images"
OFFLINE_HINT = ("without internet, build them from Debian's packages: 'fc-macos images build --source debian "
                "--out DIR', then 'fc-macos setup --images DIR'; or pass --kernel/--rootfs (and --initrd) to use "
                "your own images, or --skip-assets to install none")


def setup_command(images: Path) -> str:
    """The command that installs the image set in ``images``."""
    return f"fc-macos setup --images {images}"


def given_images(options: SetupOptions) -> tuple[dict[str, Path], Path | None]:
    """The files to install by kind, and the manifest that describes them (for --images)."""
    if options.images is not None:
        if any(getattr(options, kind) for kind in BY_KIND):
            raise SetupError(STEP, "--images cannot be combined with --kernel, --initrd or --rootfs",
                             hint="give either an image directory or single files")
        try:
            found = verify_images(Path(options.images).expanduser())
        except FcMacosError as exc:
            raise SetupError(STEP, exc.message, hint=exc.hint) from exc
        files = {"kernel": found.kernel, "rootfs": found.rootfs}
        if found.initrd is not None:
            files["initrd"] = found.initrd
        return files, found.manifest
    files = {kind: Path(getattr(options, kind)).expanduser() for kind in BY_KIND if getattr(options, kind)}
    for kind, path in files.items():
        if not path.is_file():
            raise SetupError(STEP, f"{kind} file {path} does not exist", hint=f"check the --{kind} path")
    if "kernel" in files and "initrd" not in files:
        _refuse_a_kernel_without_its_initrd(files["kernel"])
    return files, None


def _refuse_a_kernel_without_its_initrd(kernel: Path) -> None:
    manifest = read_manifest(kernel.parent) or {}
    listed: dict[str, Any] = manifest.get("files") or {}
    if INITRD in listed and listed.get(KERNEL) == sha256_file(kernel):
        initrd = kernel.parent / INITRD
        raise SetupError(
            STEP, f"the kernel {kernel} boots with the initrd of its image set ({kernel.parent / MANIFEST}); "
            "without it the guest cannot mount its root filesystem",
            hint=f"install the whole set with '{setup_command(kernel.parent)}', or add --initrd {initrd}",
        )


def _exists(host: Host, path: str) -> bool:
    return host.run('test -f "$1"', path, check=False)[0] == 0


def install_images(host: Host, options: SetupOptions, progress: Progress) -> str:
    """The body of step ``install-images`` (see the module docstring)."""
    images = host.layout.images_dir
    files, manifest = given_images(options)
    if files:
        changed = [BY_KIND[kind] for kind, path in files.items()
                   if host.put_file(path, f"{images}/{BY_KIND[kind]}")]
        removed = []
        if "initrd" not in files and ("kernel" in files or manifest) and _exists(host, f"{images}/{INITRD}"):
            host.run('rm -f "$1"', f"{images}/{INITRD}")  # an initrd belongs to its kernel
            removed.append(INITRD)
        if manifest is not None:
            if host.put_file(manifest, f"{images}/{MANIFEST}"):
                changed.append(MANIFEST)
        elif changed or removed:
            host.run('rm -f "$1"', f"{images}/{MANIFEST}")  # no longer describes the set
        if not changed and not removed:
            raise Skipped(f"{', '.join(BY_KIND[k] for k in files)} up to date in {images}")
        for name in changed:
            progress.info(f"installed {images}/{name}")
        return ", ".join([*changed, *(f"{name} removed" for name in removed)])
    if _exists(host, f"{images}/{KERNEL}") and _exists(host, f"{images}/{ROOTFS}") and not options.force:
        raise Skipped(f"images already in {images}")
    if options.skip_assets:
        raise Skipped("--skip-assets given")
    progress.info("building guest images from the online source (Firecracker's CI kernel, Alpine's minirootfs)")
    try:
        host.build_images("online", options.force)
    except FcMacosError as exc:
        raise SetupError(STEP, f"cannot build guest images: {exc.message}", hint=OFFLINE_HINT) from exc
    return f"built from the online source into {images}"


def describe_images(images_dir: str, present: set[str], manifest: dict[str, Any] | None) -> Check:
    """``doctor``'s image check: which files are installed and where they came from."""
    names = [name for name in FILES if name in present]
    if KERNEL not in present or ROOTFS not in present:
        return Check("images", False, f"no {KERNEL}/{ROOTFS} in {images_dir}",
                     "run 'fc-macos setup' (it builds them), or 'fc-macos images build --out DIR' "
                     "then 'fc-macos setup --images DIR'")
    if manifest is None:
        origin = f"files given to 'fc-macos setup --kernel/--initrd/--rootfs' (no {MANIFEST})"
    else:
        origin = (f"built by 'fc-macos images build --source {manifest.get('source', '?')}' "
                  f"({manifest.get('arch', '?')}, kernel {manifest.get('kernel_format', '?')})")
        if INITRD in (manifest.get("files") or {}) and INITRD not in present:
            return Check("images", False, f"{images_dir}: {', '.join(names)} from {origin}, but its "
                         f"{INITRD} is missing: guests will not find their root filesystem",
                         "install the whole set again: 'fc-macos setup --images DIR'")
    return Check("images", True, f"{images_dir}: {', '.join(names)}; {origin}")
