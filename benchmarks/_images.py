"""Guest images for the benchmarks: ``--image-dir`` as given, or the offline set built now.

    from _images import add_image_options, guest_image_dir

    add_image_options(parser)                 # --image-dir, --kernel-deb, --image-cache
    image_dir = guest_image_dir(args)         # a directory with vmlinux, rootfs.ext4 [, initrd.img]

Without ``--image-dir`` the set is built with the package's own image builder
(:func:`fc_macos.images.builder.build_images`, Debian source, as
``fc-macos images build --source debian`` does) into ``--image-cache`` (default
``$XDG_CACHE_HOME/fc-macos/bench``, else ``~/.cache/fc-macos/bench``), reused while
its manifest matches. The kernel package is ``--kernel-deb``, else the newest one in a
checkout's ``.cache/test-assets`` (where ``scripts/fetch-test-kernel`` puts it), else
``apt-get download`` fetches it. The rootfs gets the package's guest agent; in a
source checkout where it has not been built yet, it is built first
(``python -m fc_macos.guest.build``, needs ``ziglang``).

Only the installed package is imported (never ``tests``): a benchmark runs from a
plain install. Failures end the program with the builder's message and hint.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--image-dir``, ``--kernel-deb`` and ``--image-cache`` to ``parser``."""
    parser.add_argument("--image-dir", type=Path,
                        help="guest images to boot (vmlinux, rootfs.ext4, optionally initrd.img); "
                        "default: build the offline (Debian) set")
    parser.add_argument("--kernel-deb", type=Path, help="Debian cloud kernel package to build the images from")
    parser.add_argument("--image-cache", type=Path, help="where built images are kept between runs")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fc-macos" / "bench"


def _checkout_kernel_deb(arch: str) -> Path | None:
    """The newest Debian cloud kernel package a source checkout has downloaded, if any."""
    from fc_macos.images.arch import debian_arch

    found = sorted((REPO / ".cache" / "test-assets").glob(f"linux-image-*-cloud-{debian_arch(arch)}_*.deb"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _guest_agent(arch: str) -> Path:
    """The package's guest agent for ``arch``; built now in a checkout that lacks it."""
    from fc_macos.errors import NotFoundError
    from fc_macos.guest import binary_path
    from fc_macos.guest.build import GuestBuildError, build

    try:
        return binary_path(arch)
    except NotFoundError:
        try:
            return build(arch)
        except GuestBuildError as exc:
            raise SystemExit(f"cannot build the guest agent: {exc}") from None


def guest_image_dir(args: argparse.Namespace) -> Path:
    """The image directory to boot: ``args.image_dir``, or the offline set built (or
    reused) now. Exits with the builder's message and hint when it cannot be built."""
    if args.image_dir is not None:
        if not (args.image_dir / "vmlinux").is_file() or not (args.image_dir / "rootfs.ext4").is_file():
            raise SystemExit(f"{args.image_dir} must hold vmlinux and rootfs.ext4 (and initrd.img if the kernel needs it)")
        return Path(args.image_dir)
    from fc_macos.errors import FcMacosError
    from fc_macos.images.arch import normalize_arch
    from fc_macos.images.builder import build_images

    arch = normalize_arch()
    out_dir = (args.image_cache or default_cache()) / f"images-{arch}"
    kernel_deb = args.kernel_deb or _checkout_kernel_deb(arch)
    try:
        images = build_images("debian", out_dir, arch, kernel_deb=kernel_deb, guest_agent=_guest_agent(arch))
    except FcMacosError as exc:
        raise SystemExit(f"cannot build the guest images: {exc}") from None
    return images.kernel.parent
