"""The Debian source's kernel package download: apt-get's bytes reach ``progress.transfer``,
and a failing apt-get is an ImageError with its output. ``apt-cache`` and ``apt-get`` are
stand-in programs on PATH (the process boundary); the real download is in test_builder."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from fc_macos.errors import ImageError
from fc_macos.images.debian import download_kernel_deb
from tests.helpers.progress import RecordingProgress

PACKAGE = "linux-image-6.1.0-99-cloud-amd64"
DEB = f"{PACKAGE}_6.1.999-1_amd64.deb"
SIZE = 3 * (1 << 20) + 5

# apt-get download writes the .deb in place as it arrives: half of it, then (once the
# test's progress has seen the half, so the middle of the download is observed for sure)
# the rest.
APT_GET = textwrap.dedent(f"""\
    #!{sys.executable}
    import os, sys, time
    args = sys.argv[1:]
    if "--print-uris" in args:
        print("'http://deb.debian.org/debian/pool/main/l/{DEB}' {DEB} {SIZE} SHA256:00")
        sys.exit(0)
    if os.environ.get("FAKE_APT_FAIL"):
        print("E: Failed to fetch http://deb.debian.org/...: 404 Not Found")
        sys.exit(100)
    with open("{DEB}", "wb") as out:
        out.write(b"x" * ({SIZE} // 2))
        out.flush()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.environ["FAKE_APT_GO"]):
            if time.monotonic() > deadline:
                sys.exit(1)
            time.sleep(0.05)
        out.write(b"x" * ({SIZE} - {SIZE} // 2))
    """)
APT_CACHE = f"#!/bin/sh\necho 'linux-image-cloud-amd64'\necho '  Depends: {PACKAGE}'\n"


class ReleasingProgress(RecordingProgress):
    """Records, and lets the stand-in apt-get finish once a partial size was reported."""

    def __init__(self, go: Path) -> None:
        super().__init__()
        self.go = go

    def transfer(self, name: str, done: int, total: int | None) -> None:
        super().transfer(name, done, total)
        if 0 < done < (total or 0):
            self.go.touch()


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apt-get", APT_GET), ("apt-cache", APT_CACHE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_GO", str(tmp_path / "go"))
    return tmp_path


def test_the_kernel_package_download_reports_its_bytes(fake_apt: Path) -> None:
    progress = ReleasingProgress(fake_apt / "go")
    deb = download_kernel_deb(fake_apt / "downloads", "x86_64", progress)
    assert deb == fake_apt / "downloads" / DEB and deb.stat().st_size == SIZE
    assert progress.transfers[-1] == (DEB, SIZE, SIZE)
    assert (DEB, SIZE // 2, SIZE) in progress.transfers  # seen half-way, against the announced size
    assert [done for _, done, _ in progress.transfers] == sorted(done for _, done, _ in progress.transfers)
    again = RecordingProgress()
    assert download_kernel_deb(fake_apt / "downloads", "x86_64", again) == deb  # reused: nothing downloaded
    assert again.transfers == []


def test_a_failing_apt_get_says_what_it_printed(fake_apt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_APT_FAIL", "1")
    with pytest.raises(ImageError) as err:
        download_kernel_deb(fake_apt / "downloads", "x86_64", RecordingProgress())
    assert "404 Not Found" in err.value.message and "--kernel-deb" in (err.value.hint or "")
