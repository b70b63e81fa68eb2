"""The Tart double keeps Tart's CLI contract (/work/shared/tart/README.md)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.tart_double.state import pid_alive
from tests.doubles.tart_double.fixtures import TartDouble

IMAGE = "ghcr.io/cirruslabs/ubuntu:latest"


def test_version_prints_a_bare_version(tart_double: TartDouble) -> None:
    out = tart_double("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == "2.32.1"


def test_clone_records_the_oci_image_and_a_local_vm(tart_double: TartDouble) -> None:
    assert tart_double("clone", IMAGE, "vm1").returncode == 0
    rows = json.loads(tart_double("list", "--format", "json").stdout)
    by_source = {(r["Source"], r["Name"]) for r in rows}
    assert by_source == {("OCI", IMAGE), ("local", "vm1")}
    local = next(r for r in rows if r["Source"] == "local")
    assert set(local) == {"Source", "Name", "Disk", "Size", "Accessed", "Running", "State"}
    assert (local["Running"], local["State"]) == (False, "stopped")
    again = tart_double("clone", IMAGE, "vm1")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_clone_of_a_missing_local_vm_exits_2(tart_double: TartDouble) -> None:
    out = tart_double("clone", "nope", "vm2")
    assert out.returncode == 2
    assert "does not exist" in out.stderr


def test_get_and_set(tart_double: TartDouble) -> None:
    tart_double("clone", IMAGE, "vm1", check=True)
    assert tart_double("set", "vm1", "--cpu", "2", "--memory", "2048", "--disk-size", "30").returncode == 0
    data = json.loads(tart_double("get", "vm1", "--format", "json").stdout)
    assert (data["OS"], data["CPU"], data["Memory"], data["Disk"]) == ("linux", 2, 2048, 30)
    assert isinstance(data["Size"], str) and data["State"] == "stopped" and data["Running"] is False
    shrink = tart_double("set", "vm1", "--disk-size", "10")
    assert shrink.returncode == 1


def test_commands_on_missing_vms_exit_2(tart_double: TartDouble) -> None:
    for args in (("get", "x", "--format", "json"), ("ip", "x"), ("exec", "x", "true"), ("stop", "x"),
                 ("delete", "x"), ("set", "x", "--cpu", "1")):
        out = tart_double(*args)
        assert out.returncode == 2, args
        assert "does not exist" in out.stderr


def test_stopped_vm_has_no_ip_and_cannot_exec(tart_double: TartDouble) -> None:
    tart_double("clone", IMAGE, "vm1", check=True)
    ip = tart_double("ip", "vm1")
    assert ip.returncode == 1 and "no IP address found" in ip.stderr
    out = tart_double("exec", "vm1", "true")
    assert out.returncode == 2 and "not running" in out.stderr
    assert tart_double("stop", "vm1").returncode == 2


def test_usage_errors_exit_64(tart_double: TartDouble) -> None:
    assert tart_double("frobnicate").returncode == 64
    assert tart_double("set", "vm1", "--cpu", "many").returncode == 64
    assert tart_double("list", "--format", "yaml").returncode == 64


def test_failed_clone_leaves_a_partial_vm(tart_double: TartDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TART_DOUBLE_FAIL_CLONE", "1")
    out = tart_double("clone", IMAGE, "vm1")
    assert out.returncode == 1 and "pull" in out.stderr
    assert "vm1" in tart_double("list", "--format", "json").stdout
    assert tart_double("delete", "vm1").returncode == 0
    assert "vm1" not in tart_double("list", "--format", "json").stdout


def test_run_without_nested_support_fails_like_tart(tart_double: TartDouble,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tart_double("clone", IMAGE, "vm1", check=True)
    monkeypatch.setenv("TART_DOUBLE_NO_NESTED", "1")
    out = tart_double("run", "vm1", "--no-graphics", "--nested")
    assert out.returncode == 1
    assert "M3 chip, and later" in out.stderr


# -- running VMs (root) ---------------------------------------------------------------------


@pytest.fixture
def running_vm(tart_double_root: TartDouble, tmp_path: Path) -> Iterator[str]:
    tart = tart_double_root
    tart("clone", IMAGE, "vm1", check=True)
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen([str(tart.program), "run", "vm1", "--no-graphics", "--nested"],
                            stdout=log, stderr=log, start_new_session=True)
    ip = tart("ip", "vm1", "--wait", "20")
    assert ip.returncode == 0, (tmp_path / "run.log").read_text()
    yield ip.stdout.strip()
    tart("stop", "vm1", "--timeout", "0")
    proc.wait(timeout=30)
    log.close()


def test_running_vm_is_listed_and_rejects_second_run_and_delete(tart_double_root: TartDouble,
                                                                 running_vm: str) -> None:
    tart = tart_double_root
    data = json.loads(tart("get", "vm1", "--format", "json").stdout)
    assert (data["Running"], data["State"]) == (True, "running")
    again = tart("run", "vm1", "--no-graphics")
    assert again.returncode == 2 and "already running" in again.stderr
    assert tart("delete", "vm1").returncode == 1
    assert tart("set", "vm1", "--cpu", "2").returncode == 1


def test_exec_runs_inside_the_vm_with_its_own_files(tart_double_root: TartDouble, running_vm: str) -> None:
    tart = tart_double_root
    script = ("set -e; ip -4 -o addr show | grep -q ' {ip}/'; ip route show default; "
              "sudo mkdir -p /etc/fc-agent /opt/probe; echo secret | sudo tee /etc/fc-agent/token >/dev/null; "
              "touch /usr/local/bin/probe /tmp/probe; pwd; command -v python3; echo $PATH").format(ip=running_vm)
    out = tart("exec", "vm1", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    gateway = running_vm.rsplit(".", 1)[0] + ".1"
    assert lines[0].startswith(f"default via {gateway} ")
    assert lines[1:4] == ["/", "/usr/bin/python3", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    root = tart.vm_root("vm1")
    assert (root / "etc" / "fc-agent" / "token").read_text() == "secret\n"
    assert (root / "opt" / "probe").is_dir() and (root / "usr-local-bin" / "probe").exists()
    assert (root / "tmp" / "probe").exists()
    assert not Path("/etc/fc-agent").exists() and not Path("/opt/probe").exists()
    assert not Path("/usr/local/bin/probe").exists()


def test_exec_exit_codes_and_stdin(tart_double_root: TartDouble, running_vm: str) -> None:
    tart = tart_double_root
    assert tart("exec", "vm1", "sh", "-c", "exit 7").returncode == 7
    missing = tart("exec", "vm1", "no-such-program")
    assert missing.returncode == 1 and "not found" in missing.stderr
    out = subprocess.run([str(tart.program), "exec", "-i", "vm1", "cat"], input="hello", capture_output=True,
                         text=True, timeout=30)
    assert out.stdout == "hello"
    no_stdin = subprocess.run([str(tart.program), "exec", "vm1", "cat"], input="hello", capture_output=True,
                              text=True, timeout=30)
    assert no_stdin.stdout == ""


def test_host_reaches_a_daemon_in_the_vm_and_stop_kills_it(tart_double_root: TartDouble, running_vm: str) -> None:
    tart = tart_double_root
    server = ("import os, socket; open('/tmp/srv.pid', 'w').write(str(os.getpid())); s = socket.socket(); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              "s.bind(('0.0.0.0', 8765)); s.listen(); c, _ = s.accept(); c.sendall(b'from-vm'); c.close(); "
              "import time; time.sleep(600)")
    start = tart("exec", "vm1", "sh", "-c", f"nohup setsid python3 -c \"{server}\" >/tmp/srv.log 2>&1 &")
    assert start.returncode == 0, start.stderr
    data = b""
    for _ in range(100):
        try:
            with socket.create_connection((running_vm, 8765), timeout=2) as conn:
                data = conn.recv(100)
            break
        except OSError:
            time.sleep(0.1)
    assert data == b"from-vm"
    ns = json.loads((tart.home / "vms" / "vm1" / "run.json").read_text())["netns"]
    assert subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    assert tart("stop", "vm1", "--timeout", "5").returncode == 0
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert json.loads(tart("get", "vm1", "--format", "json").stdout)["State"] == "stopped"
    pid = int((tart.vm_root("vm1") / "tmp" / "srv.pid").read_text())
    assert not pid_alive(pid)


# -- systemd (TART_DOUBLE_SYSTEMD=1) ----------------------------------------------------------------

UNIT = """[Unit]
Description=probe service

