"""The transfer checksum (crc32 or sha256) of get and put: through fc_macos.guest.protocol
against the real guest agent binary, at the frame level against it, and against a guest
agent that predates the choice (a stand-in at the socket: it answers as the old C code
did, without ``checksum``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fc_macos.errors import ValidationError
from fc_macos.guest.checksum import Crc32
from fc_macos.guest.frames import encode_frame, encode_json, read_frame
from fc_macos.guest.protocol import (
    CHECKSUMS,
    FrameType,
    GuestBadRequest,
    GuestChecksumMismatch,
    GuestConnection,
    GuestProtocolError,
    TreeEntry,
    open_unix,
)
from fc_macos.guest.transfer import GetStream
from fc_macos.guest.tree import GuestStat

from .conftest import RunningAgent

MTIME = 1_600_000_000.25
DATA = b"abc"
SUMS = {"crc32": f"{zlib.crc32(DATA):08x}", "sha256": hashlib.sha256(DATA).hexdigest()}


def test_crc32_is_zlibs_over_any_split() -> None:
    data = os.urandom(5000)
    for cut in (0, 1, 7, 8, 9, 4095, 5000):
        crc = Crc32()
        crc.update(data[:cut])
        crc.update(data[cut:])
        assert crc.hexdigest() == f"{zlib.crc32(data):08x}"
    empty = Crc32()
    assert empty.hexdigest() == "00000000"
    empty.update(b"123456789")
    assert empty.hexdigest() == "cbf43926"


@pytest.mark.parametrize("checksum", CHECKSUMS)
async def test_put_and_get_round_trip_with_each_checksum(guest_agent: RunningAgent, tmp_path: Path,
                                                         checksum: str) -> None:
    src, guest, back = tmp_path / "src", tmp_path / "guest", tmp_path / "back"
    (src / "sub").mkdir(parents=True)
    guest.mkdir()
    back.mkdir()
    files = {"big.bin": os.urandom(3 * 1024 * 1024 + 5), "sub/small": b"x", "empty": b""}
    for name, data in files.items():
        (src / name).write_bytes(data)
    async with await guest_agent.connect() as c:
        session = await c.begin_put(str(guest), checksum=checksum)
        assert session.checksum == checksum  # the guest's RES named it
    async with await guest_agent.connect() as c:
        result = await c.put_tree(src, str(guest), checksum=checksum)
    assert (result.entries, result.bytes) == (5, sum(map(len, files.values())))
    async with await guest_agent.connect() as c:
        stream = await c.get(str(guest / "src"), checksum=checksum)
        assert stream.checksum == checksum
        items = [item async for item in stream]
    assert b"".join(i for i in items if isinstance(i, bytes)) == files["big.bin"] + files["empty"] + files["sub/small"]
    async with await guest_agent.connect() as c:
        await c.get_tree(str(guest / "src"), back, checksum=checksum)
    for name, data in files.items():
        assert (guest / "src" / name).read_bytes() == data
        assert (back / "src" / name).read_bytes() == data


async def test_the_guest_answers_the_checksum_it_uses_sha256_when_none_is_asked(conn: GuestConnection,
                                                                                tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(DATA)
    res = await conn.request("get", path=str(tmp_path / "f"))  # a client that predates the choice
    assert res["checksum"] == "sha256"
    frames = [await conn.receive() for _ in range(4)]  # ENTRY, DATA, FILE_END, END
    assert frames[2].type == FrameType.FILE_END and frames[2].json() == {"sha256": SUMS["sha256"]}


async def test_get_file_end_carries_crc32_in_lowercase_hex(conn: GuestConnection, tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    assert set(f"{zlib.crc32(data):08x}") & set("abcdef")  # a CRC whose hex has letters
    (tmp_path / "f").write_bytes(data)
    res = await conn.request("get", path=str(tmp_path / "f"), checksum="crc32")
    assert res["checksum"] == "crc32"
    frames = [await conn.receive() for _ in range(4)]
    assert frames[2].json() == {"crc32": f"{zlib.crc32(data):08x}"}


async def put_one_file(guest_agent: RunningAgent, guest: Path, checksum: str | None,
                       file_end: dict[str, Any]) -> dict[str, Any]:
    """A put of one 3-byte file, at the frame level; the RESULT's body."""
    async with await guest_agent.connect() as c:
        res = await c.request("put", path=str(guest), checksum=checksum)
        assert res["checksum"] == (checksum or "sha256")
        await c.send_json(FrameType.ENTRY, TreeEntry("f", "file", 0o644, MTIME, size=3).to_json())
        await c.send(FrameType.DATA, DATA)
        await c.send_json(FrameType.FILE_END, file_end)
        await c.send_json(FrameType.END, {"entries": 1, "bytes": 3})
        return (await c.receive()).json()


