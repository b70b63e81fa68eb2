"""Boot steps against the test VMM (no guest needed): a failing step is named,
carries Firecracker's fault_message, and everything acquired is undone."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp.test_utils import TestClient

from fc_macos.agent.boot import DEFAULT_STEPS, describe
from fc_macos.agent.settings import AgentSettings
from tests.agent.conftest import AUTH, live_processes_mentioning, serve


def test_default_steps_are_the_documented_list() -> None:
    design = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    names = describe(DEFAULT_STEPS)
    assert names[0] == "validate_spec" and names[-1] == "start_instance"
    for name in names:
        assert f"`{name}`" in design, name


async def test_kernel_firecracker_refuses_fails_in_start_instance(client: TestClient, settings: AgentSettings) -> None:
    resp = await client.post("/v1/microvms", json={"name": "bad-kernel", "memory_mib": 64}, headers=AUTH)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["error"] == "boot_failed"
    assert body["step"] == "start_instance"
    assert "start_instance" in body["message"]
    assert "Kernel Loader" in body["fault_message"]
    assert body["fault_message"] in body["message"]
    # cleanup ran in reverse: no process, no work directory, no record
    assert live_processes_mentioning(str(settings.state_dir)) == []
    assert not (settings.microvms_dir / "bad-kernel").exists()
    assert json.loads(settings.state_file.read_text())["microvms"] == {}
    assert (await (await client.get("/v1/microvms", headers=AUTH)).json()) == {"microvms": []}


async def test_failed_boot_does_not_use_up_the_automatic_name(client: TestClient, settings: AgentSettings) -> None:
    for _ in range(2):
        resp = await client.post("/v1/microvms", json={"memory_mib": 64}, headers=AUTH)
        assert resp.status == 422
    # the next automatic name is still microvm-1
    assert json.loads(settings.state_file.read_text())["next_index"] == 1


async def test_missing_firecracker_binary_fails_in_validate_spec(settings: AgentSettings, short_tmp: Path) -> None:
    from dataclasses import replace

    client = await serve(replace(settings, firecracker_bin=str(short_tmp / "no-firecracker")))
    try:
        resp = await client.post("/v1/microvms", json={}, headers=AUTH)
        body = await resp.json()
        assert resp.status == 422
        assert body["step"] == "validate_spec"
        assert "--firecracker-bin" in body["hint"]
    finally:
        await client.close()


async def test_firecracker_that_exits_at_once_fails_in_start_vmm(settings: AgentSettings, short_tmp: Path) -> None:
    from dataclasses import replace

    fake = short_tmp / "broken-firecracker"
    fake.write_text("#!/bin/sh\necho 'cannot open /dev/kvm' >&2\nexit 1\n")
    fake.chmod(0o755)
    client = await serve(replace(settings, firecracker_bin=str(fake)))
    try:
        resp = await client.post("/v1/microvms", json={"name": "quick-exit"}, headers=AUTH)
        body = await resp.json()
        assert resp.status == 422, body
        assert body["step"] in ("start_vmm", "wait_api_socket")
        assert "cannot open /dev/kvm" in body["message"] or "status 1" in body["message"]
        assert not (settings.microvms_dir / "quick-exit").exists()
    finally:
        await client.close()
