"""Log queries and tail offsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from fc_macos.agent.logs import parse_query, tail_offset
from fc_macos.errors import ValidationError


@pytest.mark.parametrize(
    "content, lines, expected",
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
        (b"a\nb\nc", 1, b"c"),
        (b"a\nb\nc\n", 0, b""),
        (b"", 3, b""),
        (b"x" * 100_000 + b"\nlast\n", 1, b"last\n"),
        (b"".join(b"%d\n" % i for i in range(50_000)), 2, b"49998\n49999\n"),
    ],
)
def test_tail_offset(tmp_path: Path, content: bytes, lines: int, expected: bytes) -> None:
    path = tmp_path / "log"
    path.write_bytes(content)
    assert content[tail_offset(path, lines) :] == expected


def test_tail_of_missing_file_is_zero(tmp_path: Path) -> None:
    assert tail_offset(tmp_path / "nope", 10) == 0


def test_parse_query() -> None:
    assert parse_query({}) == ("serial", None, False)
    assert parse_query({"source": "firecracker", "tail": "7", "follow": "1"}) == ("firecracker", 7, True)
    for bad in ({"source": "dmesg"}, {"tail": "-1"}, {"tail": "1.5"}, {"follow": "always"}):
        with pytest.raises(ValidationError):
            parse_query(bad)
