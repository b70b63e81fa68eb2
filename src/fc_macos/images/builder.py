"""``build_images``: the one entry point that makes a guest image set.

An image directory holds ``vmlinux`` (always this name: the agent's default,
even for an arm64 ``Image``), ``initrd.img`` (only when the kernel needs one)
and ``rootfs.ext4`` (with the guest agent, ``fc_macos.guest.binary_path(arch)``
unless another is given, at ``/sbin/fc-guest-agent``), plus ``manifest.json``::

    {"format": 1, "arch": "x86_64", "source": "debian", "kernel_format": "elf",
     "inputs": {...what it was built from...},
     "files": {"vmlinux": "<sha256>", "initrd.img": "<sha256>", "rootfs.ext4": "<sha256>"}}

``inputs`` always holds ``recipe`` (a digest of the guest-side scripts) and
``guest_agent_sha256``, so a new guest agent or ``/init`` rebuilds the set.

Building is idempotent (a directory whose manifest matches the request and whose
files match the manifest's checksums is left alone) and atomic enough to never
leave a half-made set: everything is built in a temporary directory beside the
outputs, the old manifest is removed, the files are renamed into place and the
new manifest is written last. A directory without a manifest is rebuilt. A lock
file serialises concurrent builds into the same directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fc_macos import image_names
from fc_macos.image_names import MANIFEST
from fc_macos.errors import ImageError, UsageError
from fc_macos.images.arch import normalize_arch
from fc_macos.images.digest import sha256_file
from fc_macos.images.rootfs import check_guest_agent
from fc_macos.images.initramfs import init_script
from fc_macos.progress import NullProgress, Progress

MANIFEST_FORMAT = 1
SOURCES = ("debian", "online")


@dataclass(frozen=True)
class ImageSet:
    """A built image set. ``initrd`` is None when the kernel boots without one."""

    kernel: Path
    initrd: Path | None
    rootfs: Path
    arch: str
    kernel_format: str  # "elf" | "arm64-image"
    source: str
    manifest: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd) if self.initrd else None,
            "rootfs": str(self.rootfs),
            "arch": self.arch,
            "kernel_format": self.kernel_format,
            "source": self.source,
            "manifest": str(self.manifest),
        }


def recipe_digest() -> str:
    """Changes whenever the guest-side scripts change, so old image sets get rebuilt."""
    digest = hashlib.sha256()
    for name in ("initramfs-init.sh", "rootfs-init.sh"):
        digest.update(init_script(name))
    return digest.hexdigest()[:16]


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``out_dir``, or None when absent or unreadable."""
    try:
        data = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def image_set(out_dir: Path, manifest: dict[str, Any]) -> ImageSet:
    files = manifest.get("files", {})
    return ImageSet(
        kernel=out_dir / image_names.KERNEL,
        initrd=out_dir / image_names.INITRD if image_names.INITRD in files else None,
        rootfs=out_dir / image_names.ROOTFS,
        arch=manifest["arch"],
        kernel_format=manifest["kernel_format"],
        source=manifest["source"],
        manifest=out_dir / MANIFEST,
    )


