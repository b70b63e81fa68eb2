"""The pinned Firecracker release: where it comes from, and how setup installs it.

The tarball is downloaded on *this* machine (so its bytes, rate and time left
reach ``progress.transfer``), checked against the pinned sha256 and kept in
``<home>/downloads/`` (a second setup reuses it). The one binary is taken out of
it and copied to the agent's machine with ``Host.put_file`` (which reports its
own bytes). A mirror (``setup --firecracker-mirror URL`` or the environment
variable ``FC_MACOS_FIRECRACKER_MIRROR``) replaces the release host and keeps
the paths and the pinned sums: ``<mirror>/v1.16.1/firecracker-v1.16.1-<arch>.tgz``.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from fc_macos.errors import ImageError, SetupError
from fc_macos.images.online import CHUNK, download
from fc_macos.progress import Progress
from fc_macos.providers.base import Host

STEP = "install-firecracker"
FIRECRACKER_VERSION = "v1.16.1"
#: Published SHA-256 of the release tarballs (firecracker-<v>-<arch>.tgz).
FIRECRACKER_SHA256 = {
    "x86_64": "382a02a869e4d6d5cb14c40577f9545e8458021ea8b0b2d3fc10ec14d9c242e6",
    "aarch64": "8d0e69f6d6f9a1724551f607f18504052c16c1828ee3d4d7b6e6c73380871e0e",
}
RELEASES_URL = "https://github.com/firecracker-microvm/firecracker/releases/download"
MIRROR_ENV = "FC_MACOS_FIRECRACKER_MIRROR"
_HINT = (f"pass --firecracker-bin with a Firecracker binary, or check the network (and https_proxy), "
         f"or fetch from a mirror with --firecracker-mirror URL ({MIRROR_ENV})")


def firecracker_release(arch: str, mirror: str | None = None) -> tuple[str, str, str]:
    """(tarball URL, its sha256, the binary's path inside the tarball) for ``arch``;
    ``mirror`` replaces :data:`RELEASES_URL` (the same paths below it)."""
    if arch not in FIRECRACKER_SHA256:
        raise SetupError(STEP, f"no Firecracker release for the architecture {arch!r}",
                         hint="pass --firecracker-bin with a Firecracker built for it")
    v = FIRECRACKER_VERSION
    url = f"{(mirror or RELEASES_URL).rstrip('/')}/{v}/firecracker-{v}-{arch}.tgz"
    return url, FIRECRACKER_SHA256[arch], f"release-{v}-{arch}/firecracker-{v}-{arch}"


def extract_member(tarball: Path, member: str, dest: Path) -> None:
    """Write the regular file ``member`` (that exact name) of ``tarball`` to ``dest``
    (mode 0755). Links, directories and devices under that name are refused;
    nothing else of the archive is read out."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise SetupError(STEP, f"{tarball.name} has no {member}",
                                 hint=f"delete {tarball} and run setup again, or pass --firecracker-bin") from None
            source = tar.extractfile(info) if info.isreg() else None
            if source is None:
                raise SetupError(STEP, f"{tarball.name}: {member} is not a regular file",
                                 hint="use the pinned release tarball, or pass --firecracker-bin")
            with source, open(dest, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
        dest.chmod(0o755)
    except (tarfile.TarError, OSError) as exc:
        raise SetupError(STEP, f"cannot unpack {tarball}: {exc}",
                         hint=f"delete {tarball} and run setup again, or pass --firecracker-bin") from exc


def install_release(host: Host, dest: str, *, download_dir: Path, progress: Progress,
                    mirror: str | None = None) -> str:
    """Download the pinned release for ``host.arch()`` into ``download_dir`` (reused
    when it already holds the verified tarball) and install its binary at ``dest``
    on ``host`` (mode 0755). A failed download or a wrong sha256 raises
    ``SetupError`` naming the URL, with nothing installed. Returns the step's detail."""
    arch = host.arch()
    url, sha256, member = firecracker_release(arch, mirror)
    progress.info(f"downloading {url}")
    try:
        tarball = download(url, download_dir / url.rsplit("/", 1)[-1], sha256, progress)
    except ImageError as exc:
        raise SetupError(STEP, exc.message, hint=_HINT) from exc
    with tempfile.TemporaryDirectory(prefix=".firecracker-", dir=download_dir) as tmp:
        binary = Path(tmp) / "firecracker"
        extract_member(tarball, member, binary)
        host.put_file(binary, dest, mode="0755")
    return f"Firecracker {FIRECRACKER_VERSION} ({arch}) from {url}, sha256 verified, in {dest}"


__all__ = ["FIRECRACKER_SHA256", "FIRECRACKER_VERSION", "MIRROR_ENV", "extract_member", "firecracker_release",
           "install_release"]
