"""FirecrackerClient against a fake Firecracker API on a real Unix socket (see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

import fc_macos.firecracker as fcpkg
from fc_macos.errors import FirecrackerAPIError, FirecrackerError, FirecrackerUnavailable, ValidationError
from fc_macos.firecracker import FirecrackerClient, operations

from .conftest import INSTANCE_INFO, FakeFirecracker

RL = {"bandwidth": {"size": 1048576, "refill_time": 1000}, "ops": {"size": 100, "one_time_burst": 10, "refill_time": 1000}}
TB = {"size": 4096, "refill_time": 100}

# operationId -> (args, kwargs, expected method, expected path, expected JSON body or None for no body)
CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any], str, str, Any]] = {
    "describeInstance": ((), {}, "GET", "/", None),
    "getFirecrackerVersion": ((), {}, "GET", "/version", None),
    "getExportVmConfig": ((), {}, "GET", "/vm/config", None),
    "getMachineConfiguration": ((), {}, "GET", "/machine-config", None),
    "putMachineConfiguration": ((), {"vcpu_count": 2, "mem_size_mib": 1024, "smt": False, "huge_pages": "2M"},
                                "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 1024, "smt": False, "huge_pages": "2M"}),
    "patchMachineConfiguration": ((), {"mem_size_mib": 512}, "PATCH", "/machine-config", {"mem_size_mib": 512}),
    "putCpuConfiguration": (({"kvm_capabilities": ["!121"], "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b" + "x" * 64}]},), {},
                            "PUT", "/cpu-config", {"kvm_capabilities": ["!121"], "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b" + "x" * 64}]}),
    "putGuestBootSource": ((), {"kernel_image_path": "/img/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"},
                           "PUT", "/boot-source", {"kernel_image_path": "/img/vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"}),
    "putGuestDriveByID": (("rootfs",), {"is_root_device": True, "path_on_host": "/r.ext4", "is_read_only": False, "rate_limiter": RL},
                          "PUT", "/drives/rootfs",
                          {"drive_id": "rootfs", "is_root_device": True, "path_on_host": "/r.ext4", "is_read_only": False, "rate_limiter": RL}),
    "patchGuestDriveByID": (("data_1",), {"path_on_host": "/d2"}, "PATCH", "/drives/data_1", {"drive_id": "data_1", "path_on_host": "/d2"}),
    "putGuestNetworkInterfaceByID": (("eth0",), {"host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02", "mtu": 1500},
                                     "PUT", "/network-interfaces/eth0",
                                     {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02", "mtu": 1500}),
    "patchGuestNetworkInterfaceByID": (("eth0",), {"rx_rate_limiter": RL}, "PATCH", "/network-interfaces/eth0",
                                       {"iface_id": "eth0", "rx_rate_limiter": RL}),
    "putGuestPmemByID": (("pm0",), {"path_on_host": "/p.img", "read_only": True}, "PUT", "/pmem/pm0",
                         {"id": "pm0", "path_on_host": "/p.img", "read_only": True}),
    "patchGuestPmemByID": (("pm0",), {"rate_limiter": RL}, "PATCH", "/pmem/pm0", {"id": "pm0", "rate_limiter": RL}),
    "putGuestVsock": ((), {"guest_cid": 3, "uds_path": "./v.sock"}, "PUT", "/vsock", {"guest_cid": 3, "uds_path": "./v.sock"}),
    "putEntropyDevice": ((), {}, "PUT", "/entropy", {}),
    "putSerialDevice": ((), {"serial_out_path": "/s.fifo", "rate_limiter": TB}, "PUT", "/serial", {"serial_out_path": "/s.fifo", "rate_limiter": TB}),
    "putLogger": ((), {"log_path": "/fc.log", "level": "Debug", "show_level": True}, "PUT", "/logger",
                  {"log_path": "/fc.log", "level": "Debug", "show_level": True}),
    "putMetrics": ((), {"metrics_path": "/m.json"}, "PUT", "/metrics", {"metrics_path": "/m.json"}),
    "getMmds": ((), {}, "GET", "/mmds", None),
    "putMmds": (({"latest": {"meta-data": {"x": 1}}},), {}, "PUT", "/mmds", {"latest": {"meta-data": {"x": 1}}}),
    "patchMmds": (({"latest": {"y": None}},), {}, "PATCH", "/mmds", {"latest": {"y": None}}),
    "putMmdsConfig": ((), {"network_interfaces": ("eth0",), "version": "V2", "ipv4_address": "169.254.170.2"}, "PUT", "/mmds/config",
                      {"network_interfaces": ["eth0"], "version": "V2", "ipv4_address": "169.254.170.2"}),
    "describeBalloonConfig": ((), {}, "GET", "/balloon", None),
    "putBalloon": ((), {"amount_mib": 64, "deflate_on_oom": True, "stats_polling_interval_s": 1}, "PUT", "/balloon",
                   {"amount_mib": 64, "deflate_on_oom": True, "stats_polling_interval_s": 1}),
    "patchBalloon": ((), {"amount_mib": 32}, "PATCH", "/balloon", {"amount_mib": 32}),
    "describeBalloonStats": ((), {}, "GET", "/balloon/statistics", None),
    "patchBalloonStatsInterval": ((), {"stats_polling_interval_s": 5}, "PATCH", "/balloon/statistics", {"stats_polling_interval_s": 5}),
    "startBalloonHinting": ((), {"acknowledge_on_stop": False}, "PATCH", "/balloon/hinting/start", {"acknowledge_on_stop": False}),
    "stopBalloonHinting": ((), {}, "PATCH", "/balloon/hinting/stop", None),
    "describeBalloonHinting": ((), {}, "GET", "/balloon/hinting/status", None),
    "getMemoryHotplug": ((), {}, "GET", "/hotplug/memory", None),
    "putMemoryHotplug": ((), {"total_size_mib": 1024}, "PUT", "/hotplug/memory", {"total_size_mib": 1024}),
    "patchMemoryHotplug": ((), {"requested_size_mib": 256}, "PATCH", "/hotplug/memory", {"requested_size_mib": 256}),
    "createSyncAction": (("InstanceStart",), {}, "PUT", "/actions", {"action_type": "InstanceStart"}),
    "patchVm": (("Paused",), {}, "PATCH", "/vm", {"state": "Paused"}),
    "createSnapshot": ((), {"snapshot_path": "vm.state", "mem_file_path": "vm.mem", "snapshot_type": "Full"}, "PUT", "/snapshot/create",
                       {"snapshot_path": "vm.state", "mem_file_path": "vm.mem", "snapshot_type": "Full"}),
    "loadSnapshot": ((), {"snapshot_path": "vm.state", "mem_backend": {"backend_type": "File", "backend_path": "vm.mem"}, "resume_vm": True,
                          "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap1"}]},
                     "PUT", "/snapshot/load",
                     {"snapshot_path": "vm.state", "mem_backend": {"backend_type": "File", "backend_path": "vm.mem"}, "resume_vm": True,
                      "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap1"}]}),
}


def test_public_api_is_locked() -> None:
    assert sorted(fcpkg.__all__) == sorted([
        "DEFAULT_TIMEOUT", "SPEC", "SPEC_VERSION", "FirecrackerClient", "FirecrackerResponse", "Match", "Operation",
        "error_from_response", "match_operation", "operations", "validate_body",
    ])


def test_the_call_table_covers_exactly_the_spec() -> None:
    assert set(CALLS) == {op.operation_id for op in operations()}
    assert set(FirecrackerClient.operation_methods()) == set(CALLS)


@pytest.mark.parametrize("op", operations(), ids=lambda op: op.operation_id)
async def test_each_typed_method_sends_its_operation(fake_fc: FakeFirecracker, op: fcpkg.Operation) -> None:
    args, kwargs, method, path, body = CALLS[op.operation_id]
    assert method == op.method  # the table agrees with the spec
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        result = await getattr(fc, FirecrackerClient.operation_methods()[op.operation_id])(*args, **kwargs)
    [seen] = fake_fc.seen
    assert (seen.method, seen.path) == (method, path)
    assert seen.headers["Host"] == "localhost"
    if body is None:
        assert seen.body == b""
    else:
        assert json.loads(seen.body) == body
        assert seen.headers["Content-Type"] == "application/json"
        assert int(seen.headers["Content-Length"]) == len(seen.body)
    if method == "GET":
        assert isinstance(result, dict) and result  # the parsed JSON of the 200
    else:
        assert result is None  # 204


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("start_instance", {"action_type": "InstanceStart"}),
        ("send_ctrl_alt_del", {"action_type": "SendCtrlAltDel"}),
        ("flush_metrics", {"action_type": "FlushMetrics"}),
        ("pause", {"state": "Paused"}),
        ("resume", {"state": "Resumed"}),
    ],
)
async def test_convenience_actions(fake_fc: FakeFirecracker, name: str, body: dict[str, str]) -> None:
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        assert await getattr(fc, name)() is None
    [seen] = fake_fc.seen
    assert json.loads(seen.body) == body


async def test_hinting_start_without_options_sends_no_body(fake_fc: FakeFirecracker) -> None:
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        await fc.start_balloon_hinting()
    assert fake_fc.seen[0].body == b""


@pytest.mark.parametrize(
    ("call", "args", "kwargs", "words"),
    [
        ("put_machine_config", (), {"vcpu_count": 64, "mem_size_mib": 128}, ["vcpu_count", "32"]),
        ("put_machine_config", (), {"vcpu_count": 2, "mem_size_mib": 128, "huge_pages": "1G"}, ["huge_pages", "2M"]),
        ("put_drive", ("root-fs",), {"is_root_device": True, "path_on_host": "/r"}, ["drive_id", "root-fs"]),
        ("put_drive", ("rootfs",), {"is_root_device": True, "rate_limiter": {"bandwidth": {"size": -1, "refill_time": 1}}},
         ["rate_limiter.bandwidth.size"]),
        ("put_drive", ("rootfs",), {"is_root_device": True, "cache_type": "Fast"}, ["cache_type", "Writeback"]),
        ("put_vsock", (), {"guest_cid": 2, "uds_path": "/v"}, ["guest_cid", "3"]),
        ("put_mmds_config", (), {"network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"}, ["ipv4_address"]),
        ("patch_vm", ("Stopped",), {}, ["state", "Resumed"]),
        ("put_cpu_config", ({"msr_modifier": []},), {}, ["msr_modifier"]),
        ("load_snapshot", (), {"snapshot_path": "s"}, ["mem_backend", "mem_file_path"]),
    ],
)
async def test_invalid_bodies_are_rejected_before_sending(
    fake_fc: FakeFirecracker, call: str, args: tuple[Any, ...], kwargs: dict[str, Any], words: list[str]
) -> None:
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        with pytest.raises(ValidationError) as info:
            await getattr(fc, call)(*args, **kwargs)
    text = str(info.value)
    for word in words:
        assert word in text
    assert fake_fc.seen == []


async def test_validate_false_sends_anyway_and_firecrackers_400_comes_back(fake_fc: FakeFirecracker) -> None:
    fault = "An error occurred when deserializing the json body of a request: unknown variant `Stopped`."
    fake_fc.answer(400, json.dumps({"fault_message": fault}).encode())
    async with FirecrackerClient(fake_fc.socket_path, validate=False) as fc:
        with pytest.raises(FirecrackerAPIError) as info:
            await fc.patch_vm("Stopped")  # type: ignore[arg-type]
    assert json.loads(fake_fc.seen[0].body) == {"state": "Stopped"}
    assert (info.value.status, info.value.fault_message) == (400, fault)
    assert info.value.hint


@pytest.mark.parametrize(
    ("status", "body", "content_type", "fault"),
    [
        (400, b'{"fault_message": "The requested operation is not supported after starting the microVM."}', "application/json",
         "The requested operation is not supported after starting the microVM."),
        (400, b'{"error": "Payload too large: 51201 bytes."}', "application/json", "Payload too large: 51201 bytes."),
        (413, b'{"fault_message": "Data store limit exceeded."}', "application/json", "Data store limit exceeded."),
        (500, b"socket read failed", "text/plain", "socket read failed"),
        (500, b"", "text/plain", "(no body)"),
    ],
)
async def test_error_bodies_reach_firecracker_api_error(
    fake_fc: FakeFirecracker, status: int, body: bytes, content_type: str, fault: str
) -> None:
    fake_fc.answer(status, body, content_type=content_type)
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        with pytest.raises(FirecrackerAPIError) as info:
            await fc.put_metrics(metrics_path="/m")
    err = info.value
    assert (err.status, err.fault_message, err.body) == (status, fault, body.decode())
    assert err.hint


async def test_phase_errors_get_a_hint_that_names_the_phase(fake_fc: FakeFirecracker) -> None:
    fake_fc.answer(400, b'{"fault_message": "The requested operation is not supported before starting the microVM."}')
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        with pytest.raises(FirecrackerAPIError) as info:
            await fc.pause()
    assert "InstanceStart" in (info.value.hint or "")


async def test_request_passes_status_headers_and_bytes_through(fake_fc: FakeFirecracker) -> None:
    raw = b'{"fault_message":  "odd\\u00e9 spacing"}'
    fake_fc.answer(400, raw, headers={"Deprecation": "true"})
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        resp = await fc.request("PUT", "/drives/x%20y?z=1", data=b'{"not json', headers={"X-Trace": "t1"})
    assert (resp.status, resp.body, resp.ok) == (400, raw, False)
    assert resp.headers["Deprecation"] == resp.headers["deprecation"] == "true"
    assert resp.json() == {"fault_message": "odd\u00e9 spacing"}
    [seen] = fake_fc.seen
    assert (seen.method, seen.path, seen.body, seen.headers["X-Trace"]) == ("PUT", "/drives/x%20y?z=1", b'{"not json', "t1")


async def test_request_sends_json_bodies_and_skips_validation(fake_fc: FakeFirecracker) -> None:
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        resp = await fc.request("PUT", "/machine-config", {"vcpu_count": 999})
    assert resp.status == 204 and resp.body == b"" and resp.json() is None
    assert json.loads(fake_fc.seen[0].body) == {"vcpu_count": 999}


async def test_request_refuses_body_and_data_together(fake_fc: FakeFirecracker) -> None:
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        with pytest.raises(ValueError):
            await fc.request("PUT", "/mmds", {"a": 1}, data=b"{}")
    assert fake_fc.seen == []


async def test_non_json_200_is_a_firecracker_error(fake_fc: FakeFirecracker) -> None:
    fake_fc.answer(200, b"<html>", content_type="text/html")
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        with pytest.raises(FirecrackerError, match="not JSON"):
            await fc.get_version()


async def test_wait_ready_returns_the_instance_info(fake_fc: FakeFirecracker) -> None:
    async with FirecrackerClient(fake_fc.socket_path) as fc:
        assert await fc.wait_ready(5) == INSTANCE_INFO


async def test_wait_ready_waits_for_a_server_that_starts_later(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "late.sock")
    fake = FakeFirecracker()

    async def start_later() -> None:
        await asyncio.sleep(0.2)
        await fake.start(path)

    task = asyncio.create_task(start_later())
    try:
        async with FirecrackerClient(path) as fc:
            assert (await fc.wait_ready(30))["state"] == "Not started"
    finally:
        await task
        await fake.stop()


async def test_wait_ready_on_a_missing_socket_times_out(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "none.sock")
    async with FirecrackerClient(path) as fc:
        with pytest.raises(FirecrackerUnavailable) as info:
            await fc.wait_ready(0.3)
    assert path in info.value.message and "never appeared" in info.value.message
    assert info.value.hint


async def test_wait_ready_on_a_stale_socket_times_out(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "stale.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)  # the file exists, nobody listens: like a VMM that died
    async with FirecrackerClient(path) as fc:
        with pytest.raises(FirecrackerUnavailable) as info:
            await fc.wait_ready(0.3)
    assert "does not answer" in info.value.message


async def test_missing_socket_is_unavailable_with_a_hint(short_tmp: str) -> None:
    async with FirecrackerClient(os.path.join(short_tmp, "gone.sock")) as fc:
        with pytest.raises(FirecrackerUnavailable) as info:
            await fc.get_instance_info()
    assert "does not exist" in info.value.message and "--api-sock" in (info.value.hint or "")


async def test_refused_connection_is_unavailable_with_a_hint(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "dead.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
    async with FirecrackerClient(path) as fc:
        with pytest.raises(FirecrackerUnavailable) as info:
            await fc.request("GET", "/")
    assert "exited" in (info.value.hint or "")


async def test_a_silent_server_times_out_as_unavailable(fake_fc: FakeFirecracker) -> None:
    fake_fc.answer(204, delay=30)
    async with FirecrackerClient(fake_fc.socket_path, timeout=0.2) as fc:
        with pytest.raises(FirecrackerUnavailable, match="did not answer"):
            await fc.flush_metrics()


async def test_client_works_without_async_with_and_close_is_idempotent(fake_fc: FakeFirecracker) -> None:
    fc = FirecrackerClient(fake_fc.socket_path)
    assert (await fc.get_version()) == {"firecracker_version": "1.16.1"}
    await fc.close()
    await fc.close()
    assert (await fc.get_version()) == {"firecracker_version": "1.16.1"}  # reopens
    await fc.close()


TEST_VMM = Path(__file__).resolve().parents[1] / "doubles" / "firecracker_vmm.py"


@pytest.mark.skipif(not TEST_VMM.is_file(), reason=f"the test VMM double is missing at {TEST_VMM}")
async def test_against_the_test_vmm_process(short_tmp: str) -> None:
    """The client against a separate Firecracker-compatible process (no guest is booted)."""
    sock = os.path.join(short_tmp, "api.sock")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(TEST_VMM), "--api-sock", sock, "--log-path", os.path.join(short_tmp, "fc.log"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with FirecrackerClient(sock) as fc:
            assert (await fc.wait_ready(30))["state"] == "Not started"
            await fc.put_machine_config(vcpu_count=2, mem_size_mib=256)
            assert (await fc.get_machine_config())["vcpu_count"] == 2
            with pytest.raises(FirecrackerAPIError) as info:
                await fc.pause()
            assert info.value.status == 400 and "before starting" in info.value.fault_message
            big = await fc.request("PUT", "/mmds", data=b"x" * 60000)  # over micro_http's 51200-byte limit
            assert big.status == 400 and "error" in big.json()
    finally:
        proc.kill()
        await proc.wait()


class _RawServer:
    """A bare HTTP/1.1 server on a Unix socket that answers requests with
    ``{"n": <answers so far>}``. With ``drop_second`` it closes a connection,
    unanswered, when a second request arrives on it (as Firecracker drops a
    connection after an HTTP-level error), so a client that kept it alive must
    send again on a new one."""

    def __init__(self, path: str, *, drop_second: bool) -> None:
        self.path, self.drop_second = path, drop_second
        self.connections = 0
        self.answers = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                if self.drop_second and served:
                    break
                served += 1
                self.answers += 1
                body = json.dumps({"n": self.answers}).encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                writer.write(head + body)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()


@pytest.mark.parametrize("drop_second", [False, True])
async def test_keep_alive_reuses_one_connection_and_resends_on_a_dropped_one(short_tmp: Path, drop_second: bool) -> None:
    server = _RawServer(os.path.join(short_tmp, "ka.sock"), drop_second=drop_second)
    srv = await asyncio.start_unix_server(server.handle, path=server.path)
    try:
        async with FirecrackerClient(server.path) as fc:
            answers = [(await fc.request("PATCH", "/mmds", {"k": i})).json()["n"] for i in range(3)]  # PATCH: aiohttp would not resend it
        assert answers == [1, 2, 3]
        assert server.connections == (3 if drop_second else 1)
    finally:
        srv.close()
        await srv.wait_closed()
