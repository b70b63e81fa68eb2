"""Ports against a real fc-agent and a real guest running busybox httpd (the
shared ``guest_world`` guest): ``port-forward`` on this machine and ports the
agent publishes (``run -p``, ``microvm ports``), each with a 200 and the right
body, 20 parallel connections and a 50 MiB download intact; and what
``microvm list`` and ``vm status`` show."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from fc_macos.providers.local_host import free_port
from tests.helpers.guest_world import BOOT_ARGS, INDEX, GuestWorld

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]
BIG = 50 * 1024 * 1024


def get(url: str, timeout: float = 120) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


@pytest.fixture(scope="module")
def big_sha256(guest_world: GuestWorld) -> Iterator[str]:
    guest_world.sh(f"head -c {BIG} /dev/urandom > /tmp/www/big.bin", timeout=300)
    yield guest_world.sh("sha256sum /tmp/www/big.bin").split()[0].decode()
    guest_world.sh("rm -f /tmp/www/big.bin")


def check_http(base: str, big_sha256: str) -> None:
    """200 with the right body, 20 at once, and the 50 MiB file intact."""
    assert get(f"{base}/index.html") == (200, INDEX)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: get(f"{base}/index.html?n={i}"), range(20)))
    assert answers == [(200, INDEX)] * 20
    status, body = get(f"{base}/big.bin", timeout=300)
    assert status == 200 and len(body) == BIG and hashlib.sha256(body).hexdigest() == big_sha256


def test_port_forward_reaches_the_guests_httpd(guest_world: GuestWorld, big_sha256: str) -> None:
    proc = subprocess.Popen(guest_world.argv("port-forward", "--name", guest_world.name, ":80", "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        [listener] = json.loads(proc.stdout.readline())
        assert listener["addr"] == "127.0.0.1" and listener["guest_port"] == 80
        check_http(f"http://127.0.0.1:{listener['port']}", big_sha256)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_port_forward_to_a_closed_guest_port_says_so_and_keeps_listening(guest_world: GuestWorld) -> None:
    port = free_port()
    proc = subprocess.Popen(guest_world.argv("port-forward", "--name", guest_world.name, f"{port}:9"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().startswith(f"Forwarding 127.0.0.1:{port} -> box:9")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            get(f"http://127.0.0.1:{port}/", timeout=30)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert b"nothing listens on 127.0.0.1:9" in err
    finally:
        proc.kill()
        proc.wait()


def test_port_forward_errors(guest_world: GuestWorld) -> None:
    bad = guest_world.fc("port-forward", "--name", guest_world.name, "80:http", check=False)
    assert bad.returncode == 2 and b"invalid guest port 'http'" in bad.stderr
    ghost = guest_world.fc("port-forward", "--name", "ghost", "8080:80", check=False)
    assert ghost.returncode == 1 and b"Hint: run 'fc-macos microvm list'" in ghost.stderr
    with socket.socket() as busy:  # a local port something else holds
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        in_use = guest_world.fc("port-forward", "--name", guest_world.name, f"{taken}:80", check=False)
    assert in_use.returncode == 1, in_use.stderr
    assert f"127.0.0.1:{taken} is already in use on this machine".encode() in in_use.stderr
    assert f"Hint: pick another local port, e.g. {taken + 1}:80".encode() in in_use.stderr
    guest_world.fc("run", "--name", "idle-pf", "--no-start")
    try:  # not started: the hint says how to start it
        idle = guest_world.fc("port-forward", "--name", "idle-pf", "8080:80", check=False)
        assert idle.returncode == 1 and b"'idle-pf' is created" in idle.stderr, idle.stderr
        assert b"Hint: start it: 'fc-macos actions start --name idle-pf'" in idle.stderr, idle.stderr
        none = guest_world.fc("microvm", "ports", "--name", "idle-pf").stdout
        assert none == b"No published ports. Publish one with: fc-macos microvm ports --name idle-pf --add 8080:80\n"
    finally:
        guest_world.fc("microvm", "rm", "--name", "idle-pf", "--force", check=False)


def test_port_forward_ends_when_its_microvm_goes(guest_world: GuestWorld) -> None:
    guest_world.fc("run", "--name", "pf-gone", "--memory", "128", "--boot-args", BOOT_ARGS, "--background", timeout=400)
    proc = subprocess.Popen(guest_world.argv("port-forward", "--name", "pf-gone", ":80"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"Forwarding 127.0.0.1:")
        guest_world.fc("microvm", "rm", "--name", "pf-gone", "--force")
        _, err = proc.communicate(timeout=60)  # not listening on for a microVM that is gone
        assert proc.returncode == 1, err
        assert b"Error: microVM 'pf-gone' was deleted: port-forward ends" in err and b"Hint:" in err
    finally:
        proc.kill()
        proc.wait()
        guest_world.fc("microvm", "rm", "--name", "pf-gone", "--force", check=False)


def test_run_publish_reaches_the_guests_httpd(guest_world: GuestWorld, big_sha256: str) -> None:
    check_http(f"http://127.0.0.1:{guest_world.http_port}", big_sha256)


def test_microvm_ports_add_list_remove(guest_world: GuestWorld) -> None:
    port = free_port()
    added = json.loads(guest_world.fc("microvm", "ports", "--name", guest_world.name, "--add", f"{port}:80",
                                      "--json").stdout)
    assert {"host_addr": "0.0.0.0", "host_port": port, "guest_port": 80} in added
    assert get(f"http://127.0.0.1:{port}/index.html") == (200, INDEX)
    text = guest_world.fc("microvm", "ports", "--name", guest_world.name).stdout.decode()
    assert f"0.0.0.0:{port}" in text and f"127.0.0.1:{port}" in text  # listens on / reach at
    again = json.loads(guest_world.fc("microvm", "ports", "--name", guest_world.name, "--add", f"{port}:80",
                                      "--json").stdout)
    assert again == added  # the same port again: nothing changes
    with socket.socket() as busy:  # a port something else holds on the agent's machine
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        taken_port = busy.getsockname()[1]
        taken = guest_world.fc("microvm", "ports", "--name", guest_world.name, "--add", f"{taken_port}:80", check=False)
        assert taken.returncode == 1 and f"0.0.0.0:{taken_port}".encode() in taken.stderr and b"Hint:" in taken.stderr
        # all or nothing: a change that fails midway leaves the ports as they were
        other = free_port()
        half = guest_world.fc("microvm", "ports", "--name", guest_world.name, "--remove", str(port),
                              "--add", f"{other}:80", "--add", f"{taken_port}:80", check=False)
        assert half.returncode == 1 and f"0.0.0.0:{taken_port}".encode() in half.stderr
        assert b"nothing was changed" in half.stderr, half.stderr
    unchanged = json.loads(guest_world.fc("microvm", "ports", "--name", guest_world.name, "--json").stdout)
    assert unchanged == added
    left = json.loads(guest_world.fc("microvm", "ports", "--name", guest_world.name, "--remove", str(port),
                                     "--json").stdout)
    assert all(p["host_port"] != port for p in left)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(f"http://127.0.0.1:{port}/index.html", timeout=10)


def test_microvm_list_shows_ports_and_the_guest_agent(guest_world: GuestWorld) -> None:
    [box] = [vm for vm in json.loads(guest_world.fc("microvm", "list", "--json").stdout) if vm["name"] == "box"]
    assert box["guest_agent"]["state"] == "ready" and box["guest_agent"]["version"]
    assert {"host_addr": "127.0.0.1", "host_port": guest_world.http_port, "guest_port": 80} in box["ports"]
    text = guest_world.fc("microvm", "list").stdout.decode()
    header, *rows = text.splitlines()
    assert header.split()[-2:] == ["AGENT", "PORTS"]
    [row] = [r for r in rows if r.startswith("box ")]
    assert " ready " in row and f"127.0.0.1:{guest_world.http_port}->80" in row
    status = guest_world.fc("microvm", "status", "--name", "box").stdout.decode()
    assert "Guest agent: ready, version" in status and f"Ports:     127.0.0.1:{guest_world.http_port}->80" in status


def test_vm_status_shows_the_address(guest_world: GuestWorld) -> None:
    data = json.loads(guest_world.fc("vm", "status", "--json").stdout)
    assert data["address"] == "127.0.0.1"
    assert "Address:" in guest_world.fc("vm", "status").stdout.decode()
