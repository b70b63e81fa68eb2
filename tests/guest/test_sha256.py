"""guest-agent/sha256.c against hashlib, on both architectures (aarch64 under qemu-user):
the streaming API for lengths around every block boundary, and the CPU-instruction block
functions against the portable ones."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fc_macos.guest.build import CFLAGS, SOURCE_DIR

HARNESS = Path(__file__).parent / "c" / "sha256_check.c"


def pattern(length: int) -> bytes:
    return bytes((i * 131 + length * 7 + (i >> 8)) & 0xFF for i in range(length))


def build_harness(arch: str, out: Path) -> Path:
    pytest.importorskip("ziglang", reason="ziglang (zig cc) builds the harness: pip install ziglang")
    exe = out / f"sha256-check-{arch}"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", f"{arch}-linux-musl", *CFLAGS,
                    f"-I{SOURCE_DIR}", "-o", str(exe), str(HARNESS), str(SOURCE_DIR / "sha256.c")],
                   check=True, capture_output=True, timeout=300)
    return exe


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_sha256_matches_hashlib(arch: str, tmp_path: Path) -> None:
    exe = build_harness(arch, tmp_path)
    cmd = [str(exe)]
    if arch == "aarch64":
        qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
        if qemu is None:
            pytest.skip("qemu-user-static is not installed: apt-get install qemu-user-static")
        cmd.insert(0, qemu)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout.splitlines()
    hashes = [line.split() for line in out if line.startswith("hash ")]
    assert len(hashes) > 260
    for _, length, hex_ in hashes:
        assert hex_ == hashlib.sha256(pattern(int(length))).hexdigest(), f"length {length}"
    assert "blocks OK" in out
    if arch == "x86_64" and "sha_ni" in Path("/proc/cpuinfo").read_text():
        assert "accel 1" in out  # the SHA extensions are used where the CPU has them