[Service]
ExecStart=/usr/bin/python3 -u -c "import os, time; print('probe up', os.getpid()); time.sleep(600)"
KillMode=process

[Install]
WantedBy=multi-user.target
"""


def _run_vm(tart: TartDouble, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(tart.program), "run", "vm1", "--no-graphics", "--nested"],
                                stdout=log, stderr=log, start_new_session=True)
    assert tart("ip", "vm1", "--wait", "20").returncode == 0, log_path.read_text()
    return proc


@pytest.fixture
def systemd_vm(tart_double_root: TartDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    tart = tart_double_root
    monkeypatch.setenv("TART_DOUBLE_SYSTEMD", "1")
    tart("clone", IMAGE, "vm1", check=True)
    proc = _run_vm(tart, tmp_path / "run.log")
    yield "vm1"
    tart("stop", "vm1", "--timeout", "0")
    proc.wait(timeout=30)


def test_a_vm_has_no_systemd_by_default(tart_double_root: TartDouble, running_vm: str) -> None:
    assert tart_double_root("exec", "vm1", "test", "-d", "/run/systemd/system").returncode == 1


def test_systemctl_on_a_missing_unit_fails_like_systemd(tart_double_root: TartDouble, systemd_vm: str) -> None:
    tart = tart_double_root
    assert tart("exec", "vm1", "test", "-d", "/run/systemd/system").returncode == 0
    out = tart("exec", "vm1", "sudo", "systemctl", "restart", "nope")
    assert out.returncode == 5
    assert out.stderr.strip() == "Failed to restart nope.service: Unit nope.service not found."
    assert tart("exec", "vm1", "systemctl", "start", "nope.service").returncode == 5
    inactive = tart("exec", "vm1", "systemctl", "is-active", "nope")
    assert (inactive.returncode, inactive.stdout) == (3, "inactive\n")


def test_a_unit_starts_logs_stops_and_starts_again_at_boot(tart_double_root: TartDouble, systemd_vm: str,
                                                           tmp_path: Path) -> None:
    tart = tart_double_root
    unit_dir = tart.vm_root("vm1") / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    (unit_dir / "probe.service").write_text(UNIT)

    def is_active() -> tuple[int, str]:
        out = tart("exec", "vm1", "systemctl", "is-active", "probe")
        return out.returncode, out.stdout.strip()

    def journal() -> list[str]:
        out = tart("exec", "vm1", "journalctl", "-u", "probe", "-n", "50", "--no-pager")
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    def main_pid() -> int:
        return int((tart.vm_root("vm1") / "run-systemd" / "double" / "probe.service.pid").read_text())

    assert is_active() == (3, "inactive")
    assert tart("exec", "vm1", "sh", "-c", "systemctl daemon-reload && systemctl enable probe").returncode == 0
    assert (unit_dir / "multi-user.target.wants" / "probe.service").is_symlink()
    assert tart("exec", "vm1", "systemctl", "start", "probe").returncode == 0
    assert is_active() == (0, "active")  # across `tart exec` calls
    pid = main_pid()
    for _ in range(100):
        if f"probe up {pid}" in journal():
            break
        time.sleep(0.1)
    assert f"probe up {pid}" in journal()
    status = tart("exec", "vm1", "systemctl", "status", "probe")
    assert status.returncode == 0 and f"Main PID: {pid}" in status.stdout and "enabled" in status.stdout
    assert tart("exec", "vm1", "systemctl", "restart", "probe").returncode == 0
    assert not pid_alive(pid) and pid_alive(main_pid()) and main_pid() != pid
    assert tart("exec", "vm1", "systemctl", "stop", "probe").returncode == 0
    assert is_active() == (3, "inactive")
    assert journal()[-1] == "systemd[1]: Stopped probe.service."
    assert tart("exec", "vm1", "systemctl", "start", "probe").returncode == 0
    pid = main_pid()
    # `tart stop` kills the service like every process of the VM; the next boot starts it again
    assert tart("stop", "vm1", "--timeout", "5").returncode == 0
    assert not pid_alive(pid)
    _run_vm(tart, tmp_path / "run.log")
    assert is_active() == (0, "active")
    assert main_pid() != pid
