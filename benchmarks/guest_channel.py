#!/usr/bin/env python3
"""What fc-agent adds on the way into a guest, against the direct vsock paths, in one run.

    python3 benchmarks/guest_channel.py [--execs 300] [--mib 100] [--rounds 3]
        [--http-requests 200] [--firecracker-bin PATH] [--image-dir DIR]

One fc-agent (started here) and one guest, booted with ``wait: "guest_agent"``,
``network: true`` when this process may make TAP devices (root or CAP_NET_ADMIN) and
a port published by the agent (127.0.0.1:<free port> -> guest port 80). Every
comparison is between two paths to that same guest, measured in this run, their
samples interleaved so that a busy host slows both alike:

1. From ``run`` (create) to the guest agent ready: the create's wall clock and the
   agent's ``guest_agent.ready_s`` (InstanceStart to ready).
2. exec of ``true``: through the agent (``POST /exec``, one-shot JSON, and the exec
   WebSocket ``fc-macos exec`` uses), against a direct ``CONNECT`` on the microVM's
   hybrid vsock socket and the guest agent's own exec (each one connection, from
   connect to EXIT): p50, p99, the overhead at p50 (target: under 2 ms). fc-agent
   opens its next connection to the guest agent ahead of time, so the overhead is
   also given against a direct exec on a connection made before the clock starts.
3. 100 MiB in and out: ``fc-macos cp``'s path (tar through ``PUT``/``GET /files``),
   against a raw vsock byte stream through the same VMM (the guest agent's
   ``connect`` to a guest-side ``nc -e dd``), and the guest agent's own put/get over
   the hybrid socket (no agent), with crc32 (what cp uses) and with sha256 (the cost
   of the checksum algorithm): MiB/s each way and cp's share of the raw stream
   (target: 70%).
4. An HTTP request to a guest ``busybox httpd`` through the published port (agent
   listener -> guest agent ``connect``) against the guest's address over its TAP:
   p50, p99 of a small page and the MiB/s of a larger one, new connection each.
   Without a TAP (not root): the published port alone, and why the comparison is skipped.

By default the Firecracker binary is the repository's test VMM (Firecracker's API,
guests booted with QEMU: under TCG absolute figures are slow, the ratios are what
counts) and the images are the offline set built by the package's image builder;
``--firecracker-bin`` and ``--image-dir`` measure a real Firecracker. Every microVM
is deleted on every way out (an error, Ctrl+C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from _harness import TEST_VMM, Agent, free_port, run_benchmark, summary
from _images import add_image_options, guest_image_dir

from fc_macos.agent.client import AgentClient
from fc_macos.agent.wire import MicroVMInfo, MicroVMSpec, PortSpec
from fc_macos.errors import BootError
from fc_macos.guest.protocol import (ExecExit, GuestCommandNotFound, GuestConnection, GuestConnectionRefused,
                                     open_hybrid_vsock)
from fc_macos.transfer.copy import copy_from_guest, copy_to_guest

NAME = "bench-guest"
MiB = 1 << 20
CHUNK = 256 * 1024
WORK = "/tmp/bench"  # in the guest: a tmpfs
RAW_FILE = f"{WORK}/raw.bin"  # written by the raw stream in, the source of every copy out
RAW_PORT = 9000
TRANSFER_TIMEOUT_S = 300.0
INDEX = b"<h1>hello from the guest</h1>\n"


# ---- direct vsock helpers -----------------------------------------------------------------


async def bounded(work: Awaitable[Any], what: str, *, abort: Callable[[], None] | None = None,
                  timeout: float = TRANSFER_TIMEOUT_S) -> Any:
    """``await work``, or RuntimeError after ``timeout`` seconds: a guest (or VMM) that
    stops answering ends the benchmark with a message instead of hanging it. ``abort``
    (e.g. a transport's ``abort``) runs first, so that ``work``'s own cleanup cannot
    wait for a peer that stopped reading."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        done = set()
        raise
    finally:
        if not done:
            if abort is not None:
                abort()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task not in done:
        raise RuntimeError(f"{what} did not finish within {timeout:.0f} s")
    return task.result()


async def guest_sh(uds: str, script: str) -> str:
    """Run a shell script in the guest over a direct vsock connection; its stdout."""
    async def run() -> Any:
        async with await open_hybrid_vsock(uds) as conn:
            return await conn.run(["/bin/sh", "-c", script])

    result = await bounded(run(), f"{script!r} in the guest")
    if result.exit_code != 0:
        raise RuntimeError(f"{script!r} failed ({result.exit_code}): {result.stderr.decode(errors='replace')}")
    return str(result.stdout.decode())


async def open_guest_port(uds: str, port: int, timeout: float = 30.0) -> GuestConnection:
    """A raw stream to the guest's TCP ``port`` (guest agent ``connect``), retried
    until something listens there."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await open_hybrid_vsock(uds)
        try:
            await conn.connect(port)
            return conn
        except GuestConnectionRefused:
            await conn.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def raw_stream(uds: str, dd_args: str, send: bytes | None) -> tuple[float, int]:
    """One raw vsock transfer to or from ``nc -l -e dd <dd_args>`` in the guest: ``send``
    goes in (then EOF), else everything the guest sends is read. Returns (seconds
    from the connection to the guest's dd exiting, bytes received)."""
    server = await open_hybrid_vsock(uds)
    conn: GuestConnection | None = None
    try:
        try:
            await server.start_exec(["nc", "-l", "-p", str(RAW_PORT), "-e", "dd", "bs=1M", *dd_args.split()],
                                    stdin=False)
        except GuestCommandNotFound as exc:
            raise RuntimeError(f"the raw stream needs busybox nc (with -l, -e) and dd in the guest: {exc}") from exc
        conn = await open_guest_port(uds, RAW_PORT)
        started = time.perf_counter()
        received = 0
        if send is not None:
            view = memoryview(send)
            for i in range(0, len(view), CHUNK):
                conn.writer.write(view[i:i + CHUNK])
                await conn.writer.drain()
            conn.writer.write_eof()
        while chunk := await conn.reader.read(MiB):
            received += len(chunk)
        async for event in server.exec_events():
            if isinstance(event, ExecExit) and event.exit_code != 0:
                raise RuntimeError(f"the guest's nc/dd exited with {event.exit_code}")
        return time.perf_counter() - started, received
    finally:
        for opened in (conn, server):
            if opened is not None:
                opened.writer.transport.abort()  # closing never waits on a guest that stopped reading
                await opened.close()


# ---- 1. exec ------------------------------------------------------------------------------


async def bench_exec(client: AgentClient, uds: str, n: int) -> None:
    async def cold() -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            async with await open_hybrid_vsock(uds) as conn:
                assert (await conn.run(["true"])).exit_code == 0
        return run

    async def warm() -> Callable[[], Awaitable[None]]:
        conn = await open_hybrid_vsock(uds)  # opened before the clock starts

        async def run() -> None:
            assert (await conn.run(["true"])).exit_code == 0  # run() closes it
        return run

    async def post() -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            assert (await client.exec(NAME, ["true"])).exit_code == 0
        return run

    async def websocket() -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            async with client.exec_session(NAME, ["true"]) as session:
                assert (await session.wait()).exit_code == 0
        return run

    cold_label, warm_label = "direct vsock CONNECT + exec", "direct exec, connected before"
    paths: dict[str, Callable[[], Awaitable[Callable[[], Awaitable[None]]]]] = {
        cold_label: cold, warm_label: warm, "fc-agent POST /exec": post, "fc-agent exec WebSocket": websocket}
    samples: dict[str, list[float]] = {label: [] for label in paths}
    for i in range(n + 10):  # the first 10 of each warm up connections and caches
        for label, prepare in paths.items():
            run = await prepare()
            started = time.perf_counter()
            await run()
            if i >= 10:
                samples[label].append(time.perf_counter() - started)
    print("2. exec of `true` (request to exit status):")
    p50 = {label: summary(label, s, 30)[0] for label, s in samples.items()}
    base, warm_base = p50[cold_label], p50[warm_label]
    for label in list(paths)[2:]:
        added = p50[label] - base
        verdict = "met" if added < 2 else "NOT met"
        print(f"  {label}: added at p50 {added:.3f} ms, ratio {p50[label] / base:.2f}x  (target under 2 ms: {verdict});"
              f" against a connection made before: {p50[label] - warm_base:+.3f} ms")
    print("  (fc-agent opens the next guest connection ahead after each operation, so its exec pays no CONNECT;\n"
          "   the last figure is what it adds beyond that)")


# ---- 2. copies ----------------------------------------------------------------------------


RAW, DIRECT, AGENT = "raw vsock stream", "guest agent {} (direct)", "fc-agent cp (tar {})"
DIRECT_SHA256 = "guest agent {} (direct, sha256)"
WAYS = {"in": ("put", "PUT"), "out": ("get", "GET")}


def rate(size: int, seconds: float) -> float:
    return size / MiB / seconds


async def timed(run: Awaitable[Any], what: str) -> float:
    started = time.perf_counter()
    await bounded(run, what)
    return time.perf_counter() - started


async def direct_op(uds: str, what: str, op: Callable[[GuestConnection], Awaitable[Any]]) -> float:
    """Seconds for ``op`` on a new direct connection to the guest agent (connect included)."""
    started = time.perf_counter()
    conn = await open_hybrid_vsock(uds)
    try:
        await bounded(op(conn), what, abort=conn.writer.transport.abort)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def copies_in(client: AgentClient, uds: str, local: Path, data: bytes) -> dict[str, float]:
    """One round of the in direction: seconds per path. The raw stream leaves
    RAW_FILE, the source of the copies out; each copy is checked and removed before
    the next (the guest's /tmp holds two)."""
    seconds, _ = await bounded(raw_stream(uds, f"of={RAW_FILE}", data), "the raw stream in")
    got = (await guest_sh(uds, f"sha256sum {RAW_FILE}")).split()[0]
    assert got == hashlib.sha256(data).hexdigest(), "the raw stream in delivered other bytes"

    async def landed(copy: Awaitable[float], directory: str) -> float:
        took = await copy
        size = await guest_sh(uds, f"stat -c %s {directory}/{local.name} && rm -f {directory}/{local.name}")
        assert size.split() == [str(len(data))], size
        return took

    def direct_put(checksum: str) -> Awaitable[float]:
        return direct_op(uds, f"the direct put ({checksum})",
                         lambda c: c.put_tree(local, f"{WORK}/direct", checksum=checksum))

    return {RAW: seconds,
            DIRECT.format("put"): await landed(direct_put("crc32"), f"{WORK}/direct"),
            DIRECT_SHA256.format("put"): await landed(direct_put("sha256"), f"{WORK}/direct"),
            AGENT.format("PUT"): await landed(timed(copy_to_guest(client, NAME, str(local), f"{WORK}/agent/"), "cp in"),
                                              f"{WORK}/agent")}


async def copies_out(client: AgentClient, uds: str, host: Path, size: int) -> dict[str, float]:
    """One round of the out direction (RAW_FILE): seconds per path, sizes checked."""
    seconds, received = await bounded(raw_stream(uds, f"if={RAW_FILE}", None), "the raw stream out")
    assert received == size, f"the raw stream out delivered {received} bytes, not {size}"

    direct, sha256, agent = (Path(tempfile.mkdtemp(prefix="get-", dir=host)) for _ in range(3))
    took = {RAW: seconds,
            DIRECT.format("get"): await direct_op(uds, "the direct get", lambda c: c.get_tree(RAW_FILE, direct)),
            DIRECT_SHA256.format("get"): await direct_op(uds, "the direct get (sha256)",
                                                         lambda c: c.get_tree(RAW_FILE, sha256, checksum="sha256")),
            AGENT.format("GET"): await timed(copy_from_guest(client, NAME, RAW_FILE, str(agent)), "cp out")}
    for dest in (direct, sha256, agent):
        assert (dest / Path(RAW_FILE).name).stat().st_size == size
        shutil.rmtree(dest)
    return took


async def bench_copy(client: AgentClient, uds: str, mib: int, rounds: int) -> None:
    size = mib * MiB
    host = Path(tempfile.mkdtemp(prefix="fcb-cp-", dir="/tmp"))
    rates: dict[str, dict[str, list[float]]] = {"in": {}, "out": {}}
    try:
        data = os.urandom(size)
        (host / "big.bin").write_bytes(data)
        await guest_sh(uds, f"rm -rf {WORK} && mkdir -p {WORK}/direct {WORK}/agent")
        for _ in range(rounds):
            for way, took in (("in", await copies_in(client, uds, host / "big.bin", data)),
                              ("out", await copies_out(client, uds, host, size))):
                for label, seconds in took.items():
                    rates[way].setdefault(label, []).append(rate(size, seconds))
        await guest_sh(uds, f"rm -rf {WORK}")
    finally:
        shutil.rmtree(host, ignore_errors=True)
    print(f"3. {mib} MiB in and out (MiB/s, median of {rounds} round(s)):")
    for way, (op, method) in WAYS.items():
        median = {label: statistics.median(values) for label, values in rates[way].items()}
        for label, values in rates[way].items():
            print(f"  {way + ': ' + label:<37} {median[label]:8.1f} MiB/s   (rounds: {', '.join(f'{v:.1f}' for v in values)})")
        cp, raw, direct = median[AGENT.format(method)], median[RAW], median[DIRECT.format(op)]
        verdict = "met" if cp >= 0.7 * raw else "NOT met"
        print(f"  {way}: cp / raw stream {cp / raw:.0%} (target 70%: {verdict});  cp / direct guest agent {cp / direct:.0%}")


# ---- 3. HTTP ------------------------------------------------------------------------------


async def bench_http(uds: str, info: MicroVMInfo, n: int, skip_reason: str | None) -> None:
    print("4. HTTP GET to a guest busybox httpd (a new connection each):")
    big_mib = 10
    await guest_sh(uds, f"mkdir -p /tmp/www && printf '{INDEX.decode().strip()}\\n' > /tmp/www/index.html && "
                   f"head -c {big_mib * MiB} /dev/urandom > /tmp/www/big && busybox httpd -p 80 -h /tmp/www")
    published = info.ports[0]
    urls = {"published port (fc-agent)": f"http://{published['host_addr']}:{published['host_port']}"}
    if skip_reason is None:
        assert info.network is not None
        urls["guest over its TAP"] = f"http://{info.network['guest_ip']}"
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def fetch(url: str) -> bytes:
            async with session.get(url) as resp:
                assert resp.status == 200, resp.status
                return await resp.read()

        samples: dict[str, list[float]] = {label: [] for label in urls}
        big: dict[str, list[float]] = {label: [] for label in urls}
        for i in range(n + 10):
            for label, url in urls.items():
                started = time.perf_counter()
                assert await fetch(url + "/index.html") == INDEX
                if i >= 10:
                    samples[label].append(time.perf_counter() - started)
        for _ in range(3):
            for label, url in urls.items():
                started = time.perf_counter()
                assert len(await fetch(url + "/big")) == big_mib * MiB
                big[label].append(rate(big_mib * MiB, time.perf_counter() - started))
    p50 = {label: summary(f"{label} /index.html", s, 38)[0] for label, s in samples.items()}
    for label, values in big.items():
        print(f"  {label + f' /big ({big_mib} MiB)':<38} {statistics.median(values):8.1f} MiB/s (median of 3)")
    if skip_reason is not None:
        print(f"  guest over its TAP: skipped, {skip_reason}")
        return
    tap, port = p50["guest over its TAP"], p50["published port (fc-agent)"]
    tap_rate, port_rate = (statistics.median(big[k]) for k in ("guest over its TAP", "published port (fc-agent)"))
    print(f"  published port against the TAP: added at p50 {port - tap:.3f} ms, ratio {port / tap:.2f}x;"
          f" download {port_rate / tap_rate:.0%} of the TAP's")


# ---- the guest ----------------------------------------------------------------------------


def network_unavailable() -> str | None:
    """Why this process cannot give the guest a TAP device, or None if it can."""
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun on this machine"
    if os.geteuid() != 0:
        try:
            caps = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                            if line.startswith("CapEff:")).split()[1], 16)
        except (OSError, StopIteration, ValueError):
            caps = 0
        if not caps & (1 << 12):  # CAP_NET_ADMIN
            return "making a TAP device needs root or CAP_NET_ADMIN (run the benchmark as root)"
    return None


