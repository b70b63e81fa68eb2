"""The agent's wheels for the VM's Python: fc-macos itself and its dependencies.

The Linux VM needs no internet and no pip: setup hands it pure-Python wheels
and unpacks them with ``python3 -m zipfile -e`` (stdlib only).

* :func:`project_wheel` packs the ``fc_macos`` package that is running now
  (whatever the install: regular, editable, or a source tree on ``sys.path``)
  into a ``py3-none-any`` wheel with :mod:`zipfile`. It is reproducible (fixed
  timestamps, sorted entries), so the same code gives the same checksum and a
  re-run of setup can see that the VM already has it. This is more robust than
  ``pip wheel`` on a source tree (no build backend, no network, no
  ``--no-build-isolation`` requirements) and ships exactly the code that runs.
* :func:`dependency_wheels` downloads the wheels of the requirements
  (``aiohttp``, ``click``, ``fastjsonschema`` and theirs) for the VM's Python
  version with ``pip download --only-binary=:all: --platform any
  --implementation py --python-version X.Y`` into
  ``FC_MACOS_HOME/wheelhouse/X.Y/`` and reuses them when present. pip evaluates
  environment markers for the *host's* Python, not the target's; a second
  pass reads each wheel's ``Requires-Dist`` and fetches what the target needs
  but pip skipped (e.g. ``async-timeout`` for Python 3.10).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import fc_macos
from fc_macos.errors import ProviderError

DIST_NAME = "fc-macos"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_WHEEL_FILE = "Wheel-Version: 1.0\nGenerator: fc-macos\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ProviderError(
            "fc-macos is not installed as a distribution, so its requirements are unknown",
            hint="install it: 'pip install fc-macos' (or 'pip install -e .' in a source tree)",
        ) from exc


def requirements() -> list[str]:
    """fc-macos's runtime requirements (no extras), e.g. ``["aiohttp>=3.10", ...]``."""
    return [req for req in (_distribution().requires or []) if "extra ==" not in req]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _metadata(version: str, reqs: list[str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {DIST_NAME}", f"Version: {version}", "Requires-Python: >=3.10"]
    lines += [f"Requires-Dist: {req}" for req in reqs]
    return "\n".join(lines) + "\n"


def project_wheel(out_dir: Path) -> Path:
    """Pack the running ``fc_macos`` package into ``out_dir``; returns the wheel's path."""
    dist = _distribution()
    package_dir = Path(fc_macos.__file__).resolve().parent
    version = dist.version
    info = f"fc_macos-{version}.dist-info"
    entries: dict[str, bytes] = {}
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(root, name)
            entries["fc_macos/" + path.relative_to(package_dir).as_posix()] = path.read_bytes()
    entries[f"{info}/METADATA"] = _metadata(version, requirements()).encode()
    entries[f"{info}/WHEEL"] = _WHEEL_FILE.encode()
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries[f"{info}/entry_points.txt"] = entry_points.encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries.items())
    entries[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"fc_macos-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            item = zipfile.ZipInfo(name, date_time=_EPOCH)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(item, data)
    wheel.write_bytes(buffer.getvalue())
    return wheel


def _marker_environment(python_version: str, machine: str) -> dict[str, str]:
    return {
        "python_version": python_version, "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
        "platform_machine": machine, "extra": "",
    }


def _needed_but_missing(wheel_dir: Path, python_version: str, machine: str) -> list[str]:
    """Requirements of the wheels in ``wheel_dir`` that apply to the target Python
    but have no wheel there (pip judged their markers by the host's Python)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef,assignment]
        except ImportError:
            return []
    env = _marker_environment(python_version, machine)
    present = {canonical(w.name.split("-", 1)[0]) for w in wheel_dir.glob("*.whl")}
    missing: dict[str, str] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = zf.read(meta).decode("utf-8", "replace") if meta else ""
        for line in text.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if canonical(req.name) not in present:
                missing.setdefault(canonical(req.name), f"{req.name}{req.specifier}")
    return list(missing.values())


def _pip_download(dest: Path, python_version: str, reqs: list[str]) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
            "--platform", "any", "--implementation", "py", "--python-version", python_version,
            "-d", str(dest), *reqs]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"cannot run pip to fetch the agent's dependencies: {exc}",
                            hint="make sure 'python3 -m pip' works on this Mac") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ProviderError(
            f"pip could not download pure-Python wheels of {', '.join(reqs)} for Python {python_version}: {tail}",
            hint="check this Mac's internet access (PyPI), then run 'fc-macos setup' again",
        )


def dependency_wheels(python_version: str, cache_root: Path, *, machine: str = "aarch64") -> list[Path]:
    """Wheels of fc-macos's requirements for ``python_version`` (``"3.12"``) in
    ``cache_root/python_version``; downloaded once, then reused."""
    reqs = sorted(requirements())
    target = cache_root / python_version
    stamp = target / "requirements.txt"
    wanted = "\n".join(reqs) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        wheels = sorted(target.glob("*.whl"))
        if wheels:
            return wheels
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{python_version}.", dir=cache_root))
    try:
        _pip_download(work, python_version, reqs)
        for _ in range(5):
            missing = _needed_but_missing(work, python_version, machine)
            if not missing:
                break
            _pip_download(work, python_version, missing)
        (work / "requirements.txt").write_text(wanted)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sorted(target.glob("*.whl"))
