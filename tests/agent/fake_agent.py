"""A small fake fc-agent speaking the HTTP API of docs/design.md over a real socket.

It runs its own event loop in a thread, so both async tests and in-process
CLI tests (which call ``asyncio.run`` themselves) can talk to it over TCP.
It keeps microVMs as plain dicts, echoes console input and records the
Firecracker calls it relays, with canned Firecracker answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from aiohttp import WSMsgType, web

from fc_macos.agent.wire import MicroVMSpec

TOKEN = "test-token"


def _error(status: int, code: str, message: str, hint: str | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, "hint": hint, **extra}, status=status)


class FakeAgent:
    """``with FakeAgent() as agent: agent.url``; state is inspectable from the test."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.microvms: dict[str, dict[str, Any]] = {}
        self.fc_calls: list[tuple[str, str, Any]] = []
        self.fc_replies: dict[tuple[str, str], tuple[int, Any]] = {
            ("GET", "machine-config"): (200, {"vcpu_count": 1, "mem_size_mib": 256, "smt": False}),
            ("GET", ""): (200, {"id": "anonymous-instance", "state": "Running", "vmm_version": "1.16.1", "app_name": "Firecracker"}),
            ("GET", "version"): (200, {"firecracker_version": "1.16.1"}),
        }
        self.resizes: list[tuple[int, int]] = []
        self.console_input: list[bytes] = []
        self.log_sources = {"serial", "firecracker"}
        self.boot_fails_with: str | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> FakeAgent:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/v1/info", self._info)
        app.router.add_get("/v1/microvms", self._list)
        app.router.add_post("/v1/microvms", self._create)
        app.router.add_get("/v1/microvms/{name}", self._get)
        app.router.add_delete("/v1/microvms/{name}", self._delete)
        app.router.add_post("/v1/microvms/{name}/stop", self._stop)
        app.router.add_get("/v1/microvms/{name}/console", self._console)
        app.router.add_get("/v1/microvms/{name}/logs", self._logs)
        app.router.add_route("*", "/v1/microvms/{name}/firecracker/{path:.*}", self._firecracker)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    # -- handlers ----------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/healthz" and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "missing or wrong bearer token", "use the token from setup")
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": "0.1.0"})

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.1.0", "arch": "x86_64", "firecracker_bin": "/usr/bin/firecracker",
                                  "state_dir": "/var/lib/fc-agent", "image_dirs": [],
                                  "snapshot_dir": "/var/lib/fc-agent/snapshots",
                                  "images": {"kernel": None, "initrd": None, "rootfs": None}})

    def _vm(self, request: web.Request) -> dict[str, Any]:
        name = request.match_info["name"]
        if name not in self.microvms:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "not_found", "message": f"no microVM named {name!r}", "hint": None}),
                content_type="application/json",
            )
        return self.microvms[name]

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"microvms": list(self.microvms.values())})

    async def _create(self, request: web.Request) -> web.Response:
        spec = await request.json()
        if self.boot_fails_with:
            step = self.boot_fails_with
            return _error(422, "boot_failed", f"boot step '{step}' failed: kernel not found", "check --kernel", step=step)
        name = spec.get("name") or f"microvm-{len(self.microvms) + 1}"
        if name in self.microvms:
            return _error(409, "conflict", f"a microVM named {name!r} exists already", "pick another --name")
        snapshot = spec.get("snapshot")
        if snapshot:
            state = "running" if snapshot.get("resume", True) else "paused"
        else:
            state = "running" if spec.get("start", True) else "created"
        info = {"name": name, "state": state, "pid": 4242 + len(self.microvms), "vcpus": spec.get("vcpus", 1),
                "memory_mib": spec.get("memory_mib", 256), "created_at": time.time(),
                "spec": MicroVMSpec.from_dict(spec).to_dict() | {"name": name},  # defaults filled in, as the agent does
                "started_at": None if state == "created" else time.time(), "uptime_s": 0.0}
        self.microvms[name] = info
        return web.json_response(info, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self._vm(request))

    async def _stop(self, request: web.Request) -> web.Response:
        vm = self._vm(request)
        vm.update(state="stopped", pid=None, exit_status=0)
        return web.json_response(vm)

    async def _delete(self, request: web.Request) -> web.Response:
        vm = self._vm(request)
        if vm["state"] == "running" and request.query.get("force") != "true":
            return _error(409, "conflict", f"microVM {vm['name']!r} is running", "stop it first or use --force")
        del self.microvms[vm["name"]]
        return web.Response(status=204)

    async def _firecracker(self, request: web.Request) -> web.Response:
        self._vm(request)
        path = request.match_info["path"]
        body = await request.json() if request.can_read_body else None
        self.fc_calls.append((request.method, path, body))
        status, reply = self.fc_replies.get((request.method, path), (204, None))
        if reply is None:
            return web.Response(status=status)
        return web.json_response(reply, status=status)

    async def _console(self, request: web.Request) -> web.StreamResponse:
        vm = self._vm(request)
        if vm["state"] != "running":
            return _error(409, "conflict", f"microVM {vm['name']!r} is not running", "read its logs")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.query.get("scrollback") != "0":
            await ws.send_bytes(b"scrollback\r\n")
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                self.console_input.append(msg.data)
                if msg.data == b"poweroff\r":
                    vm.update(state="stopped", pid=None)
                    await ws.send_bytes(b"power down\r\n")
                    break
                await ws.send_bytes(b"echo:" + msg.data)
            elif msg.type == WSMsgType.TEXT:
                control = json.loads(msg.data)
                self.resizes.append((control["rows"], control["cols"]))
        await ws.close()
        return ws

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        self._vm(request)
        source = request.query.get("source", "serial")
        if source not in self.log_sources:
            return _error(400, "invalid", f"unknown log source {source!r}", "use serial or firecracker")
        if source == "metrics":
            lines = [json.dumps({"utc_timestamp_ms": i, "api_server": {"process_startup_time_us": 7}}) + "\n"
                     for i in range(1, 4)]
        else:
            lines = [f"{source} line {i}\n" for i in range(1, 6)]
        if "tail" in request.query:
            lines = lines[-int(request.query["tail"]):]
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        for line in lines:
            await resp.write(line.encode())
        if request.query.get("follow") == "1":
            await resp.write("followed ünïcode\n".encode())
        await resp.write_eof()
        return resp
