"""The agent with a real Firecracker binary: boot, console, raw API, stop, delete.

Needs ``FC_MACOS_TEST_FIRECRACKER=/path/to/firecracker``, a usable /dev/kvm
and the offline guest images (see tests/helpers/guest_images.py)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH, SHELL_PROMPT, ConsoleReader, kill_recorded_vmms, live_processes_mentioning, serve

pytestmark = [pytest.mark.real_firecracker, pytest.mark.guest, pytest.mark.timeout(600)]


@pytest.fixture
def firecracker_settings(settings: AgentSettings) -> AgentSettings:
    binary = os.environ.get("FC_MACOS_TEST_FIRECRACKER")
    if not binary:
        pytest.skip("set FC_MACOS_TEST_FIRECRACKER=/path/to/firecracker to run")
    if not Path(binary).is_file() or not os.access(binary, os.X_OK):
        pytest.skip(f"FC_MACOS_TEST_FIRECRACKER={binary} is not an executable file")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("real Firecracker needs a usable /dev/kvm (read-write for this user)")
    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    return replace(settings, firecracker_bin=binary, image_dirs=(images.kernel.parent,))


async def test_real_firecracker_boots_a_guest_with_a_console(firecracker_settings: AgentSettings) -> None:
    client = await serve(firecracker_settings)
    try:
        resp = await client.post("/v1/microvms", json={"name": "real", "memory_mib": 256}, headers=AUTH)
        assert resp.status == 201, await resp.text()
        ws = await client.ws_connect("/v1/microvms/real/console", headers=AUTH)
        reader = ConsoleReader(ws)
        await reader.wait_for(SHELL_PROMPT, poke=b"\n")
        await reader.run("uname -a")
        assert b"Linux" in reader.seen
        resp = await client.get("/v1/microvms/real/firecracker/", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["state"] == "Running"
        stopped = await (await client.post("/v1/microvms/real/stop", json={"timeout_s": 30}, headers=AUTH)).json()
        assert stopped["state"] == "stopped"
        assert (await client.delete("/v1/microvms/real", headers=AUTH)).status == 204
        assert live_processes_mentioning(str(firecracker_settings.microvms_dir)) == []
    finally:
        await client.close()
        kill_recorded_vmms(firecracker_settings.state_dir)
