"""Into real guests through fc-agent: exec (one-shot and WebSocket, tty),
the guest agent in a rootfs that never heard of fc-macos (the init shim),
files in and out, a tunnel and published ports to a guest ``busybox httpd``,
snapshot restore, and the error answers (vsock off, stopped microVM, guest
agent killed). The test VMM boots Debian-kernel guests under QEMU with a real
virtio-vsock device; the guests are shared by the module's tests, which run
in order (later ones stop and kill what earlier ones used). Slow: ``guest``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from tests.agent.conftest import AUTH, GUEST_BOOT_ARGS, TEST_VMM, TOKEN, kill_recorded_vmms, serve
from tests.agent.test_openapi import response_schema, validator
from tests.helpers.foreign_rootfs import build_foreign_rootfs

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900), pytest.mark.asyncio(loop_scope="module")]

READY_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    client: TestClient
    settings: AgentSettings
    host_port: int
    early: dict[str, Any]  # the answer to g1's create (wait_timeout_s too short: 504)
    foreign: dict[str, Any]  # the answer to foreign's create (waited for its guest agent)


async def get_vm(client: TestClient, name: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/microvms/{name}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_ready(client: TestClient, name: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while True:
        vm = await get_vm(client, name)
        if (vm["guest_agent"] or {}).get("state") == "ready":
            return vm
        assert loop.time() < deadline, vm
        await asyncio.sleep(0.5)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    root = Path(tempfile.mkdtemp(prefix="fcg-", dir="/tmp"))
    (root / "img").mkdir()
    build_foreign_rootfs(root / "img" / "foreign.ext4")
    settings = AgentSettings(
        token=TOKEN, state_dir=root / "state", firecracker_bin=str(TEST_VMM),
        image_dirs=(images.kernel.parent, root / "img"), nat=False,
    )  # fmt: skip
    client = await serve(settings)
    host_port = free_port()
    try:
        g1 = client.post("/v1/microvms", headers=AUTH, json={
            "name": "g1", "memory_mib": 256, "boot_args": GUEST_BOOT_ARGS, "wait": "guest_agent",
            "wait_timeout_s": 0.5, "ports": [{"host_port": host_port, "guest_port": 8080, "host_addr": "127.0.0.1"}]})
        plain = client.post("/v1/microvms", headers=AUTH, json={
            "name": "plain", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, "vsock": False})
        # a rootfs that has never heard of fc-macos (busybox init): the agent installs the shim
        foreign = client.post("/v1/microvms", headers=AUTH, json={
            "name": "foreign", "memory_mib": 128, "boot_args": GUEST_BOOT_ARGS, "rootfs": "foreign.ext4",
            "wait": "guest_agent", "wait_timeout_s": READY_TIMEOUT_S})
        early_resp, plain_resp, foreign_resp = await asyncio.gather(g1, plain, foreign)
        early = {"status": early_resp.status, **(await early_resp.json())}
        assert plain_resp.status == 201, await plain_resp.text()
        await wait_ready(client, "g1")
        yield World(client, settings, host_port, early, await foreign_resp.json() | {"status": foreign_resp.status})
    finally:
        await client.close()
        kill_recorded_vmms(settings.state_dir)
        shutil.rmtree(root, ignore_errors=True)


async def run(world: World, name: str, argv: list[str], **body: Any) -> dict[str, Any]:
    resp = await world.client.post(f"/v1/microvms/{name}/exec", headers=AUTH, json={"argv": argv, **body})
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer


async def refused(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    body = await resp.json()
    assert (resp.status, body.get("error")) == (status, code), body
    assert body["message"] and body["hint"], body
    return body


# -- create and state ------------------------------------------------------------------


async def test_create_waits_for_the_guest_agent_and_says_when_it_did_not_come(world: World) -> None:
    early = world.early
    assert early["status"] == 504 and early["error"] == "guest_agent_timeout", early
    assert "keeps running" in early["message"] and "serial.log" in early["hint"]
    vm = await get_vm(world.client, "g1")
    assert vm["state"] == "running"
    assert vm["vsock"]["guest_cid"] >= 3 and vm["vsock"]["uds_path"].endswith("/g1/vsock.sock")
    agent = vm["guest_agent"]
    assert agent["state"] == "ready" and agent["version"] and 0 < agent["ready_s"] < READY_TIMEOUT_S
    assert vm["ports"] == [{"host_port": world.host_port, "guest_port": 8080, "host_addr": "127.0.0.1"}]
    plain = await get_vm(world.client, "plain")
    assert plain["vsock"] is None and plain["guest_agent"]["state"] == "absent"
    assert "vsock" in plain["guest_agent"]["reason"]
    # the answers match the agent's OpenAPI document
    doc = await (await world.client.get("/openapi.json", headers=AUTH)).json()
    for path, method, status, body in (
        ("/v1/microvms/{name}", "get", "200", vm),
        ("/v1/microvms/{name}", "get", "200", plain),
        ("/v1/microvms/{name}/exec", "post", "200", await run(world, "g1", ["true"])),
        ("/v1/microvms/{name}/ports", "get", "200", await (await world.client.get("/v1/microvms/g1/ports", headers=AUTH)).json()),
        ("/v1/microvms/{name}/files/stat", "get", "200",
         await (await world.client.get("/v1/microvms/g1/files/stat", params={"path": "/etc"}, headers=AUTH)).json()),
    ):
        validator(doc, response_schema(doc, path, method, status))(body)


async def test_a_rootfs_that_never_heard_of_fc_macos_gets_the_guest_agent(world: World) -> None:
    foreign = world.foreign
    assert foreign["status"] == 201 and foreign["guest_agent"]["state"] == "ready", foreign
    assert "init=/sbin/fc-guest-agent" in foreign["spec"]["boot_args"]  # the shim, then its own init
    assert (await run(world, "foreign", ["cat", "/etc/hostname"]))["stdout"] == "foreign\n"
    pid1 = await run(world, "foreign", ["readlink", "/proc/1/exe"])
    assert pid1["stdout"] == "/bin/busybox\n"  # busybox init is PID 1, the agent runs beside it
    assert (await world.client.delete("/v1/microvms/foreign?force=true", headers=AUTH)).status == 204


# -- exec ----------------------------------------------------------------------------


async def test_exec_exit_codes_streams_stdin_env_cwd(world: World) -> None:
    for code in (0, 1, 42):
        assert (await run(world, "g1", ["sh", "-c", f"exit {code}"]))["exit_code"] == code
    missing = await run(world, "g1", ["no-such-command"])
    assert missing["exit_code"] == 127 and "no-such-command" in missing["stderr"]
    killed = await run(world, "g1", ["sh", "-c", "kill -KILL $$"])
    assert (killed["exit_code"], killed["signal"]) == (137, 9)
    both = await run(world, "g1", ["sh", "-c", "echo out; echo err >&2; echo $K; pwd"], env={"K": "v"}, cwd="/tmp")
    assert (both["stdout"], both["stderr"]) == ("out\nv\n/tmp\n", "err\n")
    piped = await run(world, "g1", ["tr", "a-z", "A-Z"], stdin="piped through\n")
    assert piped["stdout"] == "PIPED THROUGH\n"
    resp = await world.client.post("/v1/microvms/g1/exec", headers=AUTH, json={"argv": ["ls"], "cwd": "/no/such"})
    await refused(resp, 404, "guest_path_not_found")


async def test_exec_ten_mib_of_output_intact(world: World) -> None:
    made = await run(world, "g1", ["sh", "-c", "head -c 10485760 /dev/urandom > /tmp/ten && sha256sum /tmp/ten"])
    expected = made["stdout"].split()[0]
    out = await run(world, "g1", ["cat", "/tmp/ten"], encoding="base64")
    data = base64.b64decode(out["stdout"])
    assert len(data) == 10 * 1024 * 1024 and hashlib.sha256(data).hexdigest() == expected


class ExecSocket:
    """The exec WebSocket: collects stdout/stderr and control messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.out = {1: bytearray(), 2: bytearray()}
        self.eof: set[int] = set()
        self.texts: list[dict[str, Any]] = []

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(b"\x00" + data)

    async def until(self, predicate: Any, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            msg = await asyncio.wait_for(self.ws.receive(), max(0.1, deadline - loop.time()))
            if msg.type == aiohttp.WSMsgType.BINARY:
                if len(msg.data) == 1:
                    self.eof.add(msg.data[0])
                else:
                    self.out[msg.data[0]] += msg.data[1:]
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.texts.append(json.loads(msg.data))
            else:
                raise AssertionError(f"the exec WebSocket closed: {self.out} {self.texts}")

    def exited(self) -> dict[str, Any] | None:
        return next((t for t in self.texts if t["type"] == "exit"), None)


async def open_exec(world: World, name: str, request: dict[str, Any]) -> ExecSocket:
    ws = await world.client.ws_connect(f"/v1/microvms/{name}/exec", headers=AUTH)
    await ws.send_str(json.dumps(request))
    sock = ExecSocket(ws)
    await sock.until(lambda: sock.texts)
    assert sock.texts[0]["type"] == "started" and sock.texts[0]["pid"] > 0, sock.texts
    return sock


async def test_exec_websocket_streams_both_ways(world: World) -> None:
    sock = await open_exec(world, "g1", {"argv": ["sh", "-c", "cat; echo done >&2; exit 3"], "stdin": True})
    await sock.send(b"first\n")
    await sock.until(lambda: b"first\n" in sock.out[1])
    await sock.send(b"second\n")
    await sock.ws.send_bytes(b"\x00")  # EOF of stdin
    await sock.until(lambda: sock.exited() is not None)
    assert bytes(sock.out[1]) == b"first\nsecond\n" and bytes(sock.out[2]) == b"done\n"
    assert sock.eof == {1, 2} and sock.exited() == {"type": "exit", "exit_code": 3, "signal": None, "timed_out": False}
    await sock.ws.close()
    # a command that does not exist: an error message with the shell's exit code
    ws = await world.client.ws_connect("/v1/microvms/g1/exec", headers=AUTH)
    await ws.send_str(json.dumps({"argv": ["no-such-command"]}))
    error = json.loads((await ws.receive()).data)
    assert error["type"] == "error" and error["exit_code"] == 127 and "no-such-command" in error["message"]
    await ws.close()


async def test_exec_tty_resize_and_ctrl_c(world: World) -> None:
    sock = await open_exec(world, "g1", {"argv": ["sh"], "tty": True, "rows": 30, "cols": 100, "stdin": True})
    await sock.send(b"tty; stty size; echo mark-$((6*7))\n")
    await sock.until(lambda: b"mark-42" in sock.out[1])
    assert b"/dev/pts/" in sock.out[1] and b"30 100" in sock.out[1]
    await sock.ws.send_str(json.dumps({"type": "resize", "rows": 50, "cols": 132}))
    await sock.send(b"stty size; echo mark-$((7*7))\n")
    await sock.until(lambda: b"mark-49" in sock.out[1])
    assert b"50 132" in sock.out[1]
    await sock.send(b"sleep 100\n")
    await asyncio.sleep(1.0)
    await sock.send(b"\x03")  # Ctrl+C through the pty: the foreground sleep gets SIGINT
    await sock.send(b"echo rc-$?\n")
    await sock.until(lambda: b"rc-130" in sock.out[1], timeout=30)
    await sock.send(b"exit 5\n")
    await sock.until(lambda: sock.exited() is not None)
    assert sock.exited()["exit_code"] == 5  # type: ignore[index]
    await sock.ws.close()
    # Ctrl+C to a command run directly on a pty: it dies of SIGINT, 130
    sock = await open_exec(world, "g1", {"argv": ["sleep", "100"], "tty": True, "stdin": True})
    await asyncio.sleep(0.5)
    await sock.send(b"\x03")
    await sock.until(lambda: sock.exited() is not None, timeout=30)
    assert (sock.exited()["exit_code"], sock.exited()["signal"]) == (130, 2)  # type: ignore[index]
    await sock.ws.close()


# -- files ---------------------------------------------------------------------------


def tar_of(root: Path, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(root / name, arcname=name)
    return buf.getvalue()


async def get_tar(world: World, name: str, path: str) -> tarfile.TarFile:
    resp = await world.client.get(f"/v1/microvms/{name}/files", params={"path": path}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    return tarfile.open(fileobj=io.BytesIO(await resp.read()))


async def test_files_twenty_mib_in_and_out(world: World, short_tmp: Path) -> None:
    data = os.urandom(20 * 1024 * 1024)
    (short_tmp / "big.bin").write_bytes(data)
    resp = await world.client.put("/v1/microvms/g1/files", params={"path": "/tmp"}, data=tar_of(short_tmp, "big.bin"), headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"entries": 1, "bytes": len(data)}
    inside = await run(world, "g1", ["sha256sum", "/tmp/big.bin"])
    assert inside["stdout"].split()[0] == hashlib.sha256(data).hexdigest()
    tar = await get_tar(world, "g1", "/tmp/big.bin")
    member = tar.getmember("big.bin")
    assert hashlib.sha256(tar.extractfile(member).read()).hexdigest() == hashlib.sha256(data).hexdigest()  # type: ignore[union-attr]
    stat = await (await world.client.get("/v1/microvms/g1/files/stat", params={"path": "/tmp/big.bin"}, headers=AUTH)).json()
    assert stat["type"] == "file" and stat["size"] == len(data)


async def test_files_tree_keeps_modes_and_symlinks(world: World, short_tmp: Path) -> None:
    tree = short_tmp / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (tree / "bin" / "tool").chmod(0o755)
    (tree / "private").write_text("secret")
    (tree / "private").chmod(0o600)
    (tree / "sticky").mkdir()
    (tree / "sticky").chmod(0o1777)
    (tree / "link").symlink_to("bin/tool")
    resp = await world.client.put("/v1/microvms/g1/files", params={"path": "/root"}, data=tar_of(short_tmp, "tree"), headers=AUTH)
    assert resp.status == 200, await resp.text()
    listing = await run(world, "g1", ["sh", "-c", "cd /root/tree && stat -c '%n %a' bin/tool private sticky && readlink link && ./link"])
    assert listing["stdout"] == "bin/tool 755\nprivate 600\nsticky 1777\nbin/tool\ntool\n", listing
    tar = await get_tar(world, "g1", "/root/tree")
    members = {m.name: m for m in tar.getmembers()}
    assert members["tree/bin/tool"].mode == 0o755 and members["tree/private"].mode == 0o600
    assert members["tree/sticky"].mode == 0o1777 and members["tree/link"].linkname == "bin/tool"
    assert tar.extractfile(members["tree/private"]).read() == b"secret"  # type: ignore[union-attr]


async def test_files_errors_and_an_interrupted_put_leaves_nothing(world: World, short_tmp: Path) -> None:
    (short_tmp / "f.txt").write_text("x")
    resp = await world.client.put("/v1/microvms/g1/files", params={"path": "/no/such/dir"}, data=tar_of(short_tmp, "f.txt"), headers=AUTH)
    body = await refused(resp, 404, "guest_path_not_found")
    assert "/no/such/dir" in body["message"]
    await refused(await world.client.get("/v1/microvms/g1/files", params={"path": "/no/such"}, headers=AUTH), 404, "guest_path_not_found")
    await refused(await world.client.get("/v1/microvms/g1/files", params={"path": "relative"}, headers=AUTH), 400, "invalid")
    # a body cut off midway: the client announces 8 MiB, sends 3 and goes away
    await run(world, "g1", ["mkdir", "-p", "/tmp/dest"])
    (short_tmp / "half.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    data = tar_of(short_tmp, "half.bin")
    port = world.client.server.port  # type: ignore[attr-defined]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PUT /v1/microvms/g1/files?path=/tmp/dest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/x-tar\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[: 3 * 1024 * 1024]
    )
    await writer.drain()
    await asyncio.sleep(1.0)
    writer.close()
    await asyncio.sleep(2.0)
    left = await run(world, "g1", ["sh", "-c", "ls -A /tmp/dest | wc -l"])
    assert left["stdout"].strip() == "0", left


# -- tunnel and published ports ---------------------------------------------------------


async def test_tunnel_and_published_port_reach_a_guest_httpd(world: World, short_tmp: Path) -> None:
    big = os.urandom(50 * 1024 * 1024)
    (short_tmp / "www").mkdir()
    (short_tmp / "www" / "index.html").write_text("hello from the guest\n")
    (short_tmp / "www" / "big").write_bytes(big)
    resp = await world.client.put("/v1/microvms/g1/files", params={"path": "/tmp"}, data=tar_of(short_tmp, "www"), headers=AUTH)
    assert resp.status == 200, await resp.text()
    started = await run(world, "g1", ["busybox", "httpd", "-p", "8080", "-h", "/tmp/www"])
    assert started["exit_code"] == 0, started

    # the tunnel: one TCP connection over a WebSocket
    ws = await world.client.ws_connect("/v1/microvms/g1/tunnel", params={"port": "8080"}, headers=AUTH)
    await ws.send_bytes(b"GET /index.html HTTP/1.0\r\n\r\n")
    answer = b""
    while True:
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        answer += msg.data
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello from the guest\n"), answer[:200]
    await refused(await world.client.get("/v1/microvms/g1/tunnel", params={"port": "8081"}, headers=AUTH), 409, "guest_port_closed")

    # the published port (from the spec): 20 connections at once, then 50 MiB intact
    url = f"http://127.0.0.1:{world.host_port}"
    async with aiohttp.ClientSession() as session:
        async def fetch(path: str) -> tuple[int, bytes]:
            async with session.get(url + path) as r:
                return r.status, await r.read()

        answers = await asyncio.gather(*(fetch("/index.html") for _ in range(20)))
        assert answers == [(200, b"hello from the guest\n")] * 20
        status, body = await fetch("/big")
        assert status == 200 and len(body) == len(big) and hashlib.sha256(body).digest() == hashlib.sha256(big).digest()

        # published at run time; a taken address is named; removed again
        extra = free_port()
        resp = await world.client.post("/v1/microvms/g1/ports", headers=AUTH, json={"host_port": extra, "guest_port": 8080, "host_addr": "127.0.0.1"})
        assert resp.status == 201 and len((await resp.json())["ports"]) == 2
        assert (await fetch_from(session, f"http://127.0.0.1:{extra}/index.html")) == b"hello from the guest\n"
        body = await refused(await world.client.post("/v1/microvms/g1/ports", headers=AUTH, json={
            "host_port": extra, "guest_port": 80, "host_addr": "127.0.0.1"}), 409, "port_in_use")  # to another guest port
        assert f"127.0.0.1:{extra}" in body["message"] and "g1" in body["message"]
        assert (await world.client.delete(f"/v1/microvms/g1/ports/{extra}", headers=AUTH)).status == 204
        await refused(await world.client.delete(f"/v1/microvms/g1/ports/{extra}", headers=AUTH), 404, "port_not_published")
        listed = await (await world.client.get("/v1/microvms/g1/ports", headers=AUTH)).json()
        assert [p["host_port"] for p in listed["ports"]] == [world.host_port]
        with pytest.raises(aiohttp.ClientError):
            await fetch_from(session, f"http://127.0.0.1:{extra}/index.html")


async def fetch_from(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as r:
        assert r.status == 200
        return await r.read()


# -- errors and restore ------------------------------------------------------------------


async def test_errors_without_vsock_unknown_and_stopped(world: World) -> None:
    body = await refused(await world.client.post("/v1/microvms/plain/exec", headers=AUTH, json={"argv": ["true"]}), 409, "guest_agent_absent")
    assert "vsock: false" in body["message"]
    await refused(await world.client.post("/v1/microvms/ghost/exec", headers=AUTH, json={"argv": ["true"]}), 404, "not_found")
    resp = await world.client.post("/v1/microvms/plain/stop", headers=AUTH, json={"force": True})
    assert (await resp.json())["state"] == "stopped"
    body = await refused(await world.client.post("/v1/microvms/plain/exec", headers=AUTH, json={"argv": ["true"]}), 409, "not_running")
    assert "stopped" in body["message"]
    await refused(await world.client.get("/v1/microvms/plain/files", params={"path": "/"}, headers=AUTH), 409, "not_running")


async def test_exec_after_a_snapshot_restore_into_a_new_microvm(world: World) -> None:
    relay = "/v1/microvms/g1/firecracker"
    assert (await world.client.patch(f"{relay}/vm", json={"state": "Paused"}, headers=AUTH)).status == 204
    snapshots = world.settings.snapshots_dir
    resp = await world.client.put(f"{relay}/snapshot/create", headers=AUTH, json={
        "snapshot_path": str(snapshots / "g1.snap"), "mem_file_path": str(snapshots / "g1.mem")})
    assert resp.status == 204, await resp.text()
    resp = await world.client.post("/v1/microvms/g1/stop", json={"force": True}, headers=AUTH)
    stopped = await resp.json()
    assert stopped["state"] == "stopped" and stopped["ports"] == [] and stopped["guest_agent"] is None
    with pytest.raises(OSError):  # the published port is freed with the stop
        await asyncio.open_connection("127.0.0.1", world.host_port)

    resp = await world.client.post("/v1/microvms", headers=AUTH, json={
        "name": "g2", "snapshot": {"snapshot_path": "g1.snap", "mem_path": "g1.mem"},
        "wait": "guest_agent", "wait_timeout_s": READY_TIMEOUT_S})
    restored = await resp.json()
    assert resp.status == 201, restored
    assert restored["guest_agent"]["state"] == "ready"
    assert restored["vsock"]["uds_path"].endswith("/g2/vsock.sock")  # its own socket (vsock_override)
    assert (await run(world, "g2", ["echo", "restored"]))["stdout"] == "restored\n"


async def test_guest_agent_killed_comes_back_and_without_supervisor_says_so(world: World) -> None:
    # the exec'd shell's parent is the guest agent's connection process, whose parent is the server
    server_pid = "$(cut -d' ' -f4 /proc/$PPID/stat)"
    ask = f"s={server_pid}; echo $s $(cut -d' ' -f4 /proc/$s/stat)"
    server, supervisor = (await run(world, "g2", ["sh", "-c", ask]))["stdout"].split()
    await run(world, "g2", ["sh", "-c", f"kill -9 {server_pid}"])
    again = await run(world, "g2", ["sh", "-c", ask])  # the supervisor restarted it
    new_server, same_supervisor = again["stdout"].split()
    assert new_server != server and same_supervisor == supervisor, (server, supervisor, again)
    assert (await wait_ready(world.client, "g2"))["guest_agent"]["state"] == "ready"
    # now the supervisor too: the guest agent is gone for good
    script = f"s={server_pid}; kill -9 $(cut -d' ' -f4 /proc/$s/stat) $s"
    await world.client.post("/v1/microvms/g2/exec", headers=AUTH, json={"argv": ["sh", "-c", script]})
    body = await refused(await world.client.post("/v1/microvms/g2/exec", headers=AUTH, json={"argv": ["true"]}), 409, "guest_agent_unresponsive")
    assert "does not answer" in body["message"] and "restart" in body["hint"]
    assert (await get_vm(world.client, "g2"))["guest_agent"]["state"] == "unresponsive"