async def create_guest(client: AgentClient, args: argparse.Namespace) -> tuple[MicroVMInfo, str | None]:
    """Boot the benchmark's guest and print figure 4; returns it and why it has no TAP (or None)."""
    skip = network_unavailable()
    while True:
        spec = MicroVMSpec(name=NAME, vcpus=args.vcpus, memory_mib=args.memory_mib, network=skip is None,
                           ports=(PortSpec(host_port=free_port(), guest_port=80, host_addr="127.0.0.1"),),
                           wait="guest_agent", wait_timeout_s=args.wait_timeout)
        started = time.perf_counter()
        try:
            info = await client.create_microvm(spec)
        except BootError as exc:
            if skip is not None or exc.step != "attach_network":
                raise
            skip = f"the agent could not make a TAP device: {exc.message}"
            continue
        wall = time.perf_counter() - started
        break
    guest_agent = info.guest_agent or {}
    ready = guest_agent.get("ready_s")
    print("1. run (create with wait: guest_agent) to the guest agent ready:")
    print(f"  create's wall clock {wall:.2f} s, guest_agent.ready_s (InstanceStart to ready) "
          + (f"{ready:.2f} s" if ready is not None else "not reported")
          + f"  (guest agent {guest_agent.get('version')}, network: {skip is None})")
    return info, skip


