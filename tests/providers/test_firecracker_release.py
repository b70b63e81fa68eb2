"""Taking the Firecracker binary out of a release tarball: that one member, a regular
file, nothing else (the download and install are tested end to end in test_local.py
and test_tart.py)."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from fc_macos.errors import SetupError
from fc_macos.providers.firecracker_release import extract_member, firecracker_release

_, _, MEMBER = firecracker_release("x86_64")


def _tarball(path: Path, *members: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, linkname, 0o644
    return info


def test_the_member_is_written_executable_and_nothing_else(tmp_path: Path) -> None:
    body = b"#!/bin/sh\necho Firecracker\n"
    tarball = _tarball(tmp_path / "fc.tgz", _info("release/other", size=len(body)),
                       _info(MEMBER, size=len(body)), data=body)
    out = tmp_path / "out"
    out.mkdir()
    extract_member(tarball, MEMBER, out / "firecracker")
    assert (out / "firecracker").read_bytes() == body
    assert stat.S_IMODE((out / "firecracker").stat().st_mode) == 0o755
    assert [p.name for p in out.iterdir()] == ["firecracker"]


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.CHRTYPE])
def test_a_member_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: bytes) -> None:
    tarball = _tarball(tmp_path / "fc.tgz", _info(MEMBER, kind, linkname="/etc/passwd"))
    with pytest.raises(SetupError) as err:
        extract_member(tarball, MEMBER, tmp_path / "firecracker")
    assert err.value.step == "install-firecracker" and "is not a regular file" in err.value.message
    assert not (tmp_path / "firecracker").exists()


def test_a_tarball_without_the_member_or_not_a_tarball_is_refused(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "fc.tgz", _info("./" + MEMBER, size=1), data=b"x")
    with pytest.raises(SetupError) as missing:
        extract_member(tarball, MEMBER, tmp_path / "firecracker")
    assert f"has no {MEMBER}" in missing.value.message and "--firecracker-bin" in (missing.value.hint or "")
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(SetupError) as bad:
        extract_member(junk, MEMBER, tmp_path / "firecracker")
    assert "cannot unpack" in bad.value.message
    assert not (tmp_path / "firecracker").exists()
