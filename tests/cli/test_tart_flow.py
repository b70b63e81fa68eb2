"""End to end on the ``tart`` provider, through the real ``fc-macos`` CLI: the Tart double (a
VM per network namespace) -> fc-agent installed in it by ``setup`` -> the test VMM as
Firecracker -> real guests under QEMU (the guest-booting test is marked ``guest``).

One Tart VM serves the whole module (setup is the slow part); the flow test comes first
and starts from nothing. Every other test first makes sure the agent answers (running
``setup`` again if a test before it left the VM stopped), so each also runs alone. The
CLI runs from a copy of the package taken when the module starts. Teardown stops and
deletes the double's VMs, and clears a namespace whose ``tart run`` died, so no agent,
VMM or QEMU process outlives the module.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import fc_macos
from fc_macos.config import AgentEndpoint
from tests.cli.terminal import shell_runs
from tests.doubles.tart_double.fixtures import TART, TartDouble, cannot_run_vms
from tests.doubles.tart_double.state import VM, pid_alive

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"
VM_NAME = "fc-flow"
IMAGES_IN_VM = "/var/lib/fc-agent/images"

CHECK_STEPS = {"check-tart", "check-host", "wait-ip", "wait-exec", "check-kvm", "inspect-vm", "check-agent"}
START_STEPS = {"start-vm", "start-agent"}
INSTALL_STEPS = {"clone-vm", "configure-vm", "install-firecracker", "install-agent", "install-images", "write-token"}
SETUP_STEPS = ["check-tart", "check-host", "clone-vm", "configure-vm", "start-vm", "wait-ip", "wait-exec",
               "check-kvm", "inspect-vm", "install-firecracker", "install-agent", "install-images",
               "write-token", "start-agent", "check-agent"]


# -- the world: one Tart home, one FC_MACOS_HOME, one VM ----------------------------------------


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fc_macos.cli.main", "--provider", "tart", *args]


def events(output: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def names(evts: list[dict[str, str]], kind: str) -> list[str]:
    return [e["name"] for e in evts if e["event"] == kind]


def netns_inode(ns: str) -> int | None:
    """The inode that identifies network namespace ``ns`` (None when it is gone)."""
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(inode: int) -> list[int]:
    """Every live process of this machine whose network namespace is ``inode``
    (found through /proc, so it works after the namespace's name is gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            link = os.readlink(entry / "ns" / "net")
        except OSError:
            continue
        if link == f"net:[{inode}]" and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@dataclass
class World:
    home: Path  # FC_MACOS_HOME
    tart: TartDouble
    setup_args: list[str]

    def fc(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``fc-macos --provider tart ARGS``; with ``check`` it must exit 0."""
        result = subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def fc_json(self, *args: str) -> object:
        return json.loads(self.fc(*args, "--json").stdout)

    def setup(self) -> list[dict[str, str]]:
        """``fc-macos setup --json`` with the module's options; its progress events."""
        evts = events(self.fc(*self.setup_args).stdout)
        assert evts[-1]["event"] == "result" and evts[-1]["provider"] == "tart", evts
        return evts

    def ready(self) -> AgentEndpoint:
        """Make sure the agent answers (setup again if it does not); its endpoint."""
        if self.fc("microvm", "list", check=False).returncode != 0:
            self.setup()
        endpoint = AgentEndpoint.load(self.home)
        assert endpoint is not None
        return endpoint

    @property
    def vm(self) -> VM:
        return VM(VM_NAME, self.tart.home / "vms" / VM_NAME)

    @property
    def root(self) -> Path:
        """The VM's own files (its /var, /etc ... as the double keeps them)."""
        return self.tart.vm_root(VM_NAME)

    @property
    def namespace(self) -> str:
        return self.vm.ids[0]

    def address(self) -> str:
        return self.tart("ip", VM_NAME, check=True).stdout.strip()


def stop_everything(tart: TartDouble) -> None:
    """Stop and delete every VM of ``tart`` through the double; then remove what a
    ``tart run`` that died (or would not stop) may have left: its namespace, the
    processes in it, its veth."""
    if not (tart.home / "vms").is_dir():
        return
    vms = [VM(p.name, p) for p in sorted((tart.home / "vms").iterdir())]
    try:
        tart.stop_all()
    finally:
        for vm in vms:
            if vm.running:  # its `tart stop` failed: end the `tart run` itself
                try:
                    os.kill(int(vm.run_info["pid"]), 9)
                except ProcessLookupError:
                    pass
            ns, host_if, _ = vm.ids
            inode = netns_inode(ns)
            if inode is not None:
                for pid in pids_in_netns(inode):
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
                subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
            tart("delete", vm.name)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    reason = cannot_run_vms()
    if reason:
        pytest.skip(reason)
    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    base = tmp_path_factory.mktemp("tart-flow")
    # Setup packs the running fc_macos into the agent's wheel. Run the CLI from a copy taken
    # now, so that edits to the work tree while the module runs do not make a later setup
    # (rightly) reinstall the agent.
    frozen = base / "src"
    shutil.copytree(Path(fc_macos.__file__).parent, frozen / "fc_macos",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    setup_args = ["setup", "--json", "--vm-name", VM_NAME, "--cpus", "2", "--memory", "2048",
                  "--firecracker-bin", str(TEST_VMM), "--kernel", str(images.kernel), "--rootfs", str(images.rootfs)]
    if images.initrd:
        setup_args += ["--initrd", str(images.initrd)]
    with pytest.MonkeyPatch.context() as mp:  # the CLI, the double and the Terminal's child all see these
        mp.setenv("TART_HOME", str(base / "tart-home"))
        mp.setenv("FC_MACOS_TART", str(TART))
        mp.setenv("FC_MACOS_HOME", str(base / "fc-home"))
        mp.delenv("FC_MACOS_PROVIDER", raising=False)
        mp.setenv("PYTHONPATH", str(frozen))
        tart = TartDouble(TART, base / "tart-home")
        try:
            yield World(base / "fc-home", tart, setup_args)
        finally:
            stop_everything(tart)


# -- the flow ----------------------------------------------------------------------------------


@pytest.mark.guest
@pytest.mark.timeout(1800)
def test_tart_flow_end_to_end(world: World) -> None:
    first = world.setup()
    assert names(first, "step") == SETUP_STEPS and names(first, "done") == SETUP_STEPS
    assert names(first, "skip") == []
    endpoint = AgentEndpoint.load(world.home)
    assert endpoint is not None and endpoint.url == f"http://{world.address()}:8080"
    assert first[-1]["agent_url"] == endpoint.url
    assert json.loads((world.home / "config.json").read_text())["provider"] == "tart"

    sizes = {"vm-1": (1, 256), "vm-2": (2, 256), "vm-3": (1, 320)}
    for name, (vcpus, memory) in sizes.items():
        info = world.fc_json("run", "--name", name, "--vcpus", str(vcpus), "--memory", str(memory), "--background")
        assert isinstance(info, dict) and (info["name"], info["state"]) == (name, "running")
    listed = world.fc_json("microvm", "list")
    assert isinstance(listed, list) and len(listed) == 3
    assert {vm["name"]: (vm["state"], vm["vcpus"], vm["memory_mib"]) for vm in listed} == {
        name: ("running", vcpus, memory) for name, (vcpus, memory) in sizes.items()}
    pids = {vm["name"]: vm["pid"] for vm in listed}
    assert all(isinstance(pid, int) and pid > 0 for pid in pids.values()) and len(set(pids.values())) == 3
    # The VMMs run inside the Tart VM (its network namespace), their files in its state directory.
    inode = netns_inode(world.namespace)
    assert inode is not None and set(pids.values()) <= set(pids_in_netns(inode))
    microvms_dir = world.root / "var" / "lib" / "fc-agent" / "microvms"
    assert sorted(p.name for p in microvms_dir.iterdir()) == ["vm-1", "vm-2", "vm-3"]

    token = secrets.token_hex(6)
    output = shell_runs(cli_argv("microvm", "shell", "--name", "vm-1"), "vm-1", f"echo tok-{token}-$((6*7))".encode(), f"tok-{token}-42".encode())
    assert f"tok-{token}-42".encode() in output  # the guest's shell computed it: not our typing echoed
    still = world.fc_json("microvm", "status", "--name", "vm-1")
    assert isinstance(still, dict) and (still["state"], still["pid"]) == ("running", pids["vm-1"])

    stopped = world.fc_json("microvm", "stop", "--name", "vm-1")
    assert isinstance(stopped, dict) and stopped["state"] == "stopped" and not pid_alive(pids["vm-1"])
    assert "Removed vm-1." in world.fc("microvm", "rm", "--name", "vm-1").stdout
    assert not (microvms_dir / "vm-1").exists()
    gone = world.fc("microvm", "status", "--name", "vm-1", check=False)
    assert gone.returncode == 1 and "no microVM named 'vm-1'" in gone.stderr
    assert "Hint: run 'fc-macos microvm list'" in gone.stderr

    machine = world.fc_json("machine", "info", "--name", "vm-2")
    assert isinstance(machine, dict) and machine["state"] == "Running"
    config = world.fc_json("machine", "config", "--name", "vm-2")
    assert isinstance(config, dict) and (config["vcpu_count"], config["mem_size_mib"]) == (2, 256)
    boot = world.fc_json("boot", "get", "--name", "vm-2")
    assert isinstance(boot, dict)
    assert boot["kernel_image_path"] == f"{IMAGES_IN_VM}/vmlinux"  # a path in the VM, not on this host
    assert "console=ttyS0" in boot["boot_args"]

    before_stop = pids_in_netns(inode)
    assert pids["vm-2"] in before_stop and pids["vm-3"] in before_stop
    status = world.fc_json("vm", "stop")
    assert isinstance(status, dict) and (status["running"], status["state"], status["agent_ok"]) == (
        False, "stopped", False)
    rows = json.loads(world.tart("list", "--format", "json", check=True).stdout)
    assert [(r["Name"], r["Running"]) for r in rows if r["Source"] == "local"] == [(VM_NAME, False)]
    assert netns_inode(world.namespace) is None
    assert pids_in_netns(inode) == []  # agent, VMMs, QEMUs: nothing left of the VM
    assert not any(pid_alive(pid) for pid in before_stop)
    unreachable = world.fc("microvm", "list", check=False)
    assert unreachable.returncode == 1 and "cannot reach fc-agent" in unreachable.stderr, unreachable.stderr
    assert "start it with 'fc-macos vm start'" in unreachable.stderr

    # setup after 'vm stop': nothing is installed again; only the VM and the agent start.
    again = world.setup()
    assert set(names(again, "skip")) == INSTALL_STEPS
    assert set(names(again, "done")) == CHECK_STEPS | START_STEPS
    restarted = AgentEndpoint.load(world.home)
    assert restarted is not None and restarted.token == endpoint.token
    assert restarted.url == f"http://{world.address()}:8080"
    survivors = world.fc_json("microvm", "list")
    assert isinstance(survivors, list)
    assert {vm["name"]: vm["state"] for vm in survivors} == {"vm-2": "stopped", "vm-3": "stopped"}

    # setup once more: everything is in place, so it only checks.
    pid_file = world.root / "var" / "lib" / "fc-agent" / "agent.pid"
    agent_pid = pid_file.read_text().strip()
    third = world.setup()
    assert set(names(third, "skip")) == INSTALL_STEPS | START_STEPS
    assert set(names(third, "done")) == CHECK_STEPS
    assert pid_file.read_text().strip() == agent_pid and pid_alive(int(agent_pid))
    assert AgentEndpoint.load(world.home) == restarted


@pytest.mark.guest
@pytest.mark.timeout(1800)
def test_tart_flow_into_the_guest(world: World, tmp_path: Path) -> None:
    """exec, cp, port-forward and a published port with the agent inside the Tart VM: the
    published port is reached at the VM's address, which 'vm status' shows."""
    world.ready()
    address = world.address()
    status = world.fc_json("vm", "status")
    assert isinstance(status, dict) and status["address"] == address
    port = 18080
    info = world.fc_json("run", "--name", "chan", "--background", "-p", f"{port}:80")
    assert isinstance(info, dict) and info["guest_agent"]["state"] == "ready"
    assert info["ports"] == [{"host_addr": "0.0.0.0", "host_port": port, "guest_port": 80}]
    try:
        ran = world.fc("exec", "--name", "chan", "--", "sh", "-c", "uname -s; echo err >&2; exit 3", check=False)
        assert (ran.returncode, ran.stdout, ran.stderr) == (3, "Linux\n", "err\n")
        local = tmp_path / "page.html"
        local.write_text("<h1>through tart</h1>\n")
        world.fc("exec", "--name", "chan", "--", "mkdir", "-p", "/tmp/www")
        world.fc("cp", str(local), "chan:/tmp/www/index.html")
        world.fc("cp", "chan:/tmp/www/index.html", str(tmp_path / "back.html"))
        assert (tmp_path / "back.html").read_text() == local.read_text()
        world.fc("exec", "--name", "chan", "--", "busybox", "httpd", "-p", "80", "-h", "/tmp/www")
        listed = world.fc("microvm", "ports", "--name", "chan").stdout
        assert f"{address}:{port}" in listed  # where the Mac reaches it
        with urllib.request.urlopen(f"http://{address}:{port}/index.html", timeout=60) as resp:
            assert resp.read() == local.read_bytes()
        proc = subprocess.Popen(cli_argv("port-forward", "--name", "chan", ":80", "--json"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            [listener] = json.loads(proc.stdout.readline())
            with urllib.request.urlopen(f"http://127.0.0.1:{listener['port']}/index.html", timeout=60) as resp:
                assert resp.read() == local.read_bytes()
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        world.fc("microvm", "rm", "--name", "chan", "--force", check=False)


# -- bad input, each a clear message and a non-zero exit, nothing half-made ---------------------


def test_an_unknown_microvm_is_named_with_a_hint(world: World) -> None:
    world.ready()
    for args in (["microvm", "status"], ["microvm", "shell"], ["microvm", "stop"], ["microvm", "rm"],
                 ["machine", "info"], ["boot", "get"]):
        result = world.fc(*args, "--name", "no-such-vm", check=False)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Error: no microVM named 'no-such-vm'" in result.stderr, (args, result.stderr)
        assert "Hint: run 'fc-macos microvm list'" in result.stderr, (args, result.stderr)


def test_a_missing_kernel_leaves_nothing_behind(world: World) -> None:
    world.ready()
    outside = world.fc("run", "--name", "nokernel", "--kernel", "/nope", "--background", check=False)
    assert outside.returncode == 1, outside.stderr
    assert "kernel '/nope' is outside the directories the agent serves images from" in outside.stderr
    assert f"put the file in one of {IMAGES_IN_VM}" in outside.stderr and "fc-macos setup --kernel" in outside.stderr
    missing = world.fc("run", "--name", "nokernel", "--kernel", "nope", "--background", check=False)
    assert missing.returncode == 1, missing.stderr
    assert f"kernel file 'nope' not found in {IMAGES_IN_VM}" in missing.stderr
    assert "Hint: copy it into one of" in missing.stderr
    listed = world.fc_json("microvm", "list")
    assert isinstance(listed, list) and "nokernel" not in {vm["name"] for vm in listed}
    assert not (world.root / "var" / "lib" / "fc-agent" / "microvms" / "nokernel").exists()


def test_a_second_setup_racing_the_first_is_refused(world: World) -> None:
    endpoint = world.ready()
    lock = world.home / "setup.lock"
    first = subprocess.Popen(cli_argv(*world.setup_args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):  # the first holds the lock
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first setup never took the lock"
            time.sleep(0.05)
        second = world.fc(*world.setup_args, check=False)
        assert second.returncode == 1, (second.stdout, second.stderr)
        assert f"Error: another setup is running (pid {first.pid})" in second.stderr
        assert "Hint: wait for it to finish, then run the command again" in second.stderr
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert events(out)[-1]["event"] == "result"
    assert AgentEndpoint.load(world.home) == endpoint  # the refused setup changed nothing
    world.fc("microvm", "list")


def test_a_wrong_token_is_refused_and_setup_mends_it(world: World) -> None:
    endpoint = world.ready()
    AgentEndpoint(endpoint.url, "not-" + secrets.token_hex(8)).save(world.home)
    refused = world.fc("microvm", "list", check=False)
    assert refused.returncode == 1, refused.stderr
    assert "Error: the agent refused the token" in refused.stderr
    assert f"Hint: the token in {world.home / 'agent.json'} does not match the agent's; " \
           "run 'fc-macos setup' again" in refused.stderr
    mended = world.setup()  # what the hint says: a new token, the agent restarted; nothing reinstalled
    assert set(names(mended, "done")) == CHECK_STEPS | {"write-token", "start-agent"}
    fresh = AgentEndpoint.load(world.home)
    assert fresh is not None and fresh.token not in (endpoint.token, "") and fresh.url == endpoint.url
    world.fc("microvm", "list")


def test_a_stopped_vm_makes_the_agent_unreachable_with_a_hint(world: World) -> None:
    endpoint = world.ready()
    world.fc("vm", "stop")
    status = world.fc_json("vm", "status")
    assert isinstance(status, dict) and (status["state"], status["agent_ok"]) == ("stopped", False)
    unreachable = world.fc("microvm", "list", check=False)
    assert unreachable.returncode == 1, unreachable.stderr
    assert f"Error: cannot reach fc-agent at {endpoint.url}" in unreachable.stderr
    assert "Hint:" in unreachable.stderr and "start it with 'fc-macos vm start'" in unreachable.stderr
    as_json = world.fc("microvm", "list", "--json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"] == "agent_unreachable"
    started = world.fc_json("vm", "start")
    assert isinstance(started, dict) and (started["running"], started["agent_ok"]) == (True, True)
    world.fc("microvm", "list")
