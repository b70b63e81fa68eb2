"""The Firecracker-compatible test VMM, driven as a process over its API socket.

The VMM is run as a subprocess (as the agent runs it) and spoken to with raw HTTP over the
Unix socket, so these tests pin the contract the other parts rely on: flags and exit codes,
status codes and Firecracker's fault messages, and (marked ``guest``) a real QEMU boot whose
serial console is the process's stdin/stdout.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

VMM = Path(__file__).with_name("firecracker_vmm.py")
# -I -S: no site-packages, as in the Tart double's VM where only the standard library exists.
PYTHON = [sys.executable, "-I", "-S"]
NOT_PRE_BOOT = "The requested operation is not supported before starting the microVM."
NOT_POST_BOOT = "The requested operation is not supported after starting the microVM."
DESERIALIZE = "An error occurred when deserializing the json body of a request: "


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (keep-alive: one connection, many requests)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Reply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        raw = response.read()
        self.body: Any = json.loads(raw) if raw else None

    @property
    def fault(self) -> str:
        assert isinstance(self.body, dict) and "fault_message" in self.body, self.body
        return str(self.body["fault_message"])


class VmmProcess:
    """One running test VMM with pipes for its stdin/stdout (the serial console)."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None,
                 binary: Path = VMM) -> None:
        self.workdir = workdir
        self.sock = str(workdir / "api.sock")
        self.log = workdir / "fc.log"
        self.proc = subprocess.Popen(
            [*PYTHON, str(binary), "--api-sock", self.sock, "--log-path", str(self.log), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        self.seen = bytearray()
        self.conn: UnixHTTPConnection | None = None

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                if self.call("GET", "/").status == 200:
                    return
            except OSError:
                self.conn = None
            time.sleep(0.05)
        raise AssertionError("the VMM's API socket never answered")

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Reply:
        if self.conn is None:
            self.conn = UnixHTTPConnection(self.sock)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path, body=data, headers=headers)
        return Reply(self.conn.getresponse())

    def expect(self, pattern: bytes, timeout: float) -> bytes:
        """Read the serial console (our stdout pipe) until ``pattern`` appears anew."""
        assert self.proc.stdout is not None
        start = len(self.seen)
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        eof = False
        while not regex.search(self.seen, start):
            left = deadline - time.monotonic()
            if left <= 0 or eof:
                tail = self.seen[-3000:].decode(errors="replace")
                raise AssertionError(f"no {pattern!r} on the console (exit status "
                                     f"{self.proc.poll()}); it said:\n{tail}")
            if self._readable(min(left, 1.0)):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                eof = not chunk
                self.seen.extend(chunk)
        return bytes(self.seen[start:])

    def _readable(self, timeout: float) -> bool:
        assert self.proc.stdout is not None
        return bool(select.select([self.proc.stdout], [], [], timeout)[0])

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def workdir(short_tmp: Path) -> Path:
    return short_tmp


@pytest.fixture
def vmm(workdir: Path) -> Iterator[VmmProcess]:
    process = VmmProcess(workdir, "--id", "test-vm")
    process.wait_ready()
    yield process
    process.stop()


def run_vmm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYTHON, str(VMM), *args], capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- command line


def test_version_prints_firecracker_version_and_exits_0() -> None:
    done = run_vmm("--version")
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == "Firecracker v1.16.1"


def test_unknown_flag_exits_153_with_an_error_on_stderr() -> None:
    done = run_vmm("--frobnicate")
    assert done.returncode == 153
    assert "Found argument '--frobnicate' which wasn't expected" in done.stderr


def test_no_api_without_config_file_is_an_argument_error() -> None:
    assert run_vmm("--no-api").returncode == 153