def verify_images(out_dir: Path) -> ImageSet:
    """The image set in ``out_dir`` after checking every file against the manifest's
    sha256; ``ImageError`` when the manifest is missing or a file differs."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("format") != MANIFEST_FORMAT:
        raise ImageError(f"{out_dir} has no valid {MANIFEST}", hint="build the images with 'fc-macos images build'")
    for name, digest in manifest.get("files", {}).items():
        path = out_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            raise ImageError(f"{path} is missing or changed since it was built", hint="rebuild with 'fc-macos images build'")
    return image_set(out_dir, manifest)


def _matches(manifest: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """True when ``manifest`` has every key of ``wanted``, with ``inputs`` as a subset
    (a debian build without ``kernel_deb`` accepts whichever package was used)."""
    if manifest is None:
        return False
    have_inputs = manifest.get("inputs") or {}
    return all(manifest.get(k) == v for k, v in wanted.items() if k != "inputs") and all(
        have_inputs.get(k) == v for k, v in wanted["inputs"].items()
    )


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    with (out_dir / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def guest_agent_for(arch: str, guest_agent: Path | None = None) -> Path:
    """``guest_agent`` or the bundled binary for ``arch``, checked to be a static
    executable for ``arch`` (``NotFoundError`` with the build command when missing)."""
    if guest_agent is None:
        from fc_macos.guest import binary_path

        guest_agent = binary_path(arch)
    check_guest_agent(guest_agent, arch)
    return guest_agent


def _inputs(source: str, arch: str, kernel_deb: Path | None, guest_agent: Path) -> dict[str, Any]:
    inputs: dict[str, Any] = {"recipe": recipe_digest(), "guest_agent_sha256": sha256_file(guest_agent)}
    if source == "debian" and kernel_deb is not None:
        inputs.update(_deb_inputs(kernel_deb))
    if source == "online":
        from fc_macos.images.online import pins_for

        inputs["pins"] = {name: pin.sha256 for name, pin in pins_for(arch).items()}
        # A different base URL serves the same pinned bytes, so it is not an input.
    return inputs


def _deb_inputs(kernel_deb: Path) -> dict[str, str]:
    if not kernel_deb.is_file():
        raise ImageError(f"kernel package {kernel_deb} does not exist", hint="check the --kernel-deb path")
    return {"kernel_deb": kernel_deb.name, "kernel_deb_sha256": sha256_file(kernel_deb)}


def _build(source: str, work: Path, arch: str, kernel_deb: Path | None, base_url: str | None,
           download_dir: Path, progress: Progress, guest_agent: Path) -> tuple[str, dict[str, Any]]:
    """Build into ``work``; return the kernel format and the inputs learnt on the way."""
    if source == "debian":
        from fc_macos.images.debian import DEFAULT_BUSYBOX, build_from_deb, check_busybox_arch, download_kernel_deb

        check_busybox_arch(DEFAULT_BUSYBOX, arch)  # before downloading anything
        if kernel_deb is None:
            progress.step("download-kernel", "downloading the Debian cloud kernel package")
            kernel_deb = download_kernel_deb(download_dir, arch, progress)
            progress.done("download-kernel", kernel_deb.name)
        return build_from_deb(kernel_deb, work, progress, arch=arch, guest_agent=guest_agent), _deb_inputs(kernel_deb)
    from fc_macos.images.online import build_online

    return build_online(work, arch, progress, base_url=base_url, download_dir=download_dir,
                        guest_agent=guest_agent), {}


def _install(work: Path, out_dir: Path, manifest: dict[str, Any], progress: Progress) -> None:
    """Move the built files from ``work`` into ``out_dir``: the old manifest goes first,
    the new one last, so a crash in between leaves a set that will be rebuilt."""
    names = list(manifest["files"])
    progress.step("install", f"moving the images into {out_dir}")
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for name in image_names.FILES:
        if name not in names:
            (out_dir / name).unlink(missing_ok=True)
    for name in names:
        os.replace(work / name, out_dir / name)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(work / MANIFEST, out_dir / MANIFEST)
    progress.done("install", ", ".join(names))


def build_images(
    source: str,
    out_dir: Path,
    arch: str | None = None,
    *,
    kernel_deb: Path | None = None,
    base_url: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    guest_agent: Path | None = None,
) -> ImageSet:
    """Build (or reuse) the image set from ``source`` (``"debian"`` or ``"online"``) in
    ``out_dir`` for ``arch`` (default: the host's).

    Idempotent: returns the existing set, without building, when ``out_dir``'s
    manifest names the same source, arch and inputs and every file matches its
    checksum (``force`` rebuilds anyway). ``kernel_deb`` (debian only) is a local
    kernel package; without it the current one is downloaded with apt-get into
    ``out_dir/downloads``. ``base_url`` (online only) replaces the pinned hosts;
    the pinned checksums still apply. ``guest_agent`` replaces the bundled
    ``fc-guest-agent`` for ``arch`` (``fc_macos.guest.binary_path(arch)``; when that
    is missing: ``NotFoundError`` saying how to build it, before anything is
    downloaded). Raises ``ImageError`` (or ``UsageError`` for bad arguments); on
    failure ``out_dir`` holds no manifest unless the previous set is intact."""
    progress = progress or NullProgress()
    if source not in SOURCES:
        raise UsageError(f"unknown image source {source!r}", hint=f"use one of: {', '.join(SOURCES)}")
    if kernel_deb is not None and source != "debian":
        raise UsageError("--kernel-deb only applies to the debian source", hint="drop it or use --source debian")
    if base_url is not None and source != "online":
        raise UsageError("--base-url only applies to the online source", hint="drop it or use --source online")
    arch = normalize_arch(arch)
    guest_agent = guest_agent_for(arch, guest_agent)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"cannot create {out_dir}: {exc}", hint="check the path and permissions") from exc
    inputs = _inputs(source, arch, kernel_deb, guest_agent)
    wanted = {"format": MANIFEST_FORMAT, "source": source, "arch": arch, "inputs": inputs}
    with _locked(out_dir):
        if not force and _matches(read_manifest(out_dir), wanted):
            try:
                existing = verify_images(out_dir)
            except ImageError:
                pass
            else:
                progress.skip("images", f"{out_dir} is up to date")
                return existing
        try:
            with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
                work = Path(tmp)
                kernel_format, learnt = _build(source, work, arch, kernel_deb, base_url, out_dir / "downloads", progress,
                                               guest_agent)
                names = [n for n in image_names.FILES if (work / n).exists()]
                manifest = {
                    **wanted,
                    "inputs": {**inputs, **learnt},
                    "kernel_format": kernel_format,
                    "files": {n: sha256_file(work / n) for n in names},
                }
                _install(work, out_dir, manifest, progress)
        except OSError as exc:
            raise ImageError(f"building images in {out_dir} failed: {exc}", hint="check free space and permissions") from exc
        return image_set(out_dir, manifest)


__all__ = ["SOURCES", "ImageSet", "build_images", "read_manifest", "verify_images"]
