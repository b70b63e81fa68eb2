"""The online image source, for real users: Firecracker's CI guest kernel and
Alpine's minirootfs, from pinned URLs checked against pinned sha256 sums.

The CI kernel builds virtio (mmio, blk, net) and ext4 in, so no initramfs is
needed. The Alpine tarball becomes an ext4 rootfs with the fc-macos ``/init``
(Alpine's busybox has ``getty``; see ``rootfs-init.sh``) and the guest agent.

Every pin is ``url + sha256``. The pinned sums were cross-checked against
several independent projects that pin the same artifacts (neither publisher
signs these files: Alpine publishes a ``.sha256`` beside each tarball, the
Firecracker CI bucket publishes nothing). ``base_url`` swaps the host part of
every URL (a mirror, or a local server in tests) and keeps the pinned sums.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fc_macos import image_names
from fc_macos.errors import ImageError
from fc_macos.images.arch import normalize_arch
from fc_macos.images.digest import sha256_file
from fc_macos.images.kernel import prepare_kernel
from fc_macos.images.rootfs import install_init, make_ext4
from fc_macos.progress import Progress

ROOTFS_SIZE_MIB = 256
CHUNK = 1 << 16


@dataclass(frozen=True)
class Pin:
    """One artifact: fetched from ``base + path``, accepted only with this ``sha256``."""

    base: str
    path: str
    sha256: str

    def url(self, base_url: str | None = None) -> str:
        return (base_url or self.base).rstrip("/") + "/" + self.path

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


_FC_CI = "https://s3.amazonaws.com"
_ALPINE = "https://dl-cdn.alpinelinux.org"
KERNEL_VERSION = "6.1.141"  # Firecracker CI channel v1.13
ALPINE_VERSION = "3.24.2"

PINS: dict[str, dict[str, Pin]] = {
    "x86_64": {
        "kernel": Pin(_FC_CI, f"spec.ccfc.min/firecracker-ci/v1.13/x86_64/vmlinux-{KERNEL_VERSION}",
                      "b36a4a1b10f33b9cfdcde3d1a787d9c090556a3edb211cd06d1f3f9a6c7e8724"),
        "rootfs": Pin(_ALPINE, f"alpine/v3.24/releases/x86_64/alpine-minirootfs-{ALPINE_VERSION}-x86_64.tar.gz",
                      "c5ca053cfe1d85c5b96dff8b9bc57045f7f184a30ffb6b65776409ca90388677"),
    },
    "aarch64": {
        "kernel": Pin(_FC_CI, f"spec.ccfc.min/firecracker-ci/v1.13/aarch64/vmlinux-{KERNEL_VERSION}",
                      "69aa3308219ec1a070bc9a8e7f80c3b34056fed8ae05efb44e55f73b31adde44"),
        "rootfs": Pin(_ALPINE, f"alpine/v3.24/releases/aarch64/alpine-minirootfs-{ALPINE_VERSION}-aarch64.tar.gz",
                      "9bf70a7f18ea44094cbb5f70c58f9af129c8214745743db0e68e5502cc2ce773"),
    },
}


def pins_for(arch: str) -> dict[str, Pin]:
    """``{"kernel": Pin, "rootfs": Pin}`` for ``arch``."""
    return PINS[normalize_arch(arch)]


def download(url: str, dest: Path, sha256: str, progress: Progress, *, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` and check its sha256; reuse ``dest`` when it already
    has that sum. Reports its bytes through ``progress.transfer``.
    On a checksum mismatch or a transfer error nothing is left at ``dest`` and
    ``ImageError`` says which URL failed."""
    if dest.is_file() and sha256_file(dest) == sha256:
        progress.info(f"{dest.name}: already downloaded")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        # A new opener per call: it reads the proxy settings now (urlopen's global one keeps the first call's).
        opener = urllib.request.build_opener()
        with os.fdopen(fd, "wb") as out, opener.open(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress.transfer(dest.name, done, total or None)
            if done != total or done == 0:  # else that was the last call already
                progress.transfer(dest.name, done, done)
        if digest.hexdigest() != sha256:
            raise ImageError(
                f"checksum mismatch for {url}: got sha256 {digest.hexdigest()}, expected {sha256}",
                hint="the download is corrupt or the file changed upstream; retry, or use another --base-url mirror",
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise ImageError(f"cannot download {url}: {exc}", hint="check the network (or --base-url) and retry") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_rootfs_tarball(tarball: Path, dest: Path) -> None:
    """Unpack a root file system tarball into ``dest``. Member names must stay inside
    ``dest`` and never pass through a symlink from the archive (symlink *targets* may
    be absolute: they point inside the guest). Device nodes are skipped (the guest
    has devtmpfs)."""
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members, links = [], set()
            for member in tar.getmembers():
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                parts = Path(name or ".").parts
                if name.startswith("/") or ".." in parts:
                    raise ImageError(f"{tarball.name}: unsafe member {member.name!r}", hint="use the pinned tarball")
                if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                    raise ImageError(f"{tarball.name}: {member.name!r} goes through a symlink", hint="use the pinned tarball")
                if member.issym():
                    links.add("/".join(parts))
                if member.isdev():
                    continue
                members.append(member)
            kwargs: dict[str, Any] = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            tar.extractall(dest, members=members, **kwargs)  # noqa: S202 - names checked above
    except (tarfile.TarError, OSError) as exc:
        raise ImageError(f"cannot unpack {tarball}: {exc}", hint="delete it and retry the download") from exc


def build_online(out: Path, arch: str, progress: Progress, *, base_url: str | None = None,
                 download_dir: Path, pins: dict[str, Pin] | None = None,
                 guest_agent: Path | None = None) -> str:
    """Write ``vmlinux`` and ``rootfs.ext4`` into ``out`` from the pinned downloads
    (kept in ``download_dir`` for the next build); return the kernel format.
    ``pins`` replaces the pin table (for mirrors with other artifacts, and tests);
    ``guest_agent`` (the binary for ``arch``; ``build_images`` always gives it) goes
    to ``/sbin/fc-guest-agent``."""
    pins = pins or pins_for(arch)
    kernel_pin, rootfs_pin = pins["kernel"], pins["rootfs"]

    progress.step("download-kernel", f"downloading {kernel_pin.url(base_url)}")
    kernel_file = download(kernel_pin.url(base_url), download_dir / kernel_pin.filename, kernel_pin.sha256, progress)
    progress.done("download-kernel", kernel_pin.filename)

    progress.step("download-rootfs", f"downloading {rootfs_pin.url(base_url)}")
    tarball = download(rootfs_pin.url(base_url), download_dir / rootfs_pin.filename, rootfs_pin.sha256, progress)
    progress.done("download-rootfs", rootfs_pin.filename)

    progress.step("kernel", "checking the kernel")
    kernel_format = prepare_kernel(kernel_file, out / image_names.KERNEL)
    progress.done("kernel", kernel_format)

    progress.step("rootfs", "building the ext4 root file system from the tarball")
    with tempfile.TemporaryDirectory(prefix="fc-online-") as tmp:
        tree = Path(tmp) / "rootfs"
        tree.mkdir()
        extract_rootfs_tarball(tarball, tree)
        if not (tree / "bin" / "busybox").exists():
            raise ImageError(f"{tarball.name} has no /bin/busybox", hint="use an Alpine minirootfs tarball")
        install_init(tree, guest_agent=guest_agent)
        make_ext4(tree, out / image_names.ROOTFS, size_mib=ROOTFS_SIZE_MIB)
    progress.done("rootfs", f"{ROOTFS_SIZE_MIB} MiB")
    return kernel_format
