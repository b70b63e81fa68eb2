"""Packaging hook: the wheel build compiles fc-guest-agent for x86_64 and aarch64.

Everything else about the package is in pyproject.toml. ``build_py`` runs
``fc_macos.guest.build`` (``zig cc`` from the ``ziglang`` build requirement) after the
Python files are copied, writing ``fc_macos/guest/bin/fc-guest-agent-<arch>`` into the
build directory, so ``pip install .`` and ``pip wheel .`` ship both binaries. For an
editable install (``pip install -e .``) they are built in place, in src/fc_macos/guest/bin.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class build_py_with_guest_agent(build_py):  # noqa: N801 (setuptools command naming)
    def run(self) -> None:
        super().run()
        sys.path.insert(0, str(ROOT / "src"))
        from fc_macos.guest.build import build_all

        if getattr(self, "editable_mode", False):
            out = ROOT / "src" / "fc_macos" / "guest" / "bin"
        else:
            out = Path(self.build_lib) / "fc_macos" / "guest" / "bin"
        for path in build_all(out, ROOT / "guest-agent"):
            print(f"built {path}")


setup(cmdclass={"build_py": build_py_with_guest_agent})
