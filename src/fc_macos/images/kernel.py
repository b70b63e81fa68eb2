"""Guest kernels in the form Firecracker boots.

Firecracker on x86_64 boots an uncompressed ELF ``vmlinux`` (with the PVH
entry note); distributions ship a compressed ``bzImage``. On aarch64 it boots
the arm64 ``Image``; distributions ship it gzip'd (or as an EFI zboot image).

:func:`prepare_kernel` turns whatever it is given into that form:

* an ELF file or an arm64 ``Image``: copied as is;
* an x86 ``bzImage``: the compressed payload is found through the setup header
  (``setup_sects`` at 0x1f1, ``payload_offset``/``payload_length`` at
  0x248/0x24c), its compression detected by magic (gzip, xz, lzma, legacy LZ4,
  zstd, bzip2) and decompressed;
* a gzip'd arm64 ``Image`` or an EFI zboot image: decompressed.

Everything raises :class:`~fc_macos.errors.ImageError` with a hint.
"""

from __future__ import annotations

import bz2
import lzma
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from fc_macos.errors import ImageError

ELF_MAGIC = b"\x7fELF"
ARM64_IMAGE_MAGIC = b"ARM\x64"  # at offset 0x38 of an arm64 Image
BZIMAGE_MAGIC = b"HdrS"  # at offset 0x202 of an x86 bzImage

KERNEL_FORMAT_ELF = "elf"
KERNEL_FORMAT_ARM64_IMAGE = "arm64-image"

# (magic, name) pairs, checked in order against the start of the payload.
COMPRESSION_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x02\x21\x4c\x18", "lz4"),  # legacy LZ4 frame, as the kernel's `lz4 -l` writes it
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),  # lzma-alone: properties byte 0x5d, dictionary size LE
    (b"\x89LZO", "lzo"),
)

# Formats Python cannot decompress alone: the command that can, and the package holding it.
_EXTERNAL_DECOMPRESSORS = {
    "lz4": (["lz4", "-dc"], "lz4"),
    "zstd": (["zstd", "-dc", "-q"], "zstd"),
    "lzo": (["lzop", "-dc"], "lzop"),
}


def detect_compression(payload: bytes) -> str:
    """The name of the compression ``payload`` starts with (see ``COMPRESSION_MAGICS``)."""
    for magic, name in COMPRESSION_MAGICS:
        if payload.startswith(magic):
            return name
    raise ImageError(
        f"unknown kernel compression (payload starts with {payload[:8].hex()})",
        hint="give an uncompressed vmlinux, or a bzImage compressed with gzip, xz, lzma, lz4, zstd or bzip2",
    )


