#!/usr/bin/env python3
"""What fc-agent adds on top of talking to Firecracker directly, measured in one run.

    python3 benchmarks/agent_overhead.py [--requests 2000] [--keys 200] [--parallel 3]
        [--firecracker-bin PATH] [--image-dir DIR | --kernel-deb DEB]

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
the offline (Debian) set, built by the package's image builder (``_images.py``);
give ``--firecracker-bin`` and ``--image-dir`` (holding vmlinux, rootfs.ext4 and
optionally initrd.img) to measure the real Firecracker on a KVM host. Guests
under QEMU TCG echo slowly; what matters in figure 2 is the difference between
the two paths to the same guest, not the absolute round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
from _harness import TEST_VMM, Agent, run_benchmark, summary
from _images import add_image_options, guest_image_dir

from fc_macos.agent.client import AgentClient
from fc_macos.agent.wire import MicroVMSpec

PROMPT = b"# "
PROMPT_TIMEOUT_S = 180.0


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


def parse_args() -> argparse.Namespace:
    """The command line, with ``image_dir`` resolved (built when not given)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--firecracker-bin", default=str(TEST_VMM))
    add_image_options(parser)
    args = parser.parse_args()
    args.image_dir = guest_image_dir(args)
    return args


async def main(args: argparse.Namespace) -> None:
    image_dir = args.image_dir
    print(f"firecracker: {args.firecracker_bin}\nimages: {image_dir}\n")

    agent = Agent(args.firecracker_bin, image_dir)
    try:
        await agent.wait()
        async with agent.client(timeout=PROMPT_TIMEOUT_S) as client:
            await client.create_microvm(MicroVMSpec(name="bench", memory_mib=256))
            await bench_passthrough(agent, client, "bench", args.requests)
            print("\nConsole round trip (one key until its echo):")
            direct_s = await direct_console(args.firecracker_bin, image_dir, args.keys)
            relay_s = await agent_console(client, "bench", args.keys)
            d50, _ = summary("direct pipe to the VMM", direct_s)
            r50, _ = summary("through fc-agent (WebSocket)", relay_s)
            print(f"  added at p50: {r50 - d50:.3f} ms   ratio p50: {r50 / d50:.2f}x   (target: under 2 ms added)")
            await client.delete_microvm("bench", force=True)
            print()
            await bench_create(client, args.parallel)
    finally:
        await agent.shutdown()


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
