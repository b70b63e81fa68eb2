"""The progress bar (cp, downloads, uploads): drawn on a terminal for large transfers only, throttled, ended cleanly."""

from __future__ import annotations

import io
import json

import pytest

from fc_macos.cli.common import ClickProgress
from fc_macos.cli.progress_bar import LARGE, ProgressBar, human, time_left


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_large_transfer_on_a_terminal_draws_a_bar() -> None:
    out = Tty()
    bar = ProgressBar("a -> b", stream=out)
    bar(LARGE, 4 * LARGE)
    bar(LARGE + 1, 4 * LARGE)  # within the redraw interval: not drawn again
    bar._drawn_at = 0.0
    bar(4 * LARGE, 4 * LARGE)
    bar.finish()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert " 25% [#######" in text and "100% [" + "#" * 30 + "]" in text and "16.0 MiB / 16.0 MiB" in text


def test_small_transfers_and_pipes_stay_quiet() -> None:
    small = Tty()
    bar = ProgressBar("a -> b", stream=small)
    bar(1000, 2000)
    bar.finish()
    assert small.getvalue() == ""
    piped = io.StringIO()
    bar = ProgressBar("a -> b", stream=piped)
    bar(10 * LARGE, None)
    bar.finish()
    assert piped.getvalue() == ""


def test_unknown_totals_show_bytes_and_rate() -> None:
    out = Tty()
    bar = ProgressBar("web:/srv -> .", stream=out)
    bar(2 * LARGE, None)
    bar.finish()
    assert "web:/srv -> . 8.0 MiB" in out.getvalue() and "/s" in out.getvalue()
    assert (human(512), human(1536), human(3 << 30)) == ("512 B", "1.5 KiB", "3.0 GiB")


def test_time_left_reads_like_a_person_would_say_it() -> None:
    assert time_left(0, 10) == ""
    assert time_left(100, 0) == "--:-- left"
    assert (time_left(120, 10), time_left(1850, 10), time_left(7 * 3600 * 10, 10)) == ("12s left", "3m05s left",
                                                                                       "7h00m left")


def test_click_progress_transfers_as_json_lines_throttled_and_final(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ClickProgress(as_json=True)
    for done in range(0, 10 * LARGE + 1, LARGE):  # all within a second: the first and the last line
        progress.transfer("rootfs.ext4", done, 10 * LARGE)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"event": "transfer", "name": "rootfs.ext4", "done": 0, "total": 10 * LARGE},
                     {"event": "transfer", "name": "rootfs.ext4", "done": 10 * LARGE, "total": 10 * LARGE}]


def test_click_progress_without_a_terminal_prints_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ClickProgress(as_json=False)
    progress.transfer("vmlinux", 8 * LARGE, 8 * LARGE)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")