def _decompress_stream(data: bytes, fmt: str) -> bytes:
    """Decompress one stream, ignoring whatever follows it."""
    try:
        if fmt == "gzip":
            return zlib.decompressobj(wbits=31).decompress(data)
        if fmt == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if fmt == "lzma":
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
        if fmt == "bzip2":
            return bz2.BZ2Decompressor().decompress(data)
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        raise ImageError(f"corrupt {fmt} kernel payload: {exc}", hint="check the kernel file (re-download it)") from exc
    command, package = _EXTERNAL_DECOMPRESSORS[fmt]
    if shutil.which(command[0]) is None:
        raise ImageError(
            f"the kernel is {fmt}-compressed and '{command[0]}' is not installed",
            hint=f"install it (e.g. 'apt-get install {package}') and try again",
        )
    proc = subprocess.run(command, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ImageError(
            f"'{' '.join(command)}' failed on the kernel payload: {proc.stderr.decode(errors='replace').strip()}",
            hint="check the kernel file (re-download it)",
        )
    return proc.stdout


def decompress_payload(payload: bytes) -> bytes:
    """Decompress a kernel payload as the kernel's build writes it: one compressed
    stream whose last four bytes are the uncompressed size, little-endian (gzip's
    own trailer, ``size_append`` for every other format). The size is checked."""
    fmt = detect_compression(payload)
    if len(payload) < 8:
        raise ImageError("the kernel payload is truncated", hint="check the kernel file (re-download it)")
    expected = struct.unpack("<I", payload[-4:])[0]
    # gzip's trailer is part of its stream; for the others the size is extra bytes that
    # some decompressors (legacy LZ4, zstd) would read as the start of another frame.
    out = _decompress_stream(payload if fmt == "gzip" else payload[:-4], fmt)
    if expected != len(out) & 0xFFFFFFFF:
        raise ImageError(
            f"the {fmt} kernel payload decompressed to {len(out)} bytes, its trailer says {expected}",
            hint="check the kernel file (re-download it)",
        )
    return out


def bzimage_payload(data: bytes) -> bytes:
    """The compressed payload of an x86 bzImage (``ImageError`` if ``data`` is not one)."""
    if len(data) < 0x250 or data[0x202:0x206] != BZIMAGE_MAGIC:
        raise ImageError("not an x86 bzImage (no 'HdrS' setup header)", hint="give a bzImage or an ELF vmlinux")
    setup_sects = data[0x1F1] or 4  # 0 means 4, by the boot protocol
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    if payload_length == 0:
        raise ImageError(
            "this bzImage is too old to carry payload_offset (boot protocol < 2.08)",
            hint="use a kernel newer than 2.6.26 or give an uncompressed vmlinux",
        )
    start = (setup_sects + 1) * 512 + payload_offset
    payload = data[start : start + payload_length]
    if len(payload) != payload_length:
        raise ImageError("the bzImage is truncated", hint="check the kernel file (re-download it)")
    return payload


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF vmlinux inside an x86 bzImage."""
    out = decompress_payload(bzimage_payload(bzimage))
    if not out.startswith(ELF_MAGIC):
        raise ImageError("the bzImage payload is not an ELF vmlinux", hint="give an uncompressed vmlinux instead")
    return out


def _arm64_image_from_compressed(data: bytes) -> bytes:
    """An arm64 Image from a gzip'd Image or an EFI zboot image (``MZ`` + ``zimg``)."""
    if data[4:8] == b"zimg":
        offset, size = struct.unpack_from("<II", data, 8)
        out = _decompress_stream(data[offset : offset + size], detect_compression(data[offset : offset + size]))
    else:
        out = _decompress_stream(data, detect_compression(data))
    if out[0x38:0x3C] != ARM64_IMAGE_MAGIC:
        raise ImageError("the decompressed kernel is not an arm64 Image", hint="give an arm64 Image or vmlinuz")
    return out


def kernel_format(data: bytes) -> str:
    """``"elf"`` or ``"arm64-image"`` for a kernel Firecracker boots as is; ``ImageError`` otherwise."""
    if data.startswith(ELF_MAGIC):
        return KERNEL_FORMAT_ELF
    if data[0x38:0x3C] == ARM64_IMAGE_MAGIC:
        return KERNEL_FORMAT_ARM64_IMAGE
    raise ImageError("not a bootable kernel (neither ELF nor arm64 Image)", hint="give a vmlinux or an arm64 Image")


def bootable_kernel(data: bytes) -> bytes:
    """``data`` (any form listed in the module docstring) as Firecracker boots it."""
    if data.startswith(ELF_MAGIC) or data[0x38:0x3C] == ARM64_IMAGE_MAGIC:
        return data
    if data[0x202:0x206] == BZIMAGE_MAGIC:
        return extract_vmlinux(data)
    return _arm64_image_from_compressed(data)


def prepare_kernel(src: Path, dest: Path) -> str:
    """Write the bootable form of the kernel at ``src`` to ``dest``; return its format
    (``"elf"`` or ``"arm64-image"``). Overwrites ``dest``."""
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read kernel {src}: {exc}", hint="check the path") from exc
    out = bootable_kernel(data)
    try:
        dest.write_bytes(out)
    except OSError as exc:
        raise ImageError(f"cannot write {dest}: {exc}", hint="check free space and permissions") from exc
    return kernel_format(out)
