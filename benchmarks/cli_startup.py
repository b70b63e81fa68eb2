#!/usr/bin/env python3
"""How long the ``fc-macos`` command takes to start, against the bare interpreter.

    python3 benchmarks/cli_startup.py [--runs 9] [--program PATH]

Times ``python3 -c pass`` and the CLI commands below with the same interpreter
(``sys.executable``), each ``--runs`` times interleaved, and prints the medians
and their ratios. The CLI runs as its console script does (``from
fc_macos.cli.main import main``), so the figure is the package's own start, not
that of a launcher in front of it; ``--program`` times an installed
``fc-macos`` script instead.

Target (issue 8): each command at most 4x ``python3 -c pass``. Exits 1 if a
command misses it. Needs only an installed fc-macos (no test dependencies).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_RATIO = 4.0
COMMANDS = (("--version",), ("microvm", "list", "--help"))
CONSOLE_SCRIPT = "import sys; from fc_macos.cli.main import main; sys.exit(main())"


def elapsed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="runs per command (the median counts)")
    parser.add_argument("--program", help="time this fc-macos executable instead of the package's entry point")
    args = parser.parse_args()

    baseline_argv = [sys.executable, "-c", "pass"]
    prefix = [args.program] if args.program else [sys.executable, "-c", CONSOLE_SCRIPT]
    argvs = {"python3 -c pass": baseline_argv}
    argvs.update({"fc-macos " + " ".join(cmd): [*prefix, *cmd] for cmd in COMMANDS})
    for argv in argvs.values():  # warm the page cache and the .pyc files
        elapsed(argv)
    times: dict[str, list[float]] = {label: [] for label in argvs}
    for _ in range(args.runs):
        for label, argv in argvs.items():
            times[label].append(elapsed(argv))

    base = statistics.median(times["python3 -c pass"])
    print(f"interpreter: {sys.executable} ({sys.version.split()[0]}), median of {args.runs} runs")
    print(f"{'python3 -c pass':<32} {base * 1000:7.1f} ms")
    missed = 0
    for label in list(argvs)[1:]:
        median = statistics.median(times[label])
        ratio = median / base
        verdict = "ok" if ratio <= TARGET_RATIO else f"OVER the {TARGET_RATIO:g}x target"
        missed += ratio > TARGET_RATIO
        print(f"{label:<32} {median * 1000:7.1f} ms  {ratio:4.1f}x  {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