def test_existing_api_socket_path_exits_1_and_says_why(workdir: Path) -> None:
    sock, log = workdir / "api.sock", workdir / "fc.log"
    sock.write_text("in the way")
    done = run_vmm("--api-sock", str(sock), "--log-path", str(log))
    assert done.returncode == 1
    expected = f"Failed to open the API socket at: {sock}. Check that it is not already used."
    assert expected in log.read_text()


def test_bad_config_file_exits_152(workdir: Path) -> None:
    config = workdir / "vm.json"
    config.write_text(json.dumps({"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}))
    done = run_vmm("--api-sock", str(workdir / "api.sock"), "--config-file", str(config))
    assert done.returncode == 152
    assert "missing field `boot-source`" in done.stderr


def test_config_file_with_an_unknown_section_exits_152(workdir: Path) -> None:
    config = workdir / "vm.json"
    config.write_text(json.dumps({"boot-source": {"kernel_image_path": "/k"}, "network": {}}))
    done = run_vmm("--api-sock", str(workdir / "api.sock"), "--config-file", str(config))
    assert done.returncode == 152
    assert "unknown field `network`" in done.stderr


def test_config_file_with_a_bzimage_kernel_exits_152(workdir: Path) -> None:
    kernel = workdir / "bzImage"
    kernel.write_bytes(b"MZ" + b"\0" * 4096)
    config = workdir / "vm.json"
    config.write_text(json.dumps({"boot-source": {"kernel_image_path": str(kernel)}}))
    done = run_vmm("--api-sock", str(workdir / "api.sock"), "--config-file", str(config))
    assert done.returncode == 152
    assert "Kernel Loader: failed to load ELF kernel image" in done.stderr


def test_invalid_log_level_exits_152(workdir: Path) -> None:
    assert run_vmm("--api-sock", str(workdir / "api.sock"), "--level", "Loud").returncode == 152


# ---------------------------------------------------------------- API before boot


def test_instance_info_version_and_default_machine_config(vmm: VmmProcess) -> None:
    info = vmm.call("GET", "/")
    assert info.status == 200
    assert info.headers["Server"] == "Firecracker API"
    assert info.body == {"id": "test-vm", "state": "Not started", "vmm_version": "1.16.1", "app_name": "Firecracker"}
    assert vmm.call("GET", "/version").body == {"firecracker_version": "1.16.1"}
    machine = vmm.call("GET", "/machine-config").body
    assert (machine["vcpu_count"], machine["mem_size_mib"], machine["smt"]) == (1, 128, False)


def test_machine_config_put_resets_omitted_fields_and_patch_merges(vmm: VmmProcess) -> None:
    assert vmm.call("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256, "track_dirty_pages": True}).status == 204
    assert vmm.call("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 512}).status == 204
    assert vmm.call("GET", "/machine-config").body["track_dirty_pages"] is False
    assert vmm.call("PATCH", "/machine-config", {"vcpu_count": 4}).status == 204
    machine = vmm.call("GET", "/machine-config").body
    assert (machine["vcpu_count"], machine["mem_size_mib"]) == (4, 512)
    assert vmm.call("GET", "/vm/config").body["machine-config"] == machine


def test_post_boot_calls_before_boot_are_refused(vmm: VmmProcess) -> None:
    assert vmm.call("PATCH", "/vm", {"state": "Paused"}).fault == NOT_PRE_BOOT
    assert vmm.call("PUT", "/actions", {"action_type": "SendCtrlAltDel"}).fault == NOT_PRE_BOOT
    assert vmm.call("PUT", "/snapshot/create", {"snapshot_path": "s", "mem_file_path": "m"}).fault == NOT_PRE_BOOT


@pytest.mark.parametrize(
    ("method", "path", "raw", "fault"),
    [
        ("PUT", "/machine-config", b'{"vcpu_count": 2', DESERIALIZE + "EOF while parsing"),
        ("PUT", "/machine-config", b'{"vcpu_count": 1, "mem_size_mib": 128, "cpus": 1}', DESERIALIZE + "unknown field `cpus`"),
        ("PUT", "/machine-config", b'{"mem_size_mib": 128}', DESERIALIZE + "missing field `vcpu_count`"),
        ("PUT", "/machine-config", b'{"vcpu_count": 33, "mem_size_mib": 128}', "The number of vCPUs must be greater than 0"),
        ("PUT", "/machine-config", b'{"vcpu_count": 0, "mem_size_mib": 128}', "The number of vCPUs must be greater than 0"),
        ("PUT", "/actions", b'{"action_type": "Reboot"}', DESERIALIZE + "unknown variant `Reboot`"),
        ("PUT", "/drives/root-fs", b'{"drive_id": "root-fs", "is_root_device": true}', "API Resource IDs can only contain alphanumeric characters and underscores."),
        ("PUT", "/drives/a", b'{"drive_id": "b", "is_root_device": true, "path_on_host": "/x"}', "The id from the path does not match the id from the body!"),
        ("PUT", "/boot-source", b"", "Empty PUT request."),
        ("PATCH", "/machine-config", b"", "Empty PATCH request."),
        ("GET", "/machine-config", b"{}", "GET request cannot have a body."),
        ("GET", "/nothing-here", b"", "Invalid request method and/or path: GET nothing-here."),
        ("POST", "/actions", b'{"action_type": "InstanceStart"}', "Invalid request method and/or path: POST actions."),
    ],
)
def test_bad_requests_get_400_with_firecrackers_fault_message(
    vmm: VmmProcess, method: str, path: str, raw: bytes, fault: str
) -> None:
    reply = vmm.call(method, path, raw=raw)
    assert reply.status == 400
    assert reply.fault.startswith(fault), reply.fault


def test_body_over_the_payload_limit_is_a_micro_http_error(vmm: VmmProcess) -> None:
    reply = vmm.call("PUT", "/mmds", raw=json.dumps({"x": "y" * 60000}).encode())
    assert reply.status == 400
    assert "is larger than the limit of 51200" in reply.body["error"]


def test_missing_kernel_and_bzimage_kernel_are_refused(vmm: VmmProcess, workdir: Path) -> None:
    reply = vmm.call("PUT", "/boot-source", {"kernel_image_path": str(workdir / "absent")})
    assert reply.fault.startswith("The kernel file cannot be opened: No such file or directory")
    assert vmm.call("PUT", "/actions", {"action_type": "InstanceStart"}).fault == "Cannot start microvm without kernel configuration."
    bzimage = workdir / "bzImage"
    bzimage.write_bytes(b"MZ" + b"\0" * 0x200 + b"HdrS" + b"\0" * 4096)
    assert vmm.call("PUT", "/boot-source", {"kernel_image_path": str(bzimage), "boot_args": "console=ttyS0"}).status == 204
    reply = vmm.call("PUT", "/actions", {"action_type": "InstanceStart"})
    assert reply.status == 400
    assert reply.fault.startswith("Cannot load kernel due to invalid memory configuration or invalid kernel image")
    assert vmm.call("GET", "/").body["state"] == "Not started"


def test_drives_need_a_file_and_only_one_root(vmm: VmmProcess, workdir: Path) -> None:
    disk = workdir / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    missing = vmm.call("PUT", "/drives/data", {"drive_id": "data", "path_on_host": str(workdir / "nope"), "is_root_device": False, "is_read_only": False})
    assert missing.status == 400
    for drive_id in ("data", "rootfs"):
        body = {"drive_id": drive_id, "path_on_host": str(disk), "is_root_device": drive_id == "rootfs", "is_read_only": False}
        assert vmm.call("PUT", f"/drives/{drive_id}", body).status == 204
    second_root = {"drive_id": "other", "path_on_host": str(disk), "is_root_device": True, "is_read_only": False}
    assert vmm.call("PUT", "/drives/other", second_root).fault == "A root block device already exists!"
    drives = vmm.call("GET", "/vm/config").body["drives"]
    assert [d["drive_id"] for d in drives] == ["rootfs", "data"]


def test_vsock_binds_its_socket_when_put(vmm: VmmProcess, workdir: Path) -> None:
    uds = workdir / "v.sock"
    assert vmm.call("PUT", "/vsock", {"guest_cid": 3, "uds_path": str(uds)}).status == 204
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(uds))  # it listens
    client.close()
    taken = workdir / "taken.sock"
    taken.write_text("")
    assert vmm.call("PUT", "/vsock", {"guest_cid": 3, "uds_path": str(taken)}).status == 400
    assert vmm.call("PUT", "/vsock", {"guest_cid": 2, "uds_path": str(workdir / "w.sock")}).status == 400


def test_mmds_config_needs_an_existing_interface_and_the_store_merges(vmm: VmmProcess) -> None:
    assert vmm.call("PUT", "/mmds/config", {"network_interfaces": ["eth0"]}).status == 400
    assert vmm.call("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0"}).status == 204
    assert vmm.call("PUT", "/mmds/config", {"network_interfaces": ["eth0"], "version": "V2"}).status == 204
    assert vmm.call("PUT", "/mmds", {"a": {"b": 1, "c": 2}}).status == 204
    assert vmm.call("PATCH", "/mmds", {"a": {"c": None, "d": 3}}).status == 204
    assert vmm.call("GET", "/mmds").body == {"a": {"b": 1, "d": 3}}


def test_balloon_statistics_and_patch_are_post_boot_only(vmm: VmmProcess) -> None:
    assert vmm.call("GET", "/balloon").fault == "No balloon device found."
    assert vmm.call("PUT", "/balloon", {"amount_mib": 16, "deflate_on_oom": True, "stats_polling_interval_s": 1}).status == 204
    assert vmm.call("GET", "/balloon").body["amount_mib"] == 16
    assert vmm.call("GET", "/balloon/statistics").fault == NOT_PRE_BOOT
    assert vmm.call("PATCH", "/balloon", {"amount_mib": 8}).fault == NOT_PRE_BOOT


def test_each_request_is_logged(vmm: VmmProcess) -> None:
    vmm.call("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})
    log = vmm.log.read_text()
    assert re.search(r'\[test-vm:fc_api\] The API server received a Put request on "/machine-config"', log)
    assert "Status code: 204 No Content." in log


def test_snapshot_load_only_on_a_fresh_process(vmm: VmmProcess, workdir: Path) -> None:
    assert vmm.call("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}).status == 204
    body = {"snapshot_path": str(workdir / "s"), "mem_backend": {"backend_type": "File", "backend_path": str(workdir / "m")}}
    reply = vmm.call("PUT", "/snapshot/load", body)
    assert reply.fault == "Loading a microVM snapshot not allowed after configuring boot-specific resources."


def test_snapshot_load_refuses_a_vsock_override_for_a_snapshot_without_vsock(vmm: VmmProcess, workdir: Path) -> None:
    config = vmm.call("GET", "/vm/config").body
    assert config["vsock"] is None
    state = {"fc_test_vmm_snapshot": 1, "mem_format": "qemu-migration-stream", "config": config, "serial": None}
    (workdir / "vm.state").write_text(json.dumps(state))  # what the test VMM writes for a guest without vsock
    (workdir / "vm.mem").write_bytes(b"")
    body = {"snapshot_path": str(workdir / "vm.state"), "vsock_override": {"uds_path": str(workdir / "v.sock")},
            "mem_backend": {"backend_type": "File", "backend_path": str(workdir / "vm.mem")}}
    reply = vmm.call("PUT", "/snapshot/load", body)
    assert (reply.status, reply.fault) == (400, "Load snapshot error: Failed to restore from snapshot: "
                                                "Failed to get snapshot state from file: Unknown Vsock Device.")
    assert qemu_children(vmm.proc.pid) == [] and not (workdir / "v.sock").exists()


def test_sigterm_ends_the_vmm_and_leaves_its_socket(vmm: VmmProcess) -> None:
    vmm.proc.terminate()
    assert vmm.proc.wait(timeout=10) != 0
    assert os.path.exists(vmm.sock)


# ---------------------------------------------------------------- a real boot (QEMU)


@pytest.fixture(scope="module")
def images() -> Any:
    if shutil.which(os.environ.get("FC_TEST_VMM_QEMU", "qemu-system-x86_64")) is None:
        pytest.skip("qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (or set FC_TEST_VMM_QEMU)")
    from tests.helpers.guest_images import build_test_images

    return build_test_images()


PROMPT = rb"[#$] "  # ash then asks for the cursor position (ESC [6n)


def configure(vmm: VmmProcess, images: Any, rootfs: Path) -> None:
    steps = [
        ("PUT", "/metrics", {"metrics_path": str(vmm.workdir / "metrics.json")}),
        ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 256}),
        ("PUT", "/boot-source", {"kernel_image_path": str(images.kernel), "initrd_path": str(images.initrd),
                                 "boot_args": "console=ttyS0 reboot=k panic=1"}),
        ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(rootfs), "is_root_device": True, "is_read_only": False}),
        ("PUT", "/actions", {"action_type": "InstanceStart"}),
    ]
    for method, path, body in steps:
        reply = vmm.call(method, path, body)
        assert reply.status == 204, (path, reply.body)


def test_instance_start_refuses_a_tap_that_does_not_exist(workdir: Path, images: Any) -> None:
    rootfs = workdir / "rootfs.ext4"
    rootfs.write_bytes(b"\0" * 4096)
    missing = "fct-no-tap-0"
    assert not os.path.exists(f"/sys/class/net/{missing}")
    vmm = VmmProcess(workdir, "--id", "tapless")
    try:
        vmm.wait_ready()
        net = {"iface_id": "eth0", "host_dev_name": missing, "guest_mac": "06:00:AC:10:00:02"}
        assert vmm.call("PUT", "/network-interfaces/eth0", net).status == 204
        with pytest.raises(AssertionError) as refused:
            configure(vmm, images, rootfs)
        assert "Could not create the network device: Open tap device failed" in str(refused.value)
        assert f"Invalid TUN/TAP Backend provided by {missing}" in str(refused.value)
        assert vmm.call("GET", "/").body["state"] == "Not started"
    finally:
        vmm.stop()


@pytest.mark.guest
@pytest.mark.timeout(300)
def test_boot_talk_on_the_serial_console_and_ctrl_alt_del(workdir: Path, images: Any) -> None:
    rootfs = workdir / "rootfs.ext4"
    shutil.copyfile(images.rootfs, rootfs)
    vmm = VmmProcess(workdir, "--id", "boot-vm")
    try:
        vmm.wait_ready()
        configure(vmm, images, rootfs)
        assert vmm.call("GET", "/").body["state"] == "Running"
        assert vmm.call("PUT", "/boot-source", {"kernel_image_path": str(images.kernel)}).fault == NOT_POST_BOOT
        assert vmm.call("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0"}).fault == NOT_POST_BOOT
        vmm.expect(PROMPT, 180)
        token = secrets.token_hex(8)
        # The answer differs from the typed line (echoed by the tty): $((6*7)) becomes 42.
        vmm.type(f"uname -a\necho got-$((6*7))-{token}\n")
        vmm.expect(rb"Linux \S+ \d+\.\d+", 60)
        vmm.expect(f"got-42-{token}".encode(), 60)
        assert vmm.call("PATCH", "/vm", {"state": "Paused"}).status == 204
        assert vmm.call("GET", "/").body["state"] == "Paused"
        assert vmm.call("PATCH", "/vm", {"state": "Resumed"}).status == 204
        assert vmm.call("PUT", "/actions", {"action_type": "FlushMetrics"}).status == 204
        assert json.loads((workdir / "metrics.json").read_text().splitlines()[-1])["utc_timestamp_ms"] > 0
        assert vmm.call("PUT", "/actions", {"action_type": "SendCtrlAltDel"}).status == 204
        assert vmm.proc.wait(timeout=60) == 0
        assert os.path.exists(vmm.sock)  # Firecracker leaves its API socket behind
    finally:
        vmm.stop()


