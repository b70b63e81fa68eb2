#!/usr/bin/env python3
"""What fc-agent adds on top of talking to Firecracker directly, measured in one run.

    python3 benchmarks/agent_overhead.py [--requests 2000] [--keys 200] [--parallel 3]
        [--firecracker-bin PATH] [--image-dir DIR]

Prints three figures:

1. Raw-API passthrough: ``GET /machine-config`` sent straight to a microVM's
   API socket, against the same request through the agent's relay
   (``/v1/microvms/{name}/firecracker/machine-config``), both over one kept-alive
   connection: p50, p99, and the ratio and difference of the medians.
2. Console round trip: one byte typed into the guest's serial console until its
   echo comes back, through the agent's WebSocket, against a direct pipe to a
   VMM's stdin/stdout (the same guest image, booted the same way, no agent).
3. Creating N microVMs in parallel through the agent (each answer arrives after
   InstanceStart), and the time to the first shell prompt of all N.

Targets (issue 2): passthrough adds under 1 ms at p50, the console under 2 ms.

By default the Firecracker binary is the repository's test VMM (a
Firecracker-compatible API that boots guests with QEMU) and the guest images are
the offline test images (``scripts/fetch-test-kernel`` first); give
``--firecracker-bin`` and ``--image-dir`` (holding vmlinux, rootfs.ext4 and
optionally initrd.img) to measure the real Firecracker on a KVM host. Guests
under QEMU TCG echo slowly; what matters in figure 2 is the difference between
the two paths to the same guest, not the absolute round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.helpers.guest_images (the default images)

from fc_macos.agent.client import AgentClient  # noqa: E402
from fc_macos.agent.wire import MicroVMSpec  # noqa: E402

PROMPT = b"# "
PROMPT_TIMEOUT_S = 180.0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(label: str, samples_s: list[float]) -> tuple[float, float]:
    ms = [s * 1000 for s in samples_s]
    p50, p99 = statistics.median(ms), percentile(ms, 0.99)
    print(f"  {label:<28} n={len(ms):<5} p50={p50:8.3f} ms  p99={p99:8.3f} ms")
    return p50, p99


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(stream_read, needle: bytes, timeout: float) -> bytes:
    """Read chunks with ``stream_read()`` until ``needle`` shows up."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{needle!r} not seen; last output: {seen[-300:]!r}")
        chunk = await asyncio.wait_for(stream_read(), left)
        if not chunk:
            raise EOFError(f"stream ended before {needle!r}; last output: {seen[-300:]!r}")
        seen += chunk
    return seen


async def echo_round_trips(send, receive, keys: int) -> list[float]:
    """Type ``keys`` letters one at a time; each round trip ends when its echo is back."""
    samples = []
    for i in range(keys):
        key = b"abcdefghijklmnopqrstuvwxyz"[i % 26 : i % 26 + 1]
        started = time.perf_counter()
        await send(key)
        buf = b""
        while key not in buf:
            buf += await receive()
        samples.append(time.perf_counter() - started)
        if i % 40 == 39:  # keep the line short: erase what was typed
            await send(b"\x15")
    await send(b"\x15")
    return samples


