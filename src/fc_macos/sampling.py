"""Rates over the last interval from ever-growing counters (CPU ticks, jiffies).

:class:`RecentSamples` keeps a short history of ``(time, counters)`` and
answers which earlier sample the current interval starts at: the newest one at
least ``window_s`` (0.8 s) old, else the oldest one if at least
``min_interval_s`` (0.5 s) old, else none (the caller falls back to an average
since start). So a caller polling once a second sees the second since its
previous poll (with room for jitter), however many other callers poll, and no
interval is so short that 10 ms CPU ticks make it noise.
"""

from __future__ import annotations

from collections import deque

Sample = tuple[float, tuple[float, ...]]


class RecentSamples:
    """Not thread-safe; one instance per counted thing. At most one sample is
    kept per ``spacing_s``, and none older than needed, so it stays short."""

    def __init__(self, window_s: float = 0.8, min_interval_s: float = 0.5, spacing_s: float = 0.1) -> None:
        self.window_s = window_s
        self.min_interval_s = min_interval_s
        self.spacing_s = spacing_s
        self._samples: deque[Sample] = deque()

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, now: float, counters: tuple[float, ...]) -> Sample | None:
        """Record ``counters`` at ``now`` (monotonic seconds); return the sample the
        interval ending now starts at, or None when none is old enough yet."""
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= self.window_s:
            samples.popleft()  # samples[1] is old enough to start the interval
        base = samples[0] if samples and now - samples[0][0] >= self.min_interval_s else None
        if not samples or now - samples[-1][0] >= self.spacing_s:
            samples.append((now, counters))
        return base
