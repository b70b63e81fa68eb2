"""BlockingAgent (fc_macos.agent_sync) against the real fc-agent (a process with the
test VMM): blocking calls, typed errors in the caller's thread, iteration over an
async stream, several threads, and closing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.agent.wire import MicroVMSpec
from fc_macos.agent_sync import BlockingAgent
from fc_macos.config import AgentEndpoint
from fc_macos.errors import AgentAuthError, AgentUnreachable, NotFoundError
from tests.helpers.agent import AgentProcess, agent_process, free_port


@pytest.fixture
def agent(short_tmp: Path) -> Iterator[AgentProcess]:
    images = short_tmp / "img"
    images.mkdir()
    (images / "vmlinux").write_bytes(b"not a kernel\n")
    (images / "rootfs.ext4").write_bytes(b"\0" * 4096)
    with agent_process(short_tmp, (images,)) as running:
        yield running


def test_calls_block_and_errors_are_typed(agent: AgentProcess) -> None:
    with BlockingAgent.from_endpoint(AgentEndpoint(agent.url, agent.token)) as client:
        assert client.health()["status"] == "ok"
        assert client.info()["firecracker_bin"].endswith("firecracker_vmm.py")
        assert client.answers()
        created = client.run(lambda c: c.create_microvm(MicroVMSpec(name="a", start=False)))
        assert created.state == "created"
        assert [vm.name for vm in client.list_microvms()] == ["a"]
        with pytest.raises(NotFoundError):
            client.run(lambda c: c.get_microvm("ghost"))
        assert client.stop_microvm("a", force=True).state == "stopped"
    with BlockingAgent(agent.url, "wrong") as stranger:
        assert stranger.health()["status"] == "ok"  # no token needed
        assert not stranger.answers()
        with pytest.raises(AgentAuthError):
            stranger.info()


def test_unreachable_is_an_error_not_a_hang() -> None:
    with BlockingAgent(f"http://127.0.0.1:{free_port()}", "t") as client:
        assert not client.answers()
        with pytest.raises(AgentUnreachable) as info:
            client.health()
    assert "connection refused" in info.value.message


def test_iterate_yields_a_stream_and_closes_it_when_left(agent: AgentProcess) -> None:
    with BlockingAgent(agent.url, agent.token) as client:
        client.run(lambda c: c.create_microvm(MicroVMSpec(name="a", start=False)))
        (agent.state_dir / "microvms" / "a" / "serial.log").write_text("one\ntwo\nthree\n")
        assert "".join(client.iterate(lambda c: c.logs("a", tail=2))) == "two\nthree\n"
        for chunk in client.iterate(lambda c: c.logs("a", follow=True)):  # would follow forever
            assert "one" in chunk
            break
        assert client.health()["status"] == "ok"  # the loop lives on


def test_several_threads_share_one_client_and_close_is_idempotent(agent: AgentProcess) -> None:
    client = BlockingAgent(agent.url, agent.token)
    results: list[str] = []

    def call() -> None:
        results.append(client.health()["status"])

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["ok"] * 4
    client.close()
    client.close()
    assert client.health()["status"] == "ok"  # starts again on use
    client.close()
