"""Requests aiohttp's parser refuses before the app get the agent's JSON error
shape (fc_macos.agent.protocol_errors), sent over raw sockets to the app served
by the runner fc-agent uses (AgentRunner)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from fc_macos.agent.app import create_app
from fc_macos.agent.protocol_errors import AgentRunner
from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import TOKEN, agent_process


@pytest.fixture
async def port(settings: AgentSettings) -> AsyncIterator[int]:
    runner = AgentRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    try:
        yield int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


async def raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` and read the answer to the end (the agent closes after a refusal)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


AUTH_LINE = f"Authorization: Bearer {TOKEN}\r\n".encode()

REFUSED = {
    "malformed request line": b"GET\r\n\r\n",
    "bad method": b"G@T /v1/info HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET /v1/info HTTP/9.x\r\nHost: x\r\n\r\n",
    "NUL in a header": b"GET /v1/info HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "header without a colon": b"GET /v1/info HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n",
    "header too long": b"GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad Content-Length": b"POST /v1/microvms HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
    "two Content-Lengths": b"POST /v1/microvms HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
    "bad chunk size": b"POST /v1/microvms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + AUTH_LINE
    + b"\r\nzz\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", REFUSED.values(), ids=REFUSED.keys())
async def test_refused_requests_answer_json_errors(port: int, request_bytes: bytes) -> None:
    status, headers, body = await raw(port, request_bytes)
    assert status == 400, body
    assert headers["content-type"].startswith("application/json"), headers
    answer = json.loads(body)
    assert answer["error"] == "bad_http_request"
    assert answer["message"].startswith("malformed HTTP request: ") and len(answer["message"]) > 24
    assert answer["hint"]


async def test_a_well_formed_raw_request_is_served(port: int) -> None:
    status, headers, body = await raw(port, b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + AUTH_LINE + b"\r\n")
    assert status == 200 and "version" in json.loads(body)


async def test_errors_inside_the_app_keep_their_codes(port: int) -> None:
    status, _, body = await raw(port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + AUTH_LINE + b"\r\n")
    assert status == 404 and json.loads(body)["error"] == "not_found"


async def test_fc_agent_itself_serves_through_the_json_runner(short_tmp: Path) -> None:
    with agent_process(short_tmp) as agent:
        port = int(agent.url.rsplit(":", 1)[1])
        status, headers, body = await raw(port, REFUSED["NUL in a header"])
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "bad_http_request"
