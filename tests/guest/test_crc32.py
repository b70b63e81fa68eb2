"""guest-agent/crc32.c against zlib.crc32, on both architectures (aarch64 under qemu-user,
whose CPU has the ARMv8 CRC32 instructions): the catalogue's check value, lengths around
every 8-byte step fed in uneven pieces, and the portable and instruction paths against each
other from every start offset and at every split point."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from .c_harness import pattern, run_harness


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_crc32_matches_zlib(arch: str, tmp_path: Path) -> None:
    out = run_harness("crc32_check", ["crc32.c"], arch, tmp_path)
    assert "kat cbf43926" in out  # CRC-32/ISO-HDLC of "123456789"
    crcs = [line.split() for line in out if line.startswith("crc ")]
    assert len(crcs) > 300
    for _, length, hex_ in crcs:
        assert hex_ == f"{zlib.crc32(pattern(int(length))):08x}", f"length {length}"
    assert "splits OK" in out
    if arch == "aarch64":
        assert "accel 1" in out  # qemu-user's default CPU has CRC32: the instruction path is the one tested
