"""A one-line progress bar on stderr for long transfers (``fc-macos cp``,
downloads and uploads reported through ``Progress.transfer``): bytes, rate, time left.

Shown only when stderr is a terminal and the transfer is large (or of unknown
size and already large); otherwise it stays silent, so scripts and pipes see
nothing. Redrawn at most ten times a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

LARGE = 4 * 1024 * 1024
REDRAW_S = 0.1
WIDTH = 30


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def time_left(remaining: float, rate: float) -> str:
    """``remaining`` bytes at ``rate`` bytes/s as "12s left", "3m05s left" ("" when done)."""
    if remaining <= 0:
        return ""
    if rate <= 0:
        return "--:-- left"
    seconds = int(remaining / rate + 0.5)
    if seconds < 60:
        return f"{seconds}s left"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s left"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m left"


class ProgressBar:
    """``bar(done, total)`` as a progress callback; ``bar.finish()`` at the end."""

    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self.shown = False
        self._drawn_at = 0.0
        self._last: tuple[int, int | None] = (0, None)

    def __call__(self, done: int, total: int | None) -> None:
        self._last = (done, total)
        if not self.enabled or max(done, total or 0) < LARGE:
            return
        now = time.monotonic()
        if now - self._drawn_at >= REDRAW_S:
            self._drawn_at = now
            self._draw(done, total, now)

    def _draw(self, done: int, total: int | None, now: float) -> None:
        rate = done / max(now - self.started, 1e-6)
        if total:
            fraction = min(done / total, 1.0)
            filled = int(fraction * WIDTH)
            line = (f"{self.label} {fraction * 100:3.0f}% [{'#' * filled}{' ' * (WIDTH - filled)}] "
                    f"{human(done)} / {human(total)}  {human(rate)}/s  {time_left(total - done, rate)}")
        else:
            line = f"{self.label} {human(done)}  {human(rate)}/s"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        """Draw the final state and end the line (only if the bar was shown)."""
        if self.shown:
            done, total = self._last
            self._draw(done, total if total is None else max(total, done), time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
