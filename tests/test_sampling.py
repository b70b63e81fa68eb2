"""RecentSamples: which earlier sample the last interval starts at."""

from __future__ import annotations

from fc_macos.sampling import RecentSamples


def test_no_base_until_a_sample_is_old_enough() -> None:
    samples = RecentSamples(window_s=1.0, min_interval_s=0.5, spacing_s=0.1)
    assert samples.add(10.0, (0.0,)) is None
    assert samples.add(10.3, (1.0,)) is None  # 0.3 s: too short to measure
    assert samples.add(10.6, (2.0,)) == (10.0, (0.0,))  # the oldest, 0.6 s back


def test_base_is_the_newest_sample_at_least_0_8_s_old() -> None:
    samples = RecentSamples(window_s=1.0, min_interval_s=0.5, spacing_s=0.1)
    for i in range(24):  # polled every 0.25 s
        samples.add(i * 0.25, (float(i),))
    base = samples.add(6.0, (24.0,))
    assert base is not None and base[0] == 5.0  # not 0.0 (the average since start), not 5.75 (too recent)
    assert len(samples) <= 6


def test_polling_once_a_second_with_jitter_still_measures_the_last_second() -> None:
    samples = RecentSamples()
    samples.add(0.0, (0.0,))
    assert samples.add(0.99, (1.0,)) == (0.0, (0.0,))
    assert samples.add(1.98, (2.0,)) == (0.99, (1.0,))


def test_close_calls_add_no_samples() -> None:
    samples = RecentSamples(spacing_s=0.1)
    for i in range(100):
        samples.add(5.0 + i * 0.001, (float(i),))
    assert len(samples) == 1
