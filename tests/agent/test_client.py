"""AgentClient against the real fc-agent app (served in-process on a TCP port, the
test VMM as its Firecracker): calls, the raw relay, console, logs and the mapping
of the agent's error bodies back to typed errors. microVMs are configured, not
started (``start: false``), unless a guest must answer (the console, marked guest)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.client import AgentClient, ConsoleStream
from fc_macos.agent.settings import AgentSettings
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
from tests.helpers.agent import GUEST_BOOT_ARGS, PROMPT_TIMEOUT_S, SHELL_PROMPT, TOKEN, kill_recorded_vmms, serve

CONFIGURED = MicroVMSpec(name="a", start=False)


@pytest.fixture
def agent(client: TestClient) -> str:
    """The URL of the real agent app (tests/agent/conftest.py's ``client``)."""
    return str(client.make_url("")).rstrip("/")


async def test_create_list_get_stop_delete(agent: str) -> None:
    async with AgentClient(agent, TOKEN) as client:
        assert (await client.health())["status"] == "ok"
        assert (await client.info())["firecracker_bin"].endswith("firecracker_vmm.py")
        assert await client.list_microvms() == []
        created = await client.create_microvm(MicroVMSpec(name="web-1", vcpus=2, memory_mib=512, start=False))
        assert (created.name, created.state, created.vcpus, created.memory_mib) == ("web-1", "created", 2, 512)
        assert created.spec["vcpus"] == 2 and created.pid
        assert [vm.name for vm in await client.list_microvms()] == ["web-1"]
        assert (await client.get_microvm("web-1")).pid == created.pid
        with pytest.raises(ConflictError) as running:
            await client.delete_microvm("web-1")
        assert "--force" in (running.value.hint or "")
        stopped = await client.stop_microvm("web-1")
        assert stopped.state == "stopped" and stopped.pid is None
        await client.delete_microvm("web-1")
        assert await client.list_microvms() == []


async def test_unknown_microvm_is_not_found_with_a_hint(agent: str) -> None:
    async with AgentClient(agent, TOKEN) as client:
        with pytest.raises(NotFoundError) as info:
            await client.get_microvm("ghost")
    assert info.value.message == "no microVM named 'ghost'"
    assert info.value.hint == "run 'fc-macos microvm list'"


async def test_wrong_token_is_an_auth_error_naming_the_token_file(agent: str, tmp_path: Path) -> None:
    async with AgentClient(agent, "wrong", home=tmp_path) as client:
        assert (await client.health())["status"] == "ok"  # no token needed
        with pytest.raises(AgentAuthError) as info:
            await client.list_microvms()
    assert str(tmp_path / "agent.json") in (info.value.hint or "")
    assert "fc-macos setup" in (info.value.hint or "")


async def test_name_conflict_and_boot_failure_keep_the_agents_words(agent: str) -> None:
    async with AgentClient(agent, TOKEN) as client:
        await client.create_microvm(CONFIGURED)
        with pytest.raises(ConflictError) as conflict:
            await client.create_microvm(CONFIGURED)
        assert conflict.value.message == "a microVM named 'a' already exists"
        assert conflict.value.hint
        with pytest.raises(FcMacosError) as no_kernel:
            await client.create_microvm(MicroVMSpec(name="nokernel", kernel="no-such-vmlinux"))
        assert "no-such-vmlinux" in no_kernel.value.message and no_kernel.value.hint
        with pytest.raises(BootError) as boot:  # the image directory's vmlinux is not a kernel
            await client.create_microvm(MicroVMSpec(name="b"))
    assert boot.value.step == "start_instance"
    assert boot.value.message.startswith("boot step 'start_instance' failed: ")  # the agent's words, once


async def test_other_agent_errors_keep_status_and_code(agent: str) -> None:
    async with AgentClient(agent, TOKEN) as client:
        await client.create_microvm(CONFIGURED)
        with pytest.raises(AgentRequestError) as info:
            async for _ in client.logs("a", source="bogus"):
                pass
    assert (info.value.status, info.value.code) == (400, "invalid")
    assert info.value.hint == "source: one of serial, firecracker, metrics"  # the agent's, verbatim


async def test_unreachable_agent_says_how_to_check_and_start_it() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AgentClient(f"http://127.0.0.1:{port}", TOKEN) as client:
        with pytest.raises(AgentUnreachable) as info:
            await client.list_microvms()
    assert "fc-macos vm status" in (info.value.hint or "")
    assert "fc-macos vm start" in (info.value.hint or "")


async def test_firecracker_relay_returns_status_and_body(agent: str) -> None:
    async with AgentClient(agent, TOKEN) as client:
        await client.create_microvm(CONFIGURED)
        status, body = await client.firecracker("a", "get", "/machine-config")
        assert (status, body["vcpu_count"]) == (200, 1)
        status, body = await client.firecracker("a", "PATCH", "machine-config", {"vcpu_count": 2})
        assert (status, body) == (204, None)
        assert (await client.firecracker("a", "GET", "machine-config"))[1]["vcpu_count"] == 2


async def test_firecracker_faults_carry_fault_message(agent: str) -> None:
    async with AgentClient(agent, TOKEN) as client:
        await client.create_microvm(CONFIGURED)
        with pytest.raises(FirecrackerAPIError) as fault:
            await client.firecracker("a", "PUT", "boot-source", {"kernel_image_path": "/nope"})
        assert fault.value.status == 400 and fault.value.fault_message
        assert fault.value.message == f"Firecracker answered 400: {fault.value.fault_message}"
        with pytest.raises(FirecrackerAPIError) as not_started:
            await client.firecracker("a", "PATCH", "vm", {"state": "Paused"})
        assert "before starting the microVM" in not_started.value.fault_message
        with pytest.raises(NotFoundError):  # the agent's own error, not Firecracker's
            await client.firecracker("ghost", "GET", "")


async def _read_until(console: ConsoleStream, pattern: bytes, seen: bytearray, *, poke: bytes | None = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMPT_TIMEOUT_S
    while not re.search(pattern, seen):
        assert loop.time() < deadline, f"{pattern!r} did not appear: {bytes(seen[-400:])!r}"
        if poke:
            await console.send(poke)
        try:
            chunk = await asyncio.wait_for(console.receive(), 3)
        except asyncio.TimeoutError:
            continue
        assert chunk is not None, f"console closed before {pattern!r}: {bytes(seen[-400:])!r}"
        seen += chunk


@pytest.mark.guest
async def test_console_is_bidirectional_with_resize(guest_settings: AgentSettings) -> None:
    server = await serve(guest_settings)
    try:
        url = str(server.make_url("")).rstrip("/")
        async with AgentClient(url, TOKEN) as client:
            await client.create_microvm(MicroVMSpec(name="a", boot_args=GUEST_BOOT_ARGS))
            seen = bytearray()
            async with client.console("a") as console:
                await _read_until(console, SHELL_PROMPT, seen, poke=b"\r")
                await console.resize(40, 120)  # recorded by the agent (a serial line has no size): the stream goes on
                await console.send(b"echo resized-$((40+2))\r")
                await _read_until(console, rb"resized-42", seen)
            async with client.console("a", scrollback=False) as console:
                fresh = bytearray()
                await console.send(b"echo again-$((40+2))\r")
                await _read_until(console, rb"again-42", fresh)
                assert b"resized-42" not in fresh  # no replay without scrollback
                await client.stop_microvm("a", force=True)
                rest = [chunk async for chunk in console]  # the console closes with the microVM
            assert isinstance(rest, list)
            with pytest.raises(ConflictError) as stopped:
                async with client.console("a"):
                    pass
            assert stopped.value.hint == "read what it printed with 'fc-macos microvm logs --name a'"
    finally:
        await server.close()
        kill_recorded_vmms(guest_settings.state_dir)


async def test_console_of_unknown_microvm_is_not_found(agent: str) -> None:
    async with AgentClient(agent, TOKEN) as client:
        with pytest.raises(NotFoundError):
            async with client.console("ghost"):
                pass


async def test_logs_stream_text_with_tail_and_follow(agent: str, settings: AgentSettings) -> None:
    async with AgentClient(agent, TOKEN) as client:
        await client.create_microvm(CONFIGURED)
        serial = settings.state_dir / "microvms" / "a" / "serial.log"
        with serial.open("ab") as log:  # what a guest would have printed
            log.write("".join(f"serial line {i}\n" for i in range(1, 6)).encode())
        text = "".join([chunk async for chunk in client.logs("a", tail=2)])
        assert text == "serial line 4\nserial line 5\n"

        async def follow() -> str:
            return "".join([chunk async for chunk in client.logs("a", tail=1, follow=True)])

        following = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        with serial.open("ab") as log:  # a multi-byte character split across two writes
            data = "followed ünïcode\n".encode()
            log.write(data[:10])
            log.flush()
            await asyncio.sleep(0.3)
            log.write(data[10:])
        await asyncio.sleep(0.5)
        await client.stop_microvm("a", force=True)  # follow ends when the microVM stops
        assert await asyncio.wait_for(following, 30) == "serial line 5\nfollowed ünïcode\n"
        with pytest.raises(NotFoundError):
            async for _ in client.logs("ghost"):
                pass


async def test_using_the_client_outside_async_with_is_a_programming_error() -> None:
    client = AgentClient("http://127.0.0.1:1", TOKEN)
    with pytest.raises(RuntimeError):
        await client.list_microvms()


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
