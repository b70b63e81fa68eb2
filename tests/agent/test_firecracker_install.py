"""Installing the Firecracker binary through the agent (``/v1/firecracker``,
the real app in-process): a binary whose ``--version`` answers is installed
0755 as ``<state-dir>/bin/firecracker`` and new microVMs run it, also after a
restart; one that does not answer, or a body that is not what was declared,
is refused with what went wrong and nothing is replaced."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, TEST_VMM, served

GOOD = b"#!/bin/sh\necho 'Firecracker v1.16.1'\necho\necho 'Supported snapshot data format versions: v8.0.0'\n"
SILENT = b"#!/bin/sh\nexit 0\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def install(client: TestClient, data: bytes, *, digest: str | None = None) -> tuple[int, dict[str, Any]]:
    query = {"size": str(len(data)), "sha256": digest or sha(data)}
    resp = await client.put("/v1/firecracker", params=query, data=data, headers=AUTH)
    return resp.status, await resp.json()


async def info(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/v1/info", headers=AUTH)
    assert resp.status == 200
    return dict(await resp.json())


async def test_a_binary_that_answers_is_installed_and_reported(client: TestClient, settings: AgentSettings) -> None:
    before = await (await client.get("/v1/firecracker", headers=AUTH)).json()
    assert before == {"path": str(TEST_VMM), "source": "option", "size": TEST_VMM.stat().st_size,
                      "sha256": sha(TEST_VMM.read_bytes()), "version": "Firecracker v1.16.1"}
    status, body = await install(client, GOOD)
    target = settings.state_dir / "bin" / "firecracker"
    assert status == 201, body
    assert body == {"path": str(target), "source": "installed", "size": len(GOOD), "sha256": sha(GOOD),
                    "version": "Firecracker v1.16.1"}
    assert target.read_bytes() == GOOD and target.stat().st_mode & 0o777 == 0o755
    assert sorted(os.listdir(target.parent)) == [".sha256.json", "firecracker"]
    shown = await info(client)
    assert (shown["firecracker_bin"], shown["firecracker_source"]) == (str(target), "installed")
    status, body = await install(client, GOOD)  # the same content: nothing to do
    assert (status, body["path"]) == (200, str(target))


async def test_a_binary_that_does_not_answer_replaces_nothing(client: TestClient, settings: AgentSettings) -> None:
    target = settings.state_dir / "bin" / "firecracker"
    status, body = await install(client, SILENT)
    assert (status, body["error"]) == (422, "firecracker_unusable"), body
    assert "'--version' said ''" in body["message"] and "nothing was replaced" in body["message"]
    assert "architecture" in body["hint"]
    assert not target.exists() and sorted(os.listdir(target.parent)) == [".sha256.json"]
    assert (await info(client))["firecracker_source"] == "option"

    assert (await install(client, GOOD))[0] == 201
    status, body = await install(client, b"\x7fELF not for this machine")
    assert (status, body["error"]) == (422, "firecracker_unusable"), body
    assert "cannot be started" in body["message"], body
    status, body = await install(client, SILENT, digest=sha(b"other"))
    assert (status, body["error"]) == (400, "checksum_mismatch"), body
    assert target.read_bytes() == GOOD and sorted(os.listdir(target.parent)) == [".sha256.json", "firecracker"]


async def test_new_microvms_run_the_installed_binary_also_after_a_restart(
        client: TestClient, settings: AgentSettings, caplog: pytest.LogCaptureFixture) -> None:
    copy = TEST_VMM.read_bytes() + b"\n# the installed copy\n"  # other content than --firecracker-bin's
    status, body = await install(client, copy)
    assert status == 201, body
    await client.close()
    caplog.set_level(logging.INFO, logger="fc_agent.firecracker")
    async with served(settings) as again:  # a restart: --firecracker-bin is still the test VMM
        target = str(settings.state_dir / "bin" / "firecracker")
        assert f"new microVMs run {target} (installed through PUT /v1/firecracker; it wins over " \
               f"--firecracker-bin {TEST_VMM})" in caplog.text
        assert (await info(again))["firecracker_bin"] == target
        resp = await again.post("/v1/microvms", json={"name": "fresh", "start": False}, headers=AUTH)
        created = await resp.json()
        assert resp.status == 201, created
        assert target.encode() in Path(f"/proc/{created['pid']}/cmdline").read_bytes()
        resp = await again.post("/v1/microvms/fresh/stop", json={"force": True}, headers=AUTH)
        assert resp.status == 200, await resp.text()
