"""pytest fixtures for tests that drive the Tart double (registered for every test by tests/conftest.py).

``tart_double``: a fresh ``TART_HOME`` and ``FC_MACOS_TART`` pointing at the
double, set in the environment (so the product and the double see them); on
teardown every VM of that TART_HOME still running is stopped.
``tart_double_root``: the same, but skips unless this machine can run VMs of
the double (root, ``ip netns``, ``unshare``, overlayfs, /dev/kvm).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TART = Path(__file__).resolve().parent.parent / "tart"


@dataclass(frozen=True)
class TartDouble:
    program: Path
    home: Path

    def __call__(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the double directly."""
        return subprocess.run([str(self.program), *args], capture_output=True, text=True, check=check,
                              timeout=timeout)

    def vm_root(self, name: str) -> Path:
        return self.home / "vms" / name / "root"

    def stop_all(self) -> None:
        out = self("list", "--format", "json").stdout or "[]"
        for row in json.loads(out):
            if row["Source"] == "local" and row["Running"]:
                self("stop", row["Name"], "--timeout", "0")


def cannot_run_vms() -> str | None:
    """Why the double's VMs cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "the Tart double's VMs need root (network and mount namespaces): run the tests as root"
    for tool in ("ip", "unshare", "mount"):
        if not shutil.which(tool):
            return f"the Tart double needs '{tool}' (apt-get install iproute2 util-linux mount)"
    if not os.path.exists("/dev/kvm"):
        return "the Tart double needs /dev/kvm"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the Tart double needs overlayfs (modprobe overlay)"
    return None


@pytest.fixture
def tart_double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TartDouble]:
    home = tmp_path / "tart-home"
    monkeypatch.setenv("TART_HOME", str(home))
    monkeypatch.setenv("FC_MACOS_TART", str(TART))
    double = TartDouble(TART, home)
    try:
        yield double
    finally:
        if home.exists():
            double.stop_all()


@pytest.fixture
def tart_double_root(tart_double: TartDouble) -> TartDouble:
    reason = cannot_run_vms()
    if reason:
        pytest.skip(reason)
    return tart_double
