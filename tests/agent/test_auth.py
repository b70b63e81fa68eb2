"""Bearer-token authentication: every route but /healthz needs the token."""

from __future__ import annotations

import stat
from pathlib import Path

from aiohttp.test_utils import TestClient

from fc_macos.agent.auth import load_or_create_token
from tests.helpers.agent import AUTH, TOKEN


async def test_request_without_token_is_401_json(client: TestClient) -> None:
    resp = await client.get("/v1/microvms")
    assert resp.status == 401
    body = await resp.json()
    assert body["error"] == "unauthorized"
    assert "Bearer" in body["hint"]
    assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_wrong_token_is_401(client: TestClient) -> None:
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Basic dXNlcjpwYXNz", TOKEN, "Bearer "):
        resp = await client.get("/v1/info", headers={"Authorization": header})
        assert resp.status == 401, header
        assert (await resp.json())["error"] == "unauthorized"


async def test_unknown_route_without_token_is_401_not_404(client: TestClient) -> None:
    resp = await client.get("/v1/nothing-here")
    assert resp.status == 401


async def test_right_token_is_accepted(client: TestClient) -> None:
    resp = await client.get("/v1/microvms", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"microvms": []}


async def test_healthz_needs_no_token(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["version"]


async def test_openapi_needs_the_token(client: TestClient) -> None:
    assert (await client.get("/openapi.json")).status == 401


def test_token_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "fc-agent" / "token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
    assert load_or_create_token(path) == token


def test_existing_token_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("my-secret\n")
    assert load_or_create_token(path) == "my-secret"
