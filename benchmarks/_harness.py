"""What the benchmarks share: a real fc-agent process, timing summaries, a safe main.

    from _harness import Agent, run_benchmark, summary

    async def main() -> None:
        agent = Agent(firecracker_bin, image_dir)
        try:
            await agent.wait()
            ...
        finally:
            await agent.shutdown()        # every microVM gone, the agent stopped

    run_benchmark(main())                 # SIGTERM/SIGHUP end it like Ctrl+C: cleanup runs

Only the installed package is imported (never ``tests``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from fc_macos.agent.client import AgentClient
from fc_macos.errors import AgentUnreachable

REPO = Path(__file__).resolve().parents[1]
#: The repository's Firecracker-compatible test VMM (boots guests with QEMU).
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(label: str, samples_s: Sequence[float], width: int = 28) -> tuple[float, float]:
    """Print ``label``'s count, p50 and p99 in ms; return (p50, p99) in ms."""
    ms = [s * 1000 for s in samples_s]
    p50, p99 = statistics.median(ms), percentile(ms, 0.99)
    print(f"  {label:<{width}} n={len(ms):<5} p50={p50:8.3f} ms  p99={p99:8.3f} ms")
    return p50, p99


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    """fc-agent as a real process on a free local port, with its state in a
    temporary directory under /tmp (short Unix socket paths). ``extra_args`` are
    added to its command line (e.g. ``["--no-nat"]``)."""

    def __init__(self, firecracker_bin: str, image_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fcb-", dir="/tmp"))
        self.token = secrets.token_urlsafe(16)
        (self.dir / "token").write_text(self.token)
        self.url = f"http://127.0.0.1:{free_port()}"
        with open(self.dir / "agent.log", "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fc_macos.agent.main", "--listen", self.url.removeprefix("http://"),
                 "--token-file", str(self.dir / "token"), "--state-dir", str(self.dir / "state"),
                 "--firecracker-bin", firecracker_bin, "--image-dir", str(image_dir), "--log-level", "WARNING",
                 *extra_args],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def client(self, timeout: float) -> AgentClient:
        return AgentClient(self.url, self.token, timeout=timeout)

    async def wait(self) -> None:
        """Until ``/healthz`` answers; RuntimeError with the agent's log if it does not come up."""
        async with self.client(5) as client:
            for _ in range(200):
                if self.proc.poll() is not None:
                    break
                try:
                    await client.health()
                    return
                except AgentUnreachable:
                    await asyncio.sleep(0.05)
        raise RuntimeError(f"the agent did not come up; see {self.dir / 'agent.log'}:\n"
                           + (self.dir / "agent.log").read_text()[-2000:])

    async def remove_microvms(self) -> None:
        """Delete every microVM the agent still has: microVMs outlive their agent by
        design, so a benchmark that stopped half-way must not leave guests running."""
        async with self.client(60) as client:
            for vm in await client.list_microvms():
                await client.delete_microvm(vm.name, force=True)

    def kill_recorded_vmms(self) -> None:
        """The last resort when the agent cannot delete them: SIGKILL the process
        group of every VMM its state file records that still runs (same start time)."""
        from fc_macos.firecracker.launcher import proc_start_time

        try:
            records = json.loads((self.dir / "state" / "state.json").read_text()).get("microvms", {})
        except (OSError, ValueError):
            return
        for record in records.values():
            pid, start, pgid = record.get("pid"), record.get("start_time"), record.get("pgid")
            if pid and pgid and start is not None and proc_start_time(pid) == start:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    async def shutdown(self) -> None:
        """Every microVM deleted (or killed), the agent stopped, its directory gone.
        Safe to call on any way out, also when the agent never came up."""
        try:
            if self.proc.poll() is None:
                await asyncio.wait_for(self.remove_microvms(), 120)
        except BaseException as exc:  # noqa: BLE001 - cleanup must go on
            print(f"(cleanup: deleting the microVMs failed: {exc!r}; killing their VMMs)", file=sys.stderr)
        finally:
            self.kill_recorded_vmms()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)


def run_benchmark(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, where SIGTERM and SIGHUP cancel ``main`` as Ctrl+C
    does, so its ``finally`` blocks (the cleanup) run on every way out."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    async def guarded() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            raise SystemExit("interrupted; the microVMs were cleaned up") from None

    try:
        asyncio.run(guarded())
    except KeyboardInterrupt:
        raise SystemExit("interrupted; the microVMs were cleaned up") from None
