"""Kernel extraction: synthetic bzImages for every compression, arm64 forms, and
the real Debian cloud kernel (ELF with the PVH entry note)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fc_macos.errors import ImageError
from fc_macos.images.kernel import bootable_kernel, detect_compression, kernel_format, prepare_kernel
from tests.helpers.guest_images import build_test_images

FAKE_ELF = b"\x7fELF\x02\x01\x01" + bytes(9) + b"fake vmlinux body " * 4000


def _external(command: list[str], data: bytes) -> bytes:
    if shutil.which(command[0]) is None:
        pytest.skip(f"'{command[0]}' is not installed: apt-get install {command[0]}")
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


def compress(fmt: str, data: bytes) -> bytes:
    """``data`` compressed as the kernel build does (``size_append`` for all but gzip)."""
    size = struct.pack("<I", len(data))
    if fmt == "gzip":
        return gzip.compress(data)
    body = {
        "xz": lambda: lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        "lzma": lambda: lzma.compress(data, format=lzma.FORMAT_ALONE),
        "bzip2": lambda: bz2.compress(data),
        "lz4": lambda: _external(["lz4", "-l", "-9", "-c"], data),
        "zstd": lambda: _external(["zstd", "-19", "-c", "-q"], data),
    }[fmt]()
    return body + size


def make_bzimage(payload: bytes, *, setup_sects: int = 3, payload_offset: int = 0x1c4) -> bytes:
    """A bzImage-shaped file: setup sectors with the header, then the protected-mode
    part with the payload at ``payload_offset``."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, payload_offset, len(payload))
    return bytes(setup) + b"\x90" * payload_offset + payload + b"\0" * 100


@pytest.mark.parametrize("fmt", ["gzip", "xz", "lzma", "bzip2", "lz4", "zstd"])
def test_bzimage_payload_is_decompressed_for_each_compression(fmt: str) -> None:
    payload = compress(fmt, FAKE_ELF)
    assert detect_compression(payload) == fmt
    assert bootable_kernel(make_bzimage(payload)) == FAKE_ELF


def test_wrong_size_trailer_is_refused() -> None:
    payload = lzma.compress(FAKE_ELF, format=lzma.FORMAT_XZ) + struct.pack("<I", len(FAKE_ELF) + 1)
    with pytest.raises(ImageError, match="trailer says"):
        bootable_kernel(make_bzimage(payload))


def test_unknown_compression_is_refused_with_a_hint() -> None:
    with pytest.raises(ImageError) as info:
        bootable_kernel(make_bzimage(b"\x00\x01\x02\x03" * 10))
    assert "unknown kernel compression" in info.value.message
    assert info.value.hint


def test_payload_that_is_not_elf_is_refused() -> None:
    with pytest.raises(ImageError, match="not an ELF"):
        bootable_kernel(make_bzimage(gzip.compress(b"not a kernel" * 100)))


def fake_arm64_image() -> bytes:
    image = bytearray(4096)
    image[0x38:0x3C] = b"ARM\x64"
    return bytes(image)


def test_arm64_gzipped_image_is_gunzipped(tmp_path: Path) -> None:
    src = tmp_path / "vmlinuz"
    src.write_bytes(gzip.compress(fake_arm64_image()))
    assert prepare_kernel(src, tmp_path / "Image") == "arm64-image"
    assert (tmp_path / "Image").read_bytes() == fake_arm64_image()


def test_arm64_efi_zboot_image_is_unpacked() -> None:
    packed = gzip.compress(fake_arm64_image())
    header = bytearray(b"MZ\0\0zimg" + struct.pack("<II", 64, len(packed)) + b"\0" * 8 + b"gzip")
    header += bytes(64 - len(header))
    assert bootable_kernel(bytes(header) + packed) == fake_arm64_image()


def test_bootable_kernels_pass_through_unchanged() -> None:
    assert bootable_kernel(FAKE_ELF) is FAKE_ELF
    assert kernel_format(FAKE_ELF) == "elf"
    assert kernel_format(fake_arm64_image()) == "arm64-image"
    with pytest.raises(ImageError):
        kernel_format(b"plain text" * 20)


def test_real_debian_kernel_becomes_an_elf_with_a_pvh_note() -> None:
    images = build_test_images()
    head = images.kernel.read_bytes()[:20]
    assert head[:4] == b"\x7fELF"
    assert head[4] == 2  # 64-bit
    if shutil.which("readelf") is None:
        pytest.skip("readelf is missing (apt-get install binutils) to check the PVH note")
    notes = subprocess.run(["readelf", "-n", str(images.kernel)], capture_output=True, text=True, check=True).stdout
    # Xen note type 0x12 is XEN_ELFNOTE_PHYS32_ENTRY, the PVH entry Firecracker boots through.
    assert re.search(r"Xen\s+0x[0-9a-f]+\s+(.*PHYS32_ENTRY|Unknown note type: \(0x00000012\))", notes), notes