def qemu_children(pid: int) -> list[int]:
    """The QEMU processes started by the VMM with this pid."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if "qemu" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.guest
@pytest.mark.timeout(400)
def test_snapshot_restores_the_running_guest_in_a_fresh_process(workdir: Path, images: Any) -> None:
    rootfs = workdir / "rootfs.ext4"
    shutil.copyfile(images.rootfs, rootfs)
    token = secrets.token_hex(6)
    first = VmmProcess(workdir, "--id", "snap-src")
    try:
        first.wait_ready()
        configure(first, images, rootfs)
        first.expect(PROMPT, 180)
        first.type(f"X=snap-{token}\n")
        first.expect(PROMPT, 30)
        paths = {"snapshot_path": str(workdir / "vm.state"), "mem_file_path": str(workdir / "vm.mem")}
        assert first.call("PUT", "/snapshot/create", paths).status == 400  # still running
        assert first.call("PATCH", "/vm", {"state": "Paused"}).status == 204
        assert first.call("PUT", "/snapshot/create", paths).status == 204
        assert (workdir / "vm.mem").stat().st_size > 0
        [qemu] = qemu_children(first.proc.pid)
        first.proc.kill()  # SIGKILL: QEMU must not outlive the VMM
        assert gone(qemu, 30)
    finally:
        first.stop()

    (workdir / "api.sock").unlink()
    second = VmmProcess(workdir, "--id", "snap-dst")
    try:
        second.wait_ready()
        load = {"snapshot_path": str(workdir / "vm.state"), "resume_vm": True,
                "mem_backend": {"backend_type": "File", "backend_path": str(workdir / "vm.mem")}}
        reply = second.call("PUT", "/snapshot/load", load)
        assert reply.status == 204, reply.body
        assert not list(Path(tempfile.gettempdir()).glob(f"fcvmm-{first.proc.pid}-*"))  # swept
        assert second.call("GET", "/").body["state"] == "Running"
        assert second.call("PUT", "/snapshot/load", load).fault == NOT_POST_BOOT
        second.type("echo $X-$((1+1))\n")  # the shell variable lived only in guest memory
        second.expect(f"snap-{token}-2".encode(), 60)
        assert second.call("PUT", "/actions", {"action_type": "SendCtrlAltDel"}).status == 204
        assert second.proc.wait(timeout=60) == 0
    finally:
        second.stop()


@pytest.mark.guest
@pytest.mark.timeout(300)
def test_config_file_without_api_boots_and_a_guest_reboot_ends_it(workdir: Path, images: Any) -> None:
    rootfs = workdir / "rootfs.ext4"
    shutil.copyfile(images.rootfs, rootfs)
    config = {
        "boot-source": {"kernel_image_path": str(images.kernel), "initrd_path": str(images.initrd),
                        "boot_args": "console=ttyS0 reboot=k panic=1"},
        "drives": [{"drive_id": "rootfs", "path_on_host": str(rootfs), "is_root_device": True, "is_read_only": False}],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
    }
    (workdir / "vm.json").write_text(json.dumps(config))
    vmm = VmmProcess(workdir, "--no-api", "--config-file", str(workdir / "vm.json"))
    try:
        vmm.expect(PROMPT, 180)
        assert not os.path.exists(vmm.sock)
        vmm.type("reboot -f\n")
        assert vmm.proc.wait(timeout=60) == 0
    finally:
        vmm.stop()
