"""Frames of the guest agent protocol (version 1): ``type`` (1 byte), ``length`` (4 bytes,
big-endian, at most :data:`MAX_FRAME`), ``payload``.

Pure functions plus :func:`read_frame` for an asyncio stream and :class:`FrameDecoder` for
bytes that arrive in arbitrary pieces (a WebSocket relay, a test).
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import GuestConnectionClosed, GuestProtocolError

MAX_FRAME = 1 << 20
"""The largest payload a frame may carry (1 MiB); longer frames are a protocol error."""

HEADER = struct.Struct(">BI")


class FrameType(IntEnum):
    """The frame types of protocol version 1 (see docs/guest-agent-protocol.md)."""

    REQ = 0x01
    RES = 0x02
    STDIN = 0x03
    STDOUT = 0x04
    STDERR = 0x05
    CTRL = 0x06
    EXIT = 0x07
    ENTRY = 0x08
    DATA = 0x09
    FILE_END = 0x0A
    END = 0x0B
    RESULT = 0x0C


JSON_TYPES = frozenset({FrameType.REQ, FrameType.RES, FrameType.CTRL, FrameType.EXIT, FrameType.ENTRY,
                        FrameType.FILE_END, FrameType.END, FrameType.RESULT})


@dataclass(frozen=True)
class Frame:
    """One frame. ``type`` is a :class:`FrameType` for known types, else the raw int."""

    type: int
    payload: bytes = b""

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object; raises GuestProtocolError if it is not one."""
        try:
            value = json.loads(self.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise GuestProtocolError(f"{_name(self.type)} frame is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise GuestProtocolError(f"{_name(self.type)} frame is not a JSON object")
        return value


def _name(type_: int) -> str:
    try:
        return FrameType(type_).name
    except ValueError:
        return f"0x{type_:02x}"


def encode_frame(type_: int, payload: bytes = b"") -> bytes:
    """The wire bytes of one frame; raises GuestProtocolError past :data:`MAX_FRAME`."""
    if len(payload) > MAX_FRAME:
        raise GuestProtocolError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(type_, len(payload)) + payload


def encode_json(type_: int, obj: dict[str, Any]) -> bytes:
    """A frame whose payload is ``obj`` as compact UTF-8 JSON.

    Strings holding lone surrogates (file names from :func:`os.fsdecode` that are not UTF-8)
    are written as ``\\udcXX`` escapes, which the guest agent turns back into the raw bytes.
    """
    return encode_frame(type_, json.dumps(obj, separators=(",", ":")).encode("ascii"))


def _to_frame(type_: int, payload: bytes) -> Frame:
    try:
        return Frame(FrameType(type_), payload)
    except ValueError:
        return Frame(type_, payload)


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """Reads one frame; ``None`` at a clean end of stream (between frames).

    Raises GuestConnectionClosed when the stream ends inside a frame, GuestProtocolError for
    a frame longer than :data:`MAX_FRAME`.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise GuestConnectionClosed("the guest agent's connection ended inside a frame header") from exc
    type_, length = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise GuestProtocolError(f"{_name(type_)} frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    try:
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise GuestConnectionClosed(f"the guest agent's connection ended inside a {_name(type_)} frame") from exc
    return _to_frame(type_, payload)


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes as they come, get the complete frames back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Adds ``data``; returns the frames it completed (maybe none).

        Raises GuestProtocolError for an oversized frame (the decoder is then unusable).
        """
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= HEADER.size:
            type_, length = HEADER.unpack_from(self._buf)
            if length > MAX_FRAME:
                raise GuestProtocolError(f"{_name(type_)} frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append(_to_frame(type_, bytes(self._buf[HEADER.size:end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that do not make a complete frame yet (0 at a frame boundary)."""
        return len(self._buf)


__all__ = ["HEADER", "MAX_FRAME", "Frame", "FrameDecoder", "FrameType", "encode_frame", "encode_json", "read_frame"]
