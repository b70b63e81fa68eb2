"""AgentClient against a fake agent on a real TCP socket: calls, console, logs and
the mapping of the agent's error bodies back to typed errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fc_macos.agent.client import AgentClient
from fc_macos.agent.wire import MicroVMSpec
from fc_macos.errors import (
    AgentAuthError,
    AgentRequestError,
    AgentUnreachable,
    BootError,
    ConflictError,
    FcMacosError,
    FirecrackerAPIError,
    NotFoundError,
)
from tests.agent.fake_agent import TOKEN, FakeAgent


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with FakeAgent() as fake:
        yield fake


async def test_create_list_get_stop_delete(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        assert (await client.health())["status"] == "ok"
        assert (await client.info())["arch"] == "x86_64"
        created = await client.create_microvm(MicroVMSpec(name="web-1", vcpus=2, memory_mib=512))
        assert (created.name, created.state, created.vcpus, created.memory_mib) == ("web-1", "running", 2, 512)
        assert agent.microvms["web-1"]["spec"]["vcpus"] == 2
        assert [vm.name for vm in await client.list_microvms()] == ["web-1"]
        assert (await client.get_microvm("web-1")).pid == created.pid
        with pytest.raises(ConflictError):
            await client.delete_microvm("web-1")
        stopped = await client.stop_microvm("web-1")
        assert stopped.state == "stopped"
        await client.delete_microvm("web-1")
        assert agent.microvms == {}


async def test_unknown_microvm_is_not_found_with_a_hint(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        with pytest.raises(NotFoundError) as info:
            await client.get_microvm("ghost")
    assert "ghost" in info.value.message
    assert info.value.hint == "run 'fc-macos microvm list'"


async def test_wrong_token_is_an_auth_error_naming_the_token_file(agent: FakeAgent, tmp_path: Path) -> None:
    async with AgentClient(agent.url, "wrong", home=tmp_path) as client:
        assert (await client.health())["status"] == "ok"  # no token needed
        with pytest.raises(AgentAuthError) as info:
            await client.list_microvms()
    assert str(tmp_path / "agent.json") in (info.value.hint or "")
    assert "fc-macos setup" in (info.value.hint or "")


async def test_name_conflict_and_boot_failure_keep_the_agents_words(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        await client.create_microvm(MicroVMSpec(name="a"))
        with pytest.raises(ConflictError) as conflict:
            await client.create_microvm(MicroVMSpec(name="a"))
        assert conflict.value.hint == "pick another --name"
        agent.boot_fails_with = "resolve_images"
        with pytest.raises(BootError) as boot:
            await client.create_microvm(MicroVMSpec(name="b"))
    assert boot.value.step == "resolve_images"
    assert boot.value.message == "boot step 'resolve_images' failed: kernel not found"


async def test_other_agent_errors_keep_status_and_code(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        await client.create_microvm(MicroVMSpec(name="a"))
        with pytest.raises(AgentRequestError) as info:
            async for _ in client.logs("a", source="bogus"):
                pass
    assert (info.value.status, info.value.code) == (400, "invalid")
    assert info.value.hint == "use serial or firecracker"


async def test_unreachable_agent_says_how_to_check_and_start_it() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AgentClient(f"http://127.0.0.1:{port}", TOKEN) as client:
        with pytest.raises(AgentUnreachable) as info:
            await client.list_microvms()
    assert "fc-macos vm status" in (info.value.hint or "")
    assert "fc-macos vm start" in (info.value.hint or "")


async def test_firecracker_relay_returns_status_and_body(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        await client.create_microvm(MicroVMSpec(name="a"))
        status, body = await client.firecracker("a", "get", "/machine-config")
        assert (status, body["vcpu_count"]) == (200, 1)
        status, body = await client.firecracker("a", "PUT", "actions", {"action_type": "FlushMetrics"})
        assert (status, body) == (204, None)
    assert agent.fc_calls[-1] == ("PUT", "actions", {"action_type": "FlushMetrics"})


async def test_firecracker_faults_carry_fault_message(agent: FakeAgent) -> None:
    agent.fc_replies[("PUT", "boot-source")] = (400, {"fault_message": "The kernel file cannot be opened"})
    agent.fc_replies[("PUT", "vm")] = (400, {"error": "Payload too large"})
    async with AgentClient(agent.url, TOKEN) as client:
        await client.create_microvm(MicroVMSpec(name="a"))
        with pytest.raises(FirecrackerAPIError) as fault:
            await client.firecracker("a", "PUT", "boot-source", {"kernel_image_path": "/nope"})
        assert (fault.value.status, fault.value.fault_message) == (400, "The kernel file cannot be opened")
        with pytest.raises(FirecrackerAPIError) as http_fault:
            await client.firecracker("a", "PUT", "vm", {"state": "Paused"})
        assert http_fault.value.fault_message == "Payload too large"
        with pytest.raises(NotFoundError):  # the agent's own error, not Firecracker's
            await client.firecracker("ghost", "GET", "")


async def test_console_is_bidirectional_with_resize(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        await client.create_microvm(MicroVMSpec(name="a"))
        async with client.console("a") as console:
            assert await console.receive() == b"scrollback\r\n"
            await console.resize(40, 120)
            await console.send(b"ls\r")
            assert await console.receive() == b"echo:ls\r"
            await console.send(b"poweroff\r")
            rest = [chunk async for chunk in console]
        assert rest == [b"power down\r\n"]
        with pytest.raises(ConflictError) as stopped:  # powered off: the console is closed
            async with client.console("a"):
                pass
        assert stopped.value.hint == "read what it printed with 'fc-macos microvm logs --name a'"
        agent.microvms["a"]["state"] = "running"
        async with client.console("a", scrollback=False) as console:
            await console.send(b"x")
            assert await console.receive() == b"echo:x"
    assert agent.resizes == [(40, 120)]


async def test_console_of_unknown_microvm_is_not_found(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        with pytest.raises(NotFoundError):
            async with client.console("ghost"):
                pass


async def test_logs_stream_text_with_tail_and_follow(agent: FakeAgent) -> None:
    async with AgentClient(agent.url, TOKEN) as client:
        await client.create_microvm(MicroVMSpec(name="a"))
        text = "".join([chunk async for chunk in client.logs("a", tail=2)])
        assert text == "serial line 4\nserial line 5\n"
        text = "".join([c async for c in client.logs("a", source="firecracker", tail=1, follow=True)])
        assert text == "firecracker line 5\nfollowed ünïcode\n"
        with pytest.raises(NotFoundError):
            async for _ in client.logs("ghost"):
                pass


async def test_using_the_client_outside_async_with_is_a_programming_error() -> None:
    client = AgentClient("http://127.0.0.1:1", TOKEN)
    with pytest.raises(RuntimeError):
        await client.list_microvms()


async def test_against_the_real_agent(client: Any) -> None:
    """The real fc-agent app (tests/agent/conftest.py) with the test VMM; nothing boots."""
    from tests.helpers.agent import TOKEN as REAL_TOKEN

    url = str(client.make_url("")).rstrip("/")
    async with AgentClient(url, REAL_TOKEN) as agent:
        assert (await agent.health())["status"] == "ok"
        assert (await agent.info())["firecracker_bin"].endswith("firecracker_vmm.py")
        assert await agent.list_microvms() == []
        with pytest.raises(NotFoundError) as missing:
            await agent.get_microvm("ghost")
        assert missing.value.hint == "run 'fc-macos microvm list'"
        with pytest.raises(FcMacosError) as no_kernel:
            await agent.create_microvm(MicroVMSpec(name="nokernel", kernel="no-such-vmlinux"))
        assert "no-such-vmlinux" in no_kernel.value.message and no_kernel.value.hint
        with pytest.raises(BootError) as not_elf:  # the image dir's vmlinux is not a kernel
            await agent.create_microvm(MicroVMSpec(name="bad"))
        assert not_elf.value.step and not_elf.value.step in not_elf.value.message
    async with AgentClient(url, "wrong-token") as agent:
        with pytest.raises(AgentAuthError):
            await agent.list_microvms()


async def test_another_program_at_the_agents_address_counts_as_unreachable() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async with TestServer(web.Application()) as server:  # answers 404 text/plain to everything
        async with AgentClient(str(server.make_url("")).rstrip("/"), TOKEN) as client:
            with pytest.raises(AgentUnreachable) as info:
                await client.list_microvms()
    assert "something else answered HTTP 404" in info.value.message
    assert "fc-macos vm start" in (info.value.hint or "")


async def test_a_stranger_on_the_agents_address_is_unreachable_not_a_crash() -> None:
    """An HTTP server that is not fc-agent (no {"error"} body) means the agent is not there."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    async with TestServer(app) as server:
        async with AgentClient(str(server.make_url("")).rstrip("/"), TOKEN) as client:
            with pytest.raises(AgentUnreachable) as info:
                await client.list_microvms()
    assert "something else answered HTTP 404" in info.value.message
    assert "fc-macos vm start" in (info.value.hint or "")
