"""Guest images for tests: the offline (Debian) image set, built once per cache.

Import path and stable signature::

    from tests.helpers.guest_images import build_test_images

    images = build_test_images()      # ImageSet: .kernel, .initrd, .rootfs (Paths)

Or, as a session fixture (import it into a conftest.py)::

    from tests.helpers.guest_images import guest_images  # noqa: F401  (pytest fixture)

The images are built from the Debian cloud kernel package that
``scripts/fetch-test-kernel`` downloads into the cache directory
(``$FC_MACOS_TEST_CACHE``, default ``<repo>/.cache/test-assets``), into
``<cache>/guest-images-<arch>/`` (``vmlinux``, ``initrd.img``, ``rootfs.ext4``,
``manifest.json``). The rootfs holds this checkout's guest agent
(:func:`guest_agent_binary`, built with ``python -m fc_macos.guest.build`` when
missing), whose checksum is part of the manifest: a new agent rebuilds the set.
A set whose manifest matches is reused across sessions; the first build takes a
few seconds. Tests skip, saying how to enable them, when the package or a build
tool (busybox-static, e2fsprogs, dpkg-deb, ziglang) is missing.

The images are shared: never write to them. Copy the rootfs before booting it
read-write (the agent does this for every microVM).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fc_macos.errors import NotFoundError
from fc_macos.images.arch import debian_arch, normalize_arch
from fc_macos.images.builder import ImageSet, build_images

REPO = Path(__file__).resolve().parents[2]
_built: dict[Path, ImageSet] = {}


def default_cache_dir() -> Path:
    """``$FC_MACOS_TEST_CACHE``, else ``<repo>/.cache/test-assets``."""
    env = os.environ.get("FC_MACOS_TEST_CACHE")
    return Path(env) if env else REPO / ".cache" / "test-assets"


def find_kernel_deb(cache_dir: Path, arch: str | None = None) -> Path | None:
    """The newest (by mtime) ``linux-image-*-cloud-<arch>_*.deb`` in ``cache_dir``, or None."""
    pattern = f"linux-image-*-cloud-{debian_arch(normalize_arch(arch))}_*.deb"
    found = sorted(cache_dir.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _missing_tools() -> list[str]:
    missing = [tool for tool in ("dpkg-deb",) if shutil.which(tool) is None]
    if not Path("/bin/busybox").exists():
        missing.append("busybox-static (/bin/busybox)")
    if shutil.which("mkfs.ext4") is None and shutil.which("mkfs.ext4", path="/sbin:/usr/sbin") is None:
        missing.append("e2fsprogs (mkfs.ext4)")
    return missing


def guest_agent_binary(arch: str | None = None) -> Path:
    """This checkout's ``fc-guest-agent`` for ``arch`` (default: the host's), built now
    (``fc_macos.guest.build``) if it has not been; ``pytest.skip`` when it cannot be."""
    from fc_macos.guest import binary_path

    try:
        return binary_path(arch)
    except NotFoundError:
        from fc_macos.guest.build import GuestBuildError, build

        try:
            return build(normalize_arch(arch))
        except GuestBuildError as exc:
            pytest.skip(f"cannot build the guest agent: {exc.message} ({exc.hint})")


def build_test_images(cache_dir: Path | None = None) -> ImageSet:
    """Build (or reuse) the offline test image set for the host's architecture and
    return it. Calls ``pytest.skip`` when the kernel package or a tool is missing."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache_dir in _built:
        return _built[cache_dir]
    deb = find_kernel_deb(cache_dir)
    if deb is None:
        pytest.skip(f"no Debian cloud kernel package in {cache_dir}: run scripts/fetch-test-kernel")
    missing = _missing_tools()
    if missing:
        pytest.skip(f"guest images need {', '.join(missing)}: apt-get install busybox-static e2fsprogs dpkg")
    images = build_images("debian", cache_dir / f"guest-images-{normalize_arch()}", kernel_deb=deb,
                          guest_agent=guest_agent_binary())
    _built[cache_dir] = images
    return images


@pytest.fixture(scope="session")
def guest_images() -> ImageSet:
    """The offline test image set (see :func:`build_test_images`)."""
    return build_test_images()


def images_without_initrd(dest: Path) -> Path:
    """``dest``, made an image directory with the test kernel and rootfs (links)
    but no initrd: the Debian kernel then has no virtio-blk driver, cannot
    mount its root and panics ("VFS: Unable to mount root fs")."""
    from fc_macos import image_names

    images = build_test_images().kernel.parent
    dest.mkdir()
    for name in (image_names.KERNEL, image_names.ROOTFS):
        (dest / name).symlink_to(images / name)
    return dest
