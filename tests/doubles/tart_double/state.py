"""On-disk state of the Tart double's VMs under TART_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SUDO_SHIM = """#!/bin/sh
# sudo of the Tart double's VMs: everything already runs as root.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C|-D|-h|-p|-r|-t|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: sudo command" >&2; exit 1; }
exec env "$@"
"""

SYSTEMD_SHIM = Path(__file__).resolve().parent / "systemd.py"
SYSTEMD_TOOLS = ("systemctl", "journalctl")

#: The VM's own directories (under root/); /etc and /var are overlays (upper + .work).
ROOT_DIRS = ("etc", "var", "opt", "usr-local-bin", "usr-local-sbin", "home/admin", "tmp", ".work/etc", ".work/var")


def tart_home() -> Path:
    return Path(os.environ.get("TART_HOME") or Path.home() / ".tart").expanduser()


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class VM:
    name: str
    dir: Path

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def exists(self) -> bool:
        return (self.dir / "config.json").is_file()

    @property
    def config(self) -> dict[str, Any]:
        return _read(self.dir / "config.json") or {}

    def save_config(self, config: dict[str, Any]) -> None:
        _write(self.dir / "config.json", config)

    @property
    def run_info(self) -> dict[str, Any]:
        return _read(self.dir / "run.json") or {}

    def save_run_info(self, info: dict[str, Any]) -> None:
        _write(self.dir / "run.json", info)

    @property
    def running(self) -> bool:
        info = self.run_info
        return info.get("state") == "running" and pid_alive(int(info.get("pid", 0)))

    @property
    def ids(self) -> tuple[str, str, str]:
        """(netns name, host-side veth, VM-side veth): unique per TART_HOME and VM."""
        digest = hashlib.sha1(f"{self.dir.resolve()}".encode()).hexdigest()[:8]
        return f"tartd-{digest}", f"td{digest}h", f"td{digest}v"

    def create(self, source: str) -> None:
        self.dir.mkdir(parents=True)
        for sub in ROOT_DIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").chmod(0o1777)
        sudo = self.root / "usr-local-sbin" / "sudo"
        sudo.write_text(SUDO_SHIM)
        sudo.chmod(0o755)
        self.save_config({"os": "linux", "cpu": 4, "memory": 4096, "disk": 20, "source": source,
                          "created": datetime.now(timezone.utc).isoformat()})

    def boot(self, systemd: bool) -> None:
        """What a boot resets: /run/systemd (with systemd, an empty root/run-systemd
        holding system/) and the systemctl/journalctl shims in /usr/local/sbin
        (installed only with systemd)."""
        run = self.root / "run-systemd"
        shutil.rmtree(run, ignore_errors=True)
        sbin = self.root / "usr-local-sbin"
        for tool in SYSTEMD_TOOLS:
            (sbin / tool).unlink(missing_ok=True)
        if not systemd:
            return
        (run / "system").mkdir(parents=True)
        for tool in SYSTEMD_TOOLS:
            shutil.copyfile(SYSTEMD_SHIM, sbin / tool)
            (sbin / tool).chmod(0o755)

    def enabled_units(self) -> list[str]:
        """Units enabled in the VM for multi-user.target (what boot starts)."""
        wants = self.root / "etc" / "systemd" / "system" / "multi-user.target.wants"
        return sorted(p.name for p in wants.iterdir()) if wants.is_dir() else []

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def size_gb(self) -> float:
        total = 0
        for dirpath, _dirs, files in os.walk(self.dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        return total / 1e9


def vm(name: str) -> VM:
    return VM(name, tart_home() / "vms" / name)


def all_vms() -> list[VM]:
    base = tart_home() / "vms"
    if not base.is_dir():
        return []
    return [vm(p.name) for p in sorted(base.iterdir()) if (p / "config.json").is_file()]


def oci_images() -> list[str]:
    return list(_read(tart_home() / "oci.json") or [])


def record_oci(name: str) -> None:
    home = tart_home()
    home.mkdir(parents=True, exist_ok=True)
    images = oci_images()
    if name not in images:
        _write(home / "oci.json", images + [name])
