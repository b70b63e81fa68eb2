"""``publish_release``: a Firecracker release tarball laid out as a mirror serves it
(``<root>/<version>/firecracker-<version>-<arch>.tgz``), for tests of setup's
release download that must not reach GitHub (serve ``root`` with
``tests.helpers.http_files.serving``)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from fc_macos.images.digest import sha256_file
from fc_macos.providers.firecracker_release import firecracker_release

_BASE = "http://mirror"


def publish_release(root: Path, binary: Path, arch: str) -> Path:
    """Write the release tarball for ``arch`` under ``root`` with ``binary`` as its
    Firecracker member; return the tarball (its sha256 is not the pinned one)."""
    url, pinned, member = firecracker_release(arch, _BASE)
    target = root / url.removeprefix(_BASE + "/")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as tar:
        tar.add(binary, arcname=member)
    assert sha256_file(target) != pinned
    return target