def parse_args() -> argparse.Namespace:
    """The command line, with ``image_dir`` resolved (built when not given)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execs", type=int, default=300, help="exec samples per path")
    parser.add_argument("--mib", type=int, default=100, help="size of the copies")
    parser.add_argument("--rounds", type=int, default=3, help="copy rounds (each path once per round; the median is shown)")
    parser.add_argument("--http-requests", type=int, default=200)
    parser.add_argument("--vcpus", type=int, default=1)
    parser.add_argument("--memory-mib", type=int, default=768, help="guest memory (its /tmp holds two copies)")
    parser.add_argument("--wait-timeout", type=float, default=240, help="seconds to wait for the guest agent")
    parser.add_argument("--firecracker-bin", default=str(TEST_VMM))
    add_image_options(parser)
    args = parser.parse_args()
    args.image_dir = guest_image_dir(args)
    return args


async def print_console_tail(client: AgentClient, lines: int = 12) -> None:
    """The end of the guest's console, to go with an error (it says when the guest broke)."""
    try:
        text = "".join([chunk async for chunk in client.logs(NAME, tail=lines)])
    except Exception as exc:  # noqa: BLE001 - a diagnostic only
        text = f"(cannot read it: {exc})"
    print(f"\nthe last {lines} lines of the guest's console:\n{text}", file=sys.stderr)


async def figures(client: AgentClient, args: argparse.Namespace) -> None:
    """Boot the guest and measure; on a failure, show the end of its console."""
    try:
        info, skip = await create_guest(client, args)
        assert info.vsock is not None, "the guest has a vsock device"
        uds = info.vsock["uds_path"]
        print()
        await bench_exec(client, uds, args.execs)
        print()
        await bench_copy(client, uds, args.mib, args.rounds)
        print()
        await bench_http(uds, info, args.http_requests, skip)
    except Exception:
        await print_console_tail(client)
        raise


async def main(args: argparse.Namespace) -> None:
    print(f"firecracker: {args.firecracker_bin}\nimages: {args.image_dir}\n"
          f"guest: {args.vcpus} vCPU, {args.memory_mib} MiB\n")
    agent = Agent(args.firecracker_bin, args.image_dir, ["--no-nat"])
    try:
        await agent.wait()
        async with agent.client(timeout=args.wait_timeout + 60) as client:
            await figures(client, args)
    finally:
        await agent.shutdown()


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
