"""The benchmarks run from a plain install (no test-only imports) and clean up on SIGTERM."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_no_benchmark_imports_the_tests(path: Path) -> None:
    test_imports = sorted(m for m in imported_modules(path) if m == "tests" or m.startswith("tests."))
    assert not test_imports, f"{path.name} imports {test_imports}: a benchmark must run from a plain install"


def package_only_env() -> dict[str, str]:
    """The package importable, the checkout's root not: as after ``pip install .``."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


@pytest.mark.parametrize("name", ["agent_overhead.py", "guest_channel.py"])
def test_benchmark_help_runs_outside_the_checkout(name: str, short_tmp: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--help"], cwd=short_tmp,
                            env=package_only_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--image-dir" in result.stdout and "--firecracker-bin" in result.stdout


def test_sigterm_runs_the_benchmarks_cleanup(short_tmp: Path) -> None:
    script = short_tmp / "bench.py"
    script.write_text(
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r})\n"
        "from _harness import run_benchmark\n"
        "async def main():\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "    finally:\n"
        "        await asyncio.sleep(0)\n"
        "        print('cleaned up', flush=True)\n"
        "run_benchmark(main())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], env=package_only_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert out == "cleaned up\n" and proc.returncode == 1, (out, err)
    assert "interrupted" in err


def test_a_stalled_transfer_is_aborted_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from guest_channel import bounded

    async def scenario() -> None:
        released = asyncio.Event()

        async def stuck() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                await released.wait()  # a graceful close waits for a peer that stopped reading

        await bounded(stuck(), "the transfer", abort=released.set, timeout=0.1)

    with pytest.raises(RuntimeError, match="the transfer did not finish within 0 s"):
        asyncio.run(asyncio.wait_for(scenario(), 10))
