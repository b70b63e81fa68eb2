"""The dashboard on the ``tart`` provider (the Tart double: a VM per network
namespace, fc-agent installed in it by setup): the Linux VM's name, state and
address come from ``tart`` itself, its CPUs, memory, disk and load from the
agent inside it; a stopped VM shows as stopped, with the agent unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.agent.client import AgentClient
from fc_macos.agent.wire import MicroVMSpec
from fc_macos.cli.dashboard.app import DashboardApp
from fc_macos.cli.dashboard.source import DashboardSource
from tests.cli.dashboard_helpers import SIZE, rows, screen_text, until
from tests.providers.tart_world import World, tart_world

VM_NAME = "fc-dash"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with tart_world(tmp_path_factory.mktemp("tart-dash"), VM_NAME, World) as w:
        yield w


async def test_vm_facts_come_from_tart_and_the_agent_inside(world: World) -> None:
    async with AgentClient.from_endpoint(world.endpoint) as client:
        for name in ("alpha", "beta"):
            await client.create_microvm(MicroVMSpec(name=name, memory_mib=128, start=False))
    address = world.provider.tart.ip(VM_NAME)
    source = DashboardSource(endpoint=world.provider.endpoint, vm_status=world.provider.vm_status, home=world.home)
    app = DashboardApp(source, lambda name: ["true"], vm_refresh_s=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: {"alpha", "beta"} <= set(rows(app)) and f"address  {address}" in screen_text(app)
                    and "CPUs     " in screen_text(app) and "GiB" in screen_text(app), "the VM, the agent and both")
        text = screen_text(app)
        assert f"name     {VM_NAME} (tart)" in text and "state    running" in text
        assert f"url      http://{address}:" in text and "status   reachable" in text

        await asyncio.to_thread(world.provider.vm_stop)
        await until(pilot, lambda: "state    stopped" in screen_text(app) and "UNREACHABLE" in screen_text(app),
                    "the stopped VM and the unreachable agent", timeout=60)
        assert "fc-macos vm start" in screen_text(app)  # what to do
        assert {"alpha", "beta"} <= set(rows(app))  # the last figures stay, marked stale
        await until(pilot, lambda: "(stale)" in screen_text(app), "the data said to be stale")
