"""A fake Firecracker API server on a real Unix socket (socket-boundary fake).

It records every request byte for byte and answers as Firecracker 1.16.1 does
(/work/shared/firecracker/README.md): 204 for accepted PUT/PATCH calls, 200 +
JSON for GETs, 400 ``{"fault_message"}`` for unknown method+path. A test can
queue canned answers (``fake.answer(...)``) to get any status/body/shape,
including micro_http's ``{"error"}`` body, or a delay.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

INSTANCE_INFO = {"id": "anonymous-instance", "state": "Not started", "vmm_version": "1.16.1", "app_name": "Firecracker"}

GET_ANSWERS = {
    "/": INSTANCE_INFO,
    "/version": {"firecracker_version": "1.16.1"},
    "/machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "smt": False, "track_dirty_pages": False, "huge_pages": "None"},
    "/vm/config": {"boot-source": {"kernel_image_path": "/k"}, "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}},
    "/mmds": {"latest": {"meta-data": {"ami-id": "ami-1"}}},
    "/balloon": {"amount_mib": 0, "deflate_on_oom": False, "stats_polling_interval_s": 0},
    "/balloon/statistics": {"target_pages": 0, "actual_pages": 0, "target_mib": 0, "actual_mib": 0},
    "/balloon/hinting/status": {"host_cmd": 0},
    "/hotplug/memory": {"total_size_mib": 1024, "slot_size_mib": 128, "block_size_mib": 2, "plugged_size_mib": 0, "requested_size_mib": 0},
}


@dataclass
class Seen:
    """One request as it arrived on the socket."""

    method: str
    path: str  # with the query string, undecoded
    headers: dict[str, str]
    body: bytes


@dataclass
class Canned:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class FakeFirecracker:
    """``await fake.start(path)``; ``fake.seen`` lists the requests; ``fake.answer()`` queues replies."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._canned: list[Canned] = []
        self._runner: web.AppRunner | None = None
        self.socket_path = ""

    def answer(self, status: int, body: bytes = b"", **kw: object) -> None:
        """Answer the next request with this instead of the default."""
        self._canned.append(Canned(status, body, **kw))  # type: ignore[arg-type]

    async def start(self, socket_path: str) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up ends a delayed answer, so teardown is quick.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.UnixSite(self._runner, socket_path).start()
        self.socket_path = socket_path

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        if self._canned:
            canned = self._canned.pop(0)
            await asyncio.sleep(canned.delay)
            return web.Response(
                status=canned.status, body=canned.body, content_type=canned.content_type,
                headers={"Server": "Firecracker API", **canned.headers},
            )
        headers = {"Server": "Firecracker API"}
        if request.method == "GET" and request.path in GET_ANSWERS:
            return web.json_response(GET_ANSWERS[request.path], headers=headers)
        if request.method in ("PUT", "PATCH"):
            return web.Response(status=204, headers=headers)
        fault = f"Invalid request method and/or path: {request.method} {request.path}."
        return web.json_response({"fault_message": fault}, status=400, headers=headers)


@pytest.fixture
async def fake_fc(short_tmp: str) -> AsyncIterator[FakeFirecracker]:
    fake = FakeFirecracker()
    await fake.start(os.path.join(short_tmp, "api.sock"))
    yield fake
    await fake.stop()
