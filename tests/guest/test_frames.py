"""The Python framing and error mapping, without a server."""

from __future__ import annotations

import asyncio

import pytest

from fc_macos.errors import FcMacosError
from fc_macos.guest.protocol import (
    MAX_FRAME,
    Frame,
    FrameDecoder,
    FrameType,
    GuestAgentError,
    GuestCommandNotFound,
    GuestConnectionClosed,
    GuestNotFound,
    GuestProtocolError,
    TreeEntry,
    encode_frame,
    encode_json,
    error_from_response,
    read_frame,
)


def test_encode_frame_bytes() -> None:
    assert encode_frame(FrameType.STDIN, b"hi") == b"\x03\x00\x00\x00\x02hi"
    assert encode_frame(FrameType.STDIN) == b"\x03\x00\x00\x00\x00"
    assert encode_json(FrameType.REQ, {"v": 1, "op": "info"}) == b'\x01\x00\x00\x00\x13{"v":1,"op":"info"}'


def test_frames_up_to_one_mib_only() -> None:
    assert len(encode_frame(FrameType.DATA, b"x" * MAX_FRAME)) == MAX_FRAME + 5
    with pytest.raises(GuestProtocolError, match="exceeds"):
        encode_frame(FrameType.DATA, b"x" * (MAX_FRAME + 1))


def test_surrogate_escaped_names_travel_as_udcxx() -> None:
    assert b'"caf\\udce9"' in encode_json(FrameType.ENTRY, {"path": "caf\udce9"})


def test_decoder_byte_by_byte() -> None:
    wire = encode_frame(FrameType.STDOUT, b"abc") + encode_frame(FrameType.STDOUT) + encode_frame(0x7F, b"?")
    decoder = FrameDecoder()
    frames = [f for i in range(len(wire)) for f in decoder.feed(wire[i:i + 1])]
    assert frames == [Frame(FrameType.STDOUT, b"abc"), Frame(FrameType.STDOUT, b""), Frame(0x7F, b"?")]
    assert decoder.pending == 0


def test_decoder_refuses_an_oversized_header() -> None:
    with pytest.raises(GuestProtocolError):
        FrameDecoder().feed(b"\x09\x00\x10\x00\x01")


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_read_frame_eof_cases() -> None:
    assert await read_frame(reader_of(b"")) is None
    assert await read_frame(reader_of(encode_frame(FrameType.RES, b"{}"))) == Frame(FrameType.RES, b"{}")
    with pytest.raises(GuestConnectionClosed):
        await read_frame(reader_of(b"\x02\x00"))
    with pytest.raises(GuestConnectionClosed):
        await read_frame(reader_of(b"\x02\x00\x00\x00\x05ab"))
    with pytest.raises(GuestProtocolError):
        await read_frame(reader_of(b"\x02\xff\xff\xff\xff"))


def test_frame_json_must_be_an_object() -> None:
    assert Frame(FrameType.RES, b'{"ok":true}').json() == {"ok": True}
    with pytest.raises(GuestProtocolError):
        Frame(FrameType.RES, b"[1]").json()
    with pytest.raises(GuestProtocolError):
        Frame(FrameType.RES, b"\xff").json()


def test_error_mapping_keeps_code_and_message_and_adds_a_hint() -> None:
    err = error_from_response({"ok": False, "error": "command_not_found", "message": "nosuch: not found"})
    assert isinstance(err, GuestCommandNotFound) and isinstance(err, FcMacosError)
    assert (err.code, err.message, err.exit_code) == ("command_not_found", "nosuch: not found", 127)
    assert err.hint and err.to_dict()["error"] == "command_not_found"
    assert isinstance(error_from_response({"error": "not_found", "message": "x"}), GuestNotFound)
    future = error_from_response({"error": "brand_new", "message": "from a newer agent"})
    assert type(future) is GuestAgentError and future.code == "brand_new"


@pytest.mark.parametrize("path", ["", "/abs", "a/../b", "..", "a//b", "a/", "./a"])
def test_tree_entry_refuses_unclean_paths(path: str) -> None:
    with pytest.raises(GuestProtocolError):
        TreeEntry.from_json({"path": path, "type": "file", "mode": 0o644, "mtime": 0, "size": 0})


def test_tree_entry_round_trip() -> None:
    entry = TreeEntry("a/b", "symlink", 0o777, 1.5, target="../c")
    assert TreeEntry.from_json(entry.to_json()) == entry
    assert "size" not in entry.to_json()
