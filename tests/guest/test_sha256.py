"""guest-agent/sha256.c against hashlib, on both architectures (aarch64 under qemu-user):
the streaming API for lengths around every block boundary, and the CPU-instruction block
functions against the portable ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .c_harness import pattern, run_harness


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_sha256_matches_hashlib(arch: str, tmp_path: Path) -> None:
    out = run_harness("sha256_check", ["sha256.c"], arch, tmp_path)
    hashes = [line.split() for line in out if line.startswith("hash ")]
    assert len(hashes) > 260
    for _, length, hex_ in hashes:
        assert hex_ == hashlib.sha256(pattern(int(length))).hexdigest(), f"length {length}"
    assert "blocks OK" in out
    if arch == "x86_64" and "sha_ni" in Path("/proc/cpuinfo").read_text():
        assert "accel 1" in out  # the SHA extensions are used where the CPU has them
