"""wheels: a reproducible wheel of fc_macos and pure wheels of its dependencies for
the VM's Python, enough to run the agent on a Python without third-party packages."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from fc_macos.errors import ProviderError
from fc_macos.providers import wheels

STOCK_PYTHON = Path("/usr/bin/python3")


def test_project_wheel_is_complete_and_reproducible(tmp_path: Path) -> None:
    first = wheels.project_wheel(tmp_path / "a")
    second = wheels.project_wheel(tmp_path / "b")
    assert first.name == second.name and first.name.endswith("-py3-none-any.whl")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        assert "fc_macos/__init__.py" in names and "fc_macos/agent/wire.py" in names
        assert "fc_macos/firecracker/firecracker-api.json" in names and "fc_macos/py.typed" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{info}/METADATA").decode()
        assert "Requires-Dist: aiohttp" in metadata and "pytest" not in metadata
        assert "fc-agent = fc_macos.agent.main:main" in zf.read(f"{info}/entry_points.txt").decode()
        for line in zf.read(f"{info}/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if name.endswith("RECORD"):
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={expected}", len(data)), name


def test_requirements_are_the_runtime_ones() -> None:
    names = {wheels.canonical(r.split(">")[0].split("=")[0].split("<")[0]) for r in wheels.requirements()}
    assert names == {"aiohttp", "click", "fastjsonschema", "textual"}


def _download(version: str, cache: Path) -> list[Path]:
    try:
        return wheels.dependency_wheels(version, cache, machine="x86_64")
    except ProviderError as exc:
        if "PyPI" in (exc.hint or ""):
            pytest.skip(f"needs PyPI to download wheels: {exc.message}")
        raise


def test_dependency_wheels_follow_the_target_python(tmp_path: Path) -> None:
    old = {wheels.canonical(w.name.split("-")[0]) for w in _download("3.10", tmp_path)}
    new = {wheels.canonical(w.name.split("-")[0]) for w in _download("3.12", tmp_path)}
    for deps in (old, new):
        assert {"aiohttp", "click", "fastjsonschema", "yarl", "multidict"} <= deps
    # aiohttp needs async-timeout below 3.11 only, whatever the host's Python is.
    assert "async-timeout" in old and "async-timeout" not in new
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["3.10", "3.12"]


def test_dependency_wheels_are_reused_from_the_cache(tmp_path: Path) -> None:
    first = _download("3.11", tmp_path)
    marker = first[0].stat().st_mtime_ns
    again = wheels.dependency_wheels("3.11", tmp_path, machine="x86_64")
    assert again == first and again[0].stat().st_mtime_ns == marker


@pytest.mark.skipif(not STOCK_PYTHON.exists(), reason="needs the system's /usr/bin/python3 (a stock Python)")
def test_unpacked_wheels_run_the_agent_on_a_stock_python(tmp_path: Path) -> None:
    version = subprocess.run([str(STOCK_PYTHON), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    stock = subprocess.run([str(STOCK_PYTHON), "-c", "import aiohttp"], capture_output=True)
    if stock.returncode == 0:
        pytest.skip("/usr/bin/python3 already has aiohttp: it cannot show that the wheels are enough")
    lib = tmp_path / "lib"
    for wheel in [wheels.project_wheel(tmp_path / "own"), *_download(version, tmp_path / "cache")]:
        subprocess.run([str(STOCK_PYTHON), "-m", "zipfile", "-e", str(wheel), str(lib)], check=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(lib)}
    probe = subprocess.run(
        [str(STOCK_PYTHON), "-c", "import aiohttp, click, fastjsonschema, fc_macos.agent.client; print('ok')"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "ok"
