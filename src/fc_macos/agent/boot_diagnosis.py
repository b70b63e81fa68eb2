"""Why a boot failed, in words that outlive the work directory.

A failed create removes the microVM's work directory, and with it the serial
console log and the VMM's own log and stderr. :func:`capture` reads their last
lines first, so that the error keeps them (:func:`with_output`), and
:func:`hint_for` picks a hint that fits the cause: too much memory, a kernel
that cannot mount its root filesystem, a kernel that is not an ELF vmlinux,
or any other guest kernel panic. :func:`panicked` is how the manager tells a
guest kernel panic from an ordinary stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fc_macos.firecracker.launcher import VMMPaths

#: How many lines of each output an error keeps.
TAIL_LINES = 12
#: How many of the console's last lines are searched for a kernel panic.
SCAN_LINES = 60
TAIL_BYTES = 64 * 1024
#: A longer line is cut (the VMM logs whole request bodies).
LINE_CHARS = 240

PANIC = re.compile(r"Kernel panic - not syncing[^\r\n]*")
NO_ROOT_FS = "VFS: Unable to mount root fs"
OUT_OF_MEMORY = re.compile(
    r"cannot allocate memory|os error 12|out of memory|cannot set up guest memory|failed to allocate", re.I
)
NOT_ELF = "failed to load ELF kernel image"


@dataclass(frozen=True)
class BootOutput:
    """The last lines of a microVM's console and of its VMM (log and stderr)."""

    console: str
    vmm: str

    def text(self) -> str:
        return f"{self.console}\n{self.vmm}"


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ``path`` ('' if it is missing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode(errors="replace").replace("\r", "")
    kept = [_clip(line.rstrip()) for line in text.split("\n") if line.strip()]
    return "\n".join(kept[-lines:])


def _clip(line: str, limit: int = LINE_CHARS) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


def capture(paths: VMMPaths) -> BootOutput:
    """Read the outputs of the microVM in ``paths`` (before they are removed);
    for a kernel panic the console part is :func:`panic_excerpt`."""
    vmm = "\n".join(t for t in (tail(paths.stderr, 6), tail(paths.log, 6)) if t)
    console = tail(paths.serial_log, SCAN_LINES)
    if panicked(console) is not None:
        return BootOutput(console=panic_excerpt(console), vmm=vmm)
    return BootOutput(console="\n".join(console.splitlines()[-TAIL_LINES:]), vmm=vmm)


def panic_excerpt(console: str, before: int = 8) -> str:
    """What explains a panic in ``console``: the ``before`` lines up to the
    first panic line, that line, and the console's last line (the stack trace
    between them is left out)."""
    lines = console.splitlines()
    first = next(i for i, line in enumerate(lines) if PANIC.search(line))
    kept = lines[max(0, first - before): first + 1]
    if first < len(lines) - 1:
        kept += ["  ...", lines[-1]]
    return "\n".join(kept)


def panicked(console: str) -> str | None:
    """The guest kernel's panic line in ``console``, or None."""
    match = PANIC.search(console)
    return None if match is None else match.group(0).strip()


def with_output(message: str, output: BootOutput) -> str:
    """``message`` followed by the console's and the VMM's last lines."""
    parts = [message]
    if output.console:
        parts.append("Last console lines:\n" + _indent(output.console))
    if output.vmm:
        parts.append("Last VMM lines:\n" + _indent(output.vmm))
    return "\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


DEFAULT_HINT = "check the microVM spec against Firecracker's message (kernel, initrd and rootfs must suit each other)"


def hint_for(output: BootOutput, memory_mib: int, *, fault: str = "", default: str = DEFAULT_HINT) -> str:
    """The hint that fits the failure seen in ``fault`` (Firecracker's message)
    and ``output``; ``default`` when nothing specific is recognised."""
    seen = f"{fault}\n{output.text()}"
    if NO_ROOT_FS in seen:
        return (
            "the guest kernel could not mount its root filesystem: a kernel built to boot with an initrd "
            "needs it (--initrd initrd.img; 'fc-macos setup --images DIR' installs the set), or root= in the "
            "boot arguments names the wrong device (Firecracker adds root=/dev/vda for the rootfs; leave root= out)"
        )
    if OUT_OF_MEMORY.search(seen):
        free = available_mib()
        have = f" (it has {free} MiB available)" if free is not None else ""
        return (
            f"the agent's machine could not give the microVM {memory_mib} MiB of memory{have}: ask for less "
            "(--memory MiB), stop other microVMs, or give the Linux VM more memory"
        )
    if NOT_ELF in seen:
        return "the kernel must be an uncompressed ELF vmlinux (not a bzImage or a compressed kernel)"
    line = panicked(output.console)
    if line is not None:
        return (
            f"the guest kernel panicked ({line}): read the console lines above; the kernel, initrd, rootfs and "
            "boot arguments must suit each other"
        )
    return default


def available_mib(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable of this machine in MiB (None where unknown)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


__all__ = ["BootOutput", "available_mib", "capture", "hint_for", "panicked", "tail", "with_output"]
