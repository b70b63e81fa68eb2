"""The Python API (fc_macos.connect, fc_macos.aio.connect) against a real
fc-agent and real guests: the README's example runs as it is written, and
the async API works on the shared ``guest_world`` guest."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import fc_macos
import fc_macos.aio
from fc_macos.config import AgentEndpoint
from fc_macos.errors import ConfigError, ExecError, NotFoundError
from fc_macos.providers.local_host import free_port
from tests.helpers.guest_world import BOOT_ARGS, INDEX, GuestWorld

REPO = Path(__file__).resolve().parents[1]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return bytes(resp.read())


def readme_example(index: int = 0) -> str:
    """The ``index``-th python block of the README's Python API section."""
    section = (REPO / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[index]


def test_connect_without_a_saved_endpoint_says_to_run_setup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        fc_macos.connect(home=tmp_path)
    assert "run 'fc-macos setup' first" in str(missing.value.hint)
    with pytest.raises(ConfigError):
        fc_macos.aio.connect(home=tmp_path)


@pytest.mark.guest
@pytest.mark.timeout(900)
def test_the_readme_example_runs(guest_world: GuestWorld, tmp_path: Path) -> None:
    code = readme_example(0)
    # The one change: the test machine's QEMU guests need a TSC hint to boot reliably.
    code = code.replace('memory_mib=256)', f'memory_mib=256, boot_args="{BOOT_ARGS}")')
    env = {**os.environ, "FC_MACOS_HOME": str(guest_world.home), "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r"0 Linux \S+ \d", lines[0]), lines
    assert "stdout b'streamed in\\n'" in lines and "stderr b'done\\n'" in lines and "exit 0" in lines
    assert lines[-1] == "b'<h1>hi</h1>\\n'"
    assert (tmp_path / "back.txt").read_text() == "hello from the host\n"
    names = [vm["name"] for vm in json.loads(guest_world.fc("microvm", "list", "--json").stdout)]
    assert "sandbox" not in names  # deleted


@pytest.mark.guest
@pytest.mark.timeout(900)
def test_the_readme_async_example_runs(guest_world: GuestWorld, tmp_path: Path) -> None:
    code = readme_example(1)
    assert 'fc.microvm("sandbox-2")' in code
    code = code.replace('"sandbox-2"', repr(guest_world.name))  # "an existing one": the shared guest
    env = {**os.environ, "FC_MACOS_HOME": str(guest_world.home), "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stdout b'total ") and "bin" in result.stdout, result.stdout


@pytest.mark.guest
@pytest.mark.timeout(900)
async def test_the_async_api_on_a_running_guest(guest_world: GuestWorld, tmp_path: Path) -> None:
    async with fc_macos.aio.connect(home=guest_world.home) as fc:
        with pytest.raises(NotFoundError):
            await fc.microvm("ghost")
        vm = await fc.microvm(guest_world.name)
        assert vm.info.state == "running" and vm.info.guest_agent and vm.info.guest_agent["state"] == "ready"
        assert guest_world.name in [v.name for v in await fc.list()]

        r = await vm.exec(["sh", "-c", "cat; echo err >&2; exit 5"], input="in", env={"A": "b"})
        assert (r.exit_code, r.stdout, r.stderr, r.ok) == (5, "in", "err\n", False)
        assert (await vm.exec("echo $A", env={"A": "from-env"})).stdout == "from-env\n"
        missing = await vm.exec(["no-such-tool"])  # like a shell: 127 and why on stderr
        assert missing.exit_code == 127 and "no-such-tool" in missing.stderr
        with pytest.raises(ExecError) as streaming:  # a session cannot start: an error with exit_code 127
            async with vm.exec_stream(["no-such-tool"]):
                pass
        assert streaming.value.exit_code == 127

        async with vm.exec_stream(["sh", "-c", "while read l; do echo got-$l; done; exit 9"], stdin=True) as proc:
            await proc.send(b"a\nb\n")
            await proc.close_stdin()
            chunks = [item async for item in proc]
        assert b"".join(data for _, data in chunks) == b"got-a\ngot-b\n"
        assert proc.exit is not None and proc.exit.exit_code == 9

        data = os.urandom(2 * 1024 * 1024)
        (tmp_path / "blob").write_bytes(data)
        await vm.exec("rm -rf /tmp/api && mkdir /tmp/api")
        seen: list[tuple[int, int | None]] = []
        placed = await vm.put(tmp_path / "blob", "/tmp/api/", progress=lambda done, total: seen.append((done, total)))
        assert placed.destination == "/tmp/api/blob" and seen and seen[-1][1]
        remote_sum = (await vm.exec(["sha256sum", "/tmp/api/blob"])).stdout.split()[0]
        assert remote_sum == hashlib.sha256(data).hexdigest()
        got = await vm.get("/tmp/api/blob", tmp_path / "again")
        assert got.bytes == len(data) and (tmp_path / "again").read_bytes() == data

        async with vm.forward(80) as port:  # served by this loop: the blocking client runs in a thread
            assert await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html") == INDEX


@pytest.mark.guest
@pytest.mark.timeout(900)
def test_the_sync_api_with_an_explicit_url_and_token(guest_world: GuestWorld) -> None:
    endpoint = AgentEndpoint.load(guest_world.home)
    assert endpoint is not None
    with fc_macos.connect(url=endpoint.url, token=endpoint.token) as fc:
        vm = fc.microvm(guest_world.name)
        assert vm.exec(["echo", "sync"]).stdout == "sync\n"
        with vm.exec_stream("echo one; echo two >&2") as proc:
            streams = sorted(stream for stream, _ in proc)
            assert proc.exit is not None and proc.exit.exit_code == 0
        assert streams == ["stderr", "stdout"]
        port = free_port()
        published = vm.publish(port, 80, host_addr="127.0.0.1")
        assert {"host_addr": "127.0.0.1", "host_port": port, "guest_port": 80} in published
        assert fetch(f"http://127.0.0.1:{port}/index.html") == INDEX
        with vm.forward(80) as local:  # the sync facade serves it from its own loop thread
            assert fetch(f"http://127.0.0.1:{local}/index.html") == INDEX
        assert all(p["host_port"] != port for p in vm.unpublish(port))
    assert fc._loop.loop.is_closed()  # the facade's loop thread ended with the block


def test_start_and_restart_reach_the_agent(short_tmp: Path) -> None:
    """A stopped microVM whose disk is gone: start and restart (sync and async)
    come back as the agent's ConflictError, with its reason and hint."""
    from fc_macos.agent.settings import AgentSettings
    from fc_macos.errors import ConflictError
    from tests.agent.test_app import seed_stopped
    from tests.helpers.agent import agent_process

    seed_stopped(AgentSettings(token="-", state_dir=short_tmp / "state"), "old")
    with agent_process(short_tmp) as agent:
        with fc_macos.connect(agent.url, agent.token) as fc:
            vm = fc.microvm("old")
            for call in (vm.start, vm.restart):
                with pytest.raises(ConflictError) as refused:
                    call()
                assert "rootfs copy" in refused.value.message and "microvm rm --name old" in str(refused.value.hint)

        async def aio_start() -> None:
            async with fc_macos.aio.connect(agent.url, agent.token) as fc:
                vm = await fc.microvm("old")
                with pytest.raises(ConflictError, match="rootfs copy"):
                    await vm.start(wait=False)

        asyncio.run(aio_start())
