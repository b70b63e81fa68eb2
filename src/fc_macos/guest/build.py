"""Builds ``fc-guest-agent`` for x86_64 and aarch64 with ``zig cc`` (the ``ziglang`` package).

    python -m fc_macos.guest.build [--arch x86_64|aarch64|all] [--out DIR] [--source DIR]

Each binary is a static musl executable (``-target <arch>-linux-musl -static -Os``), so it
runs in any Linux rootfs. The same command works on Linux and macOS: ``ziglang`` from PyPI
carries the compiler and both targets' libc. The default output is the package's ``bin/``
directory, where :func:`fc_macos.guest.binary_path` looks; the wheel build (``setup.py``)
runs this into the wheel. The first compile of a target takes about a minute (zig builds
its libc cache), later ones are quick.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..errors import FcMacosError
from . import ARCHES, BIN_DIR, normalize_arch

SOURCE_DIR = Path(__file__).resolve().parents[3] / "guest-agent"
"""``guest-agent/`` of a source checkout (absent in an installed package)."""

CFLAGS = ("-static", "-Os", "-s", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing")


class GuestBuildError(FcMacosError):
    """Compiling the guest agent failed (no ziglang, no sources, a compiler error)."""

    code = "guest_build_failed"


def sources(source_dir: Path = SOURCE_DIR) -> list[Path]:
    """The C files of the guest agent, sorted; raises GuestBuildError if there are none."""
    files = sorted(source_dir.glob("*.c"))
    if not files:
        raise GuestBuildError(
            f"no guest agent sources in {source_dir}",
            hint="run the build from a source checkout of fc-macos, or pass --source DIR "
            "(the repository's guest-agent/ directory)",
        )
    return files


def compiler() -> list[str]:
    """The ``zig cc`` command line prefix; raises GuestBuildError when ziglang is missing."""
    if importlib.util.find_spec("ziglang") is None:
        raise GuestBuildError(
            "the ziglang package (zig cc) is not installed for " + sys.executable,
            hint=f"install it with `{sys.executable} -m pip install ziglang`, then run "
            "`python -m fc_macos.guest.build` again",
        )
    return [sys.executable, "-m", "ziglang", "cc"]


def build(arch: str, out_dir: Path = BIN_DIR, source_dir: Path = SOURCE_DIR) -> Path:
    """Compiles the binary for ``arch`` into ``out_dir/fc-guest-agent-<arch>`` and returns it.

    The file appears atomically (written under a temporary name, then renamed), so a
    failed or interrupted build never leaves a truncated binary behind.
    """
    name = normalize_arch(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"fc-guest-agent-{name}"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [
        *compiler(),
        "-target", f"{name}-linux-musl",
        *CFLAGS,
        f'-DFCGA_VERSION="{__version__}"',
        "-o", str(tmp),
        *(str(p) for p in sources(source_dir)),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise GuestBuildError(
                f"zig cc failed for {name} (exit {proc.returncode}):\n{proc.stderr.strip()}",
                hint="the command was: " + " ".join(cmd),
            )
        tmp.chmod(0o755)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def build_all(out_dir: Path = BIN_DIR, source_dir: Path = SOURCE_DIR) -> list[Path]:
    """Builds every architecture in :data:`~fc_macos.guest.ARCHES`."""
    return [build(arch, out_dir, source_dir) for arch in ARCHES]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fc_macos.guest.build", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="all", choices=[*ARCHES, "all"], help="which binary (default: all)")
    parser.add_argument("--out", type=Path, default=BIN_DIR, help=f"output directory (default: {BIN_DIR})")
    parser.add_argument("--source", type=Path, default=SOURCE_DIR, help="the guest-agent/ source directory")
    args = parser.parse_args(argv)
    try:
        arches = ARCHES if args.arch == "all" else (args.arch,)
        for arch in arches:
            print(build(arch, args.out, args.source))
    except FcMacosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
