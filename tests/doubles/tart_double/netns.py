"""A running VM of the Tart double: a network namespace + veth pair, and the
mount namespace in which ``tart exec`` runs commands."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

from tart_double.state import VM, pid_alive

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOCK_FILE = Path("/tmp/tart-double-subnets.lock")

# Runs inside `ip netns exec NS unshare --mount --propagation private`: $1 is the
# VM's root directory, $2 "1" if the VM has systemd, the rest is the command.
# Mounts the VM's own directories, then runs the command as the guest would
# (working directory /, guest PATH). With systemd, /run/systemd is the VM's own
# directory (root/run-systemd, kept across `tart exec`, emptied by `tart run`).
GUEST_SCRIPT = r"""
set -e
r=$1; systemd=$2; shift 2
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$r/etc,workdir=$r/.work/etc" /etc
mount -t overlay overlay -o "lowerdir=/var,upperdir=$r/var,workdir=$r/.work/var" /var
mount --bind "$r/opt" /opt
mount --bind "$r/usr-local-bin" /usr/local/bin
mount --bind "$r/usr-local-sbin" /usr/local/sbin
mount --bind "$r/home" /home
if [ "$systemd" = 1 ]; then
  mkdir -p /run/systemd
  mount --bind "$r/run-systemd" /run/systemd
elif [ -d /run/systemd ]; then
  mount -t tmpfs tmpfs /run/systemd
fi
mount --bind "$r/tmp" /tmp
set +e
cd /
if ! command -v "$1" >/dev/null 2>&1; then
  echo "Error: failed to run \"$1\": executable file not found in \$PATH" >&2
  exit 1
fi
exec "$@"
"""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _ip_ok(*args: str) -> None:
    proc = _ip(*args)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _used_subnets(base: str) -> set[int]:
    out = _ip("-4", "-o", "addr", "show").stdout
    used = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith(base + "."):
                used.add(int(word.split(".")[2]))
    return used


def ns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def start(vm: VM) -> dict[str, str]:
    """Create the VM's namespace and veth pair; returns its addresses."""
    ns, host_if, vm_if = vm.ids
    teardown(vm)  # a stale namespace from a killed `tart run`
    base = os.environ.get("TART_DOUBLE_SUBNET_BASE", "172.30")
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _used_subnets(base)
        n = next((i for i in range(256) if i not in used), None)
        if n is None:
            raise RuntimeError(f"no free /30 left in {base}.0.0/16")
        gateway, address = f"{base}.{n}.1", f"{base}.{n}.2"
        # The double's whole range stays on this machine: a stopped VM's address
        # answers "no route to host" instead of leaving through the default route.
        _ip_ok("route", "replace", "unreachable", f"{base}.0.0/16")
        _ip_ok("netns", "add", ns)
        _ip_ok("link", "add", host_if, "type", "veth", "peer", "name", vm_if)
        _ip_ok("link", "set", vm_if, "netns", ns)
        _ip_ok("addr", "add", f"{gateway}/30", "dev", host_if)
        _ip_ok("link", "set", host_if, "up")
    _ip_ok("-n", ns, "addr", "add", f"{address}/30", "dev", vm_if)
    _ip_ok("-n", ns, "link", "set", vm_if, "up")
    _ip_ok("-n", ns, "link", "set", "lo", "up")
    _ip_ok("-n", ns, "route", "add", "default", "via", gateway)
    return {"netns": ns, "ip": address, "gateway": gateway}


def ns_pids(ns: str) -> list[int]:
    if not ns_exists(ns):
        return []
    out = _ip("netns", "pids", ns).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def teardown(vm: VM) -> None:
    """Kill every process in the VM's namespace, remove the namespace and veth."""
    ns, host_if, _ = vm.ids
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        pids = ns_pids(ns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if pid_alive(p)]
            time.sleep(0.05)
        if not pids:
            break
    if ns_exists(ns):
        _ip("netns", "del", ns)
    _ip("link", "del", host_if)


def exec_argv(vm: VM, command: list[str]) -> list[str]:
    """The host command that runs ``command`` inside the running VM."""
    ns = vm.ids[0]
    systemd = "1" if vm.run_info.get("systemd") else "0"
    return ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
            "/bin/sh", "-c", GUEST_SCRIPT, "guest", str(vm.root.resolve()), systemd, *command]


def guest_env(tty: bool) -> dict[str, str]:
    env = {"PATH": GUEST_PATH, "HOME": "/home/admin", "USER": "admin", "LOGNAME": "admin",
           "LANG": "C.UTF-8", "SHELL": "/bin/bash"}
    if tty:
        env["TERM"] = os.environ.get("TERM", "xterm-256color")
    return env