class Agent:
    """fc-agent as a real process on a free local port."""

    def __init__(self, firecracker_bin: str, image_dir: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fcb-", dir="/tmp"))
        self.token = secrets.token_urlsafe(16)
        (self.dir / "token").write_text(self.token)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fc_macos.agent.main", "--listen", self.url.removeprefix("http://"),
             "--token-file", str(self.dir / "token"), "--state-dir", str(self.dir / "state"),
             "--firecracker-bin", firecracker_bin, "--image-dir", str(image_dir), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "agent.log", "w"),
        )  # fmt: skip

    async def wait(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the agent did not come up; see {self.dir / 'agent.log'}")

    async def remove_microvms(self) -> None:
        """Delete every microVM the agent still has: microVMs outlive their agent by
        design, so a benchmark that stopped half-way must not leave guests running."""
        async with AgentClient(self.url, self.token, timeout=60) as client:
            for vm in await client.list_microvms():
                await client.delete_microvm(vm.name, force=True)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


async def bench_passthrough(agent: Agent, client: AgentClient, name: str, n: int) -> None:
    info = await client.get_microvm(name)
    assert info.socket_path, "the agent reports each microVM's API socket"
    headers = {"Authorization": f"Bearer {agent.token}"}
    relay_url = f"{agent.url}/v1/microvms/{name}/firecracker/machine-config"

    async def timed(session: aiohttp.ClientSession, url: str, **kw) -> list[float]:
        for _ in range(50):  # warm up the connection and both servers
            async with session.get(url, **kw) as resp:
                await resp.read()
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            async with session.get(url, **kw) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            samples.append(time.perf_counter() - started)
        return samples

    connector = aiohttp.UnixConnector(path=info.socket_path, limit=1)
    async with aiohttp.ClientSession(connector=connector) as direct:
        direct_s = await timed(direct, "http://localhost/machine-config")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as relayed:
        relay_s = await timed(relayed, relay_url, headers=headers)
    print("Raw-API passthrough (GET /machine-config):")
    d50, _ = summary("direct to the API socket", direct_s)
    r50, _ = summary("through fc-agent", relay_s)
    print(f"  added at p50: {r50 - d50:.3f} ms   ratio p50: {r50 / d50:.2f}x   (target: under 1 ms added)")


async def direct_console(firecracker_bin: str, image_dir: Path, keys: int) -> list[float]:
    """Boot one guest on a VMM whose stdin/stdout are plain pipes to this process."""
    from fc_macos.firecracker.client import FirecrackerClient

    work = Path(tempfile.mkdtemp(prefix="fcd-", dir="/tmp"))
    shutil.copy(image_dir / "rootfs.ext4", work / "rootfs.ext4")
    proc = await asyncio.create_subprocess_exec(
        firecracker_bin, "--api-sock", str(work / "api.sock"), "--log-path", str(work / "fc.log"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    (work / "fc.log").touch()
    try:
        async with FirecrackerClient(work / "api.sock") as fc:
            await fc.wait_ready(30)
            await fc.put_machine_config(vcpu_count=1, mem_size_mib=256)
            initrd = image_dir / "initrd.img"
            await fc.put_boot_source(
                kernel_image_path=str(image_dir / "vmlinux"),
                boot_args="console=ttyS0 reboot=k panic=1",
                **({"initrd_path": str(initrd)} if initrd.exists() else {}),
            )
            await fc.put_drive(drive_id="rootfs", path_on_host=str(work / "rootfs.ext4"), is_root_device=True,
                               is_read_only=False)  # fmt: skip
            await fc.start_instance()
        assert proc.stdin and proc.stdout
        stdin, stdout = proc.stdin, proc.stdout

        async def send(data: bytes) -> None:
            stdin.write(data)
            await stdin.drain()

        read = lambda: stdout.read(4096)  # noqa: E731
        await wait_for(read, PROMPT, PROMPT_TIMEOUT_S)
        return await echo_round_trips(send, read, keys)
    finally:
        proc.kill()
        await proc.wait()
        shutil.rmtree(work, ignore_errors=True)


async def agent_console(client: AgentClient, name: str, keys: int) -> list[float]:
    async with client.console(name, scrollback=True) as stream:
        await wait_for(stream.receive, PROMPT, PROMPT_TIMEOUT_S)
        await stream.send(b"\n")
        await wait_for(stream.receive, PROMPT, 30)
        return await echo_round_trips(stream.send, stream.receive, keys)


async def bench_create(client: AgentClient, parallel: int) -> None:
    names = [f"bench-par-{i}" for i in range(parallel)]
    started = time.perf_counter()
    await asyncio.gather(*(client.create_microvm(MicroVMSpec(name=n, memory_mib=256)) for n in names))
    created = time.perf_counter() - started

    async def prompt(name: str) -> None:
        async with client.console(name) as stream:
            await wait_for(stream.receive, PROMPT, PROMPT_TIMEOUT_S)

    await asyncio.gather(*(prompt(n) for n in names))
    prompted = time.perf_counter() - started
    print(f"Creating {parallel} microVMs in parallel through fc-agent:")
    print(f"  all created (InstanceStart answered): {created:.2f} s ({created / parallel:.2f} s per microVM)")
    print(f"  all at a shell prompt:                {prompted:.2f} s")
    await asyncio.gather(*(client.delete_microvm(n, force=True) for n in names))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--firecracker-bin", default=str(REPO / "tests" / "doubles" / "firecracker_vmm.py"))
    parser.add_argument("--image-dir", type=Path)
    args = parser.parse_args()
    if args.image_dir is None:
        from tests.helpers.guest_images import build_test_images

        args.image_dir = build_test_images().kernel.parent
    print(f"firecracker: {args.firecracker_bin}\nimages: {args.image_dir}\n")

    agent = Agent(args.firecracker_bin, args.image_dir)
    try:
        await agent.wait()
        async with AgentClient(agent.url, agent.token, timeout=PROMPT_TIMEOUT_S) as client:
            await client.create_microvm(MicroVMSpec(name="bench", memory_mib=256))
            await bench_passthrough(agent, client, "bench", args.requests)
            print("\nConsole round trip (one key until its echo):")
            direct_s = await direct_console(args.firecracker_bin, args.image_dir, args.keys)
            relay_s = await agent_console(client, "bench", args.keys)
            d50, _ = summary("direct pipe to the VMM", direct_s)
            r50, _ = summary("through fc-agent (WebSocket)", relay_s)
            print(f"  added at p50: {r50 - d50:.3f} ms   ratio p50: {r50 / d50:.2f}x   (target: under 2 ms added)")
            await client.delete_microvm("bench", force=True)
            print()
            await bench_create(client, args.parallel)
    finally:
        try:
            await agent.remove_microvms()
        finally:
            agent.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
