"""Builds and runs the C test harnesses of ``tests/guest/c/`` against guest-agent sources,
for x86_64 (run here) and aarch64 (run under qemu-user, or skipped with how to install it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fc_macos.guest.build import CFLAGS, SOURCE_DIR

HARNESS_DIR = Path(__file__).parent / "c"


def pattern(length: int) -> bytes:
    """The harnesses' test pattern of ``length`` bytes (``pattern()`` in their C)."""
    return bytes((i * 131 + length * 7 + (i >> 8)) & 0xFF for i in range(length))


def run_harness(name: str, sources: list[str], arch: str, out: Path) -> list[str]:
    """Compiles ``c/<name>.c`` with the guest-agent ``sources`` for ``arch`` (zig cc, the
    guest agent's flags) into ``out``, runs it and returns its stdout lines."""
    pytest.importorskip("ziglang", reason="ziglang (zig cc) builds the harness: pip install ziglang")
    cmd: list[str] = []
    if arch == "aarch64":
        qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
        if qemu is None:
            pytest.skip("qemu-user-static is not installed: apt-get install qemu-user-static")
        cmd.append(qemu)
    exe = out / f"{name}-{arch}"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", f"{arch}-linux-musl", *CFLAGS,
                    f"-I{SOURCE_DIR}", "-o", str(exe), str(HARNESS_DIR / f"{name}.c"),
                    *(str(SOURCE_DIR / source) for source in sources)],
                   check=True, capture_output=True, timeout=300)
    return subprocess.run([*cmd, str(exe)], capture_output=True, text=True, timeout=300,
                          check=True).stdout.splitlines()
