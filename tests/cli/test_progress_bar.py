"""The cp progress bar: drawn on a terminal for large transfers only, throttled, ended cleanly."""

from __future__ import annotations

import io

from fc_macos.cli.progress_bar import LARGE, ProgressBar, human


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
