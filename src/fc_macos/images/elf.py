"""Just enough ELF reading for guest images: sections (a kernel module's
``.modinfo``), program headers (is a binary static?) and notes (the kernel's
PVH entry note). 32- and 64-bit, either byte order. Raises ``ImageError`` on
anything that is not a well-formed ELF file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fc_macos.errors import ImageError

EM_X86_64 = 62
EM_AARCH64 = 183
PT_INTERP = 3
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point Firecracker and QEMU boot through


@dataclass(frozen=True)
class Section:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class Segment:
    type: int
    offset: int
    size: int


class ElfFile:
    """A parsed ELF header over ``data`` (bytes are not copied)."""

    def __init__(self, data: bytes, *, what: str = "file") -> None:
        if len(data) < 0x34 or not data.startswith(b"\x7fELF"):
            raise ImageError(f"{what} is not an ELF file", hint="check that it is the right file")
        self.data = data
        self.what = what
        cls, order = data[4], data[5]
        if cls not in (1, 2) or order not in (1, 2):
            raise ImageError(f"{what}: unknown ELF class/byte order", hint="check that it is the right file")
        self.is64 = cls == 2
        self.endian = "<" if order == 1 else ">"
        if self.is64:
            fields = struct.unpack_from(self.endian + "HHIQQQIHHHHHH", data, 16)
        else:
            fields = struct.unpack_from(self.endian + "HHIIIIIHHHHHH", data, 16)
        (self.type, self.machine, _, self.entry, self.phoff, self.shoff, _, _,
         self.phentsize, self.phnum, self.shentsize, self.shnum, self.shstrndx) = fields

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        try:
            return struct.unpack_from(self.endian + fmt, self.data, offset)
        except struct.error as exc:
            raise ImageError(f"{self.what}: truncated ELF file", hint="check that it is the right file") from exc

    def _table(self, offset: int, count: int, entsize: int, fmt64: str, fmt32: str) -> list[tuple[int, ...]]:
        """Unpack ``count`` header-table entries (program or section headers)."""
        return [self._unpack(fmt64 if self.is64 else fmt32, offset + i * entsize) for i in range(count)]

    def segments(self) -> list[Segment]:
        rows = self._table(self.phoff, self.phnum, self.phentsize, "IIQQQQ", "IIIIII")
        if self.is64:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz
            return [Segment(r[0], r[2], r[5]) for r in rows]
        return [Segment(r[0], r[1], r[4]) for r in rows]  # p_type, p_offset, p_vaddr, p_paddr, p_filesz

    def sections(self) -> list[Section]:
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
        raw = [(r[0], r[4], r[5]) for r in self._table(self.shoff, self.shnum, self.shentsize, "IIQQQQ", "IIIIII")]
        if not raw or self.shstrndx >= len(raw):
            return []
        _, str_off, str_size = raw[self.shstrndx]
        strtab = self.data[str_off : str_off + str_size]
        return [Section(strtab[n : strtab.index(b"\0", n)].decode(errors="replace"), o, s) for n, o, s in raw]

    def section_data(self, name: str) -> bytes | None:
        for section in self.sections():
            if section.name == name:
                return self.data[section.offset : section.offset + section.size]
        return None

    def is_static(self) -> bool:
        """True when the binary has no program interpreter (a static executable)."""
        return all(seg.type != PT_INTERP for seg in self.segments())

    def notes(self) -> list[tuple[str, int, bytes]]:
        """Every note in the PT_NOTE segments, as ``(name, type, descriptor)``."""
        out = []
        for seg in self.segments():
            if seg.type != PT_NOTE:
                continue
            pos, end = seg.offset, seg.offset + seg.size
            while pos + 12 <= end:
                namesz, descsz, ntype = self._unpack("III", pos)
                pos += 12
                name = self.data[pos : pos + namesz].rstrip(b"\0").decode(errors="replace")
                pos += (namesz + 3) & ~3
                out.append((name, ntype, self.data[pos : pos + descsz]))
                pos += (descsz + 3) & ~3
        return out

    def has_pvh_entry(self) -> bool:
        return any(name == "Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY for name, ntype, _ in self.notes())


def modinfo(data: bytes, *, what: str = "module") -> dict[str, list[str]]:
    """The ``.modinfo`` section of a kernel module as ``{key: [values]}``
    (what ``modinfo -F key`` prints). ``depends`` is split on commas."""
    raw = ElfFile(data, what=what).section_data(".modinfo")
    if raw is None:
        raise ImageError(f"{what} has no .modinfo section", hint="is it a kernel module (.ko)?")
    info: dict[str, list[str]] = {}
    for entry in raw.split(b"\0"):
        if b"=" not in entry:
            continue
        key, _, value = entry.decode(errors="replace").partition("=")
        if key == "depends":
            info.setdefault(key, []).extend(v for v in value.split(",") if v)
        else:
            info.setdefault(key, []).append(value)
    return info