async def test_put_checks_crc32_and_refuses_a_wrong_one_or_the_wrong_key(guest_agent: RunningAgent,
                                                                         tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    assert (await put_one_file(guest_agent, guest, "crc32", {"crc32": SUMS["crc32"].upper()}))["ok"] is True
    assert (guest / "f").read_bytes() == DATA
    (guest / "f").unlink()
    for checksum, file_end, error, needle in (
        ("crc32", {"crc32": "00000000"}, "checksum_mismatch", SUMS["crc32"]),
        ("crc32", {"sha256": SUMS["sha256"]}, "bad_request", "crc32"),
        (None, {"crc32": SUMS["crc32"]}, "bad_request", "sha256"),  # no checksum asked: sha256, as before
    ):
        result = await put_one_file(guest_agent, guest, checksum, file_end)
        assert (result["ok"], result["error"]) == (False, error), result
        assert needle in result["message"]
        assert os.listdir(guest) == []  # nothing left, not even a temporary


@pytest.mark.parametrize("op", ["get", "put"])
async def test_an_unknown_checksum_is_bad_request_naming_the_accepted_ones(guest_agent: RunningAgent,
                                                                          tmp_path: Path, op: str) -> None:
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestBadRequest, match='"crc32" or "sha256"'):
            await c.request(op, path=str(tmp_path), checksum="md5")
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestBadRequest):
            await c.request(op, path=str(tmp_path), checksum=32)
    async with await guest_agent.connect() as c:  # refused here, before a guest could ignore it
        with pytest.raises(ValidationError, match="md5"):
            await (c.get(str(tmp_path), checksum="md5") if op == "get" else c.begin_put(str(tmp_path), checksum="md5"))


async def test_info_lists_the_checksums(conn: GuestConnection) -> None:
    assert (await conn.info())["checksums"] == ["crc32", "sha256"]


def fed(checksum: str, *frames: bytes) -> GetStream:
    """A get's stream of ``frames``, checked as ``checksum``."""
    reader = asyncio.StreamReader()
    for frame in frames:
        reader.feed_data(frame)
    reader.feed_eof()
    return GetStream(GuestConnection(reader, None), GuestStat("file", 0o644, 3, 1.0, None), checksum)  # type: ignore[arg-type]


@pytest.mark.parametrize("checksum", CHECKSUMS)
async def test_get_stream_checks_the_checksum_the_guest_named(checksum: str) -> None:
    entry = encode_json(FrameType.ENTRY, {"path": "f", "type": "file", "mode": 0o644, "mtime": 1, "size": 3})
    data, end = encode_frame(FrameType.DATA, DATA), encode_json(FrameType.END, {"entries": 1, "bytes": 3})
    good = encode_json(FrameType.FILE_END, {checksum: SUMS[checksum]})
    assert [i async for i in fed(checksum, entry, data, good, end)][1] == DATA
    other = "sha256" if checksum == "crc32" else "crc32"
    for file_end, error in (({checksum: "0" * len(SUMS[checksum])}, GuestChecksumMismatch),
                            ({other: SUMS[other]}, GuestProtocolError)):
        with pytest.raises(error, match=checksum):
            [i async for i in fed(checksum, entry, data, encode_json(FrameType.FILE_END, file_end), end)]


# -- a guest agent that predates the choice -------------------------------------------------


@pytest.fixture
async def old_guest_agent(short_tmp: Path) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for a guest agent before the checksum choice, on a Unix socket: it ignores
    ``checksum``, answers get (of a 3-byte file ``f``) and put without it, sends and expects
    sha256. Yields the socket path and the frames' JSON bodies it received."""
    received: list[dict[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_frame(reader)
        assert req is not None
        received.append(req.json())
        if req.json()["op"] == "get":
            writer.write(encode_json(FrameType.RES, {"ok": True, "type": "file", "mode": 0o644, "size": 3,
                                                     "mtime": 1.0, "target": None})
                         + encode_json(FrameType.ENTRY, {"path": "f", "type": "file", "mode": 0o644, "mtime": 1.0,
                                                         "size": 3})
                         + encode_frame(FrameType.DATA, DATA)
                         + encode_json(FrameType.FILE_END, {"sha256": SUMS["sha256"]})
                         + encode_json(FrameType.END, {"entries": 1, "bytes": 3}))
        else:
            writer.write(encode_json(FrameType.RES, {"ok": True}))
            while (frame := await read_frame(reader)) is not None:
                if frame.type != FrameType.DATA:
                    received.append(frame.json())
                if frame.type == FrameType.END:
                    ok = received[-2] == {"sha256": SUMS["sha256"]}
                    writer.write(encode_json(FrameType.RESULT, {"ok": True, "entries": 1, "bytes": 3} if ok else
                                             {"ok": False, "error": "bad_request", "message": "needs sha256"}))
                    break
        await writer.drain()
        writer.close()

    path = str(short_tmp / "old.sock")
    server = await asyncio.start_unix_server(serve, path)
    yield path, received
    server.close()
    await server.wait_closed()


async def test_an_older_guest_agent_gets_sha256(old_guest_agent: tuple[str, list[dict[str, Any]]],
                                                tmp_path: Path) -> None:
    path, received = old_guest_agent
    async with await open_unix(path) as c:
        stream = await c.get("/f")
        assert stream.checksum == "sha256"
        assert [i async for i in stream][1] == DATA
    assert received[-1]["checksum"] == "crc32"  # asked for, not answered
    (tmp_path / "f").write_bytes(DATA)
    async with await open_unix(path) as c:
        result = await c.put_tree(tmp_path / "f", "/dest")
    assert (result.entries, result.bytes) == (1, 3)
    assert received[-4]["checksum"] == "crc32" and received[-2] == {"sha256": SUMS["sha256"]}
