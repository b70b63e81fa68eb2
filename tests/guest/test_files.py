"""stat, get and put through fc_macos.guest.protocol against the real guest agent binary.

The "guest" filesystem is this host's (the agent runs here), so the tests check the
results with os.lstat directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

import pytest

from fc_macos.errors import NotFoundError
from fc_macos.guest.protocol import (
    FrameType,
    GuestBadRequest,
    GuestChecksumMismatch,
    GuestConnection,
    GuestExists,
    GuestNotADirectory,
    GuestNotFound,
    GuestProtocolError,
    TreeEntry,
)
from fc_macos.guest.tree import LocalTreeWriter

from .conftest import RunningAgent

MTIME = 1_600_000_000.25


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_tree(root: Path) -> Path:
    """tree/{bin/run.sh 0755, data 0600, empty, link -> data, sub/deeper/file}, with mtimes."""
    tree = root / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "bin" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (tree / "bin" / "run.sh").chmod(0o755)
    (tree / "data").write_bytes(os.urandom(3000))
    (tree / "data").chmod(0o600)
    (tree / "empty").write_bytes(b"")
    (tree / "sub" / "deeper" / "file").write_text("deep\n")
    os.symlink("data", tree / "link")
    (tree / "sub").chmod(0o750)
    for p in [tree / "bin" / "run.sh", tree / "data", tree / "sub" / "deeper" / "file", tree / "sub" / "deeper",
              tree / "sub", tree / "bin", tree]:
        os.utime(p, (MTIME, MTIME))
    os.utime(tree / "link", (MTIME, MTIME), follow_symlinks=False)
    return tree


def snapshot(tree: Path) -> dict[str, tuple[str, int, float, str | None]]:
    """relative path -> (type, mode, mtime, sha256 or link target)."""
    out: dict[str, tuple[str, int, float, str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames, ""]:
            p = Path(dirpath) / name if name else Path(dirpath)
            st = p.lstat()
            rel = str(p.relative_to(tree.parent))
            if stat.S_ISLNK(st.st_mode):
                kind, extra = "symlink", os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                kind, extra = "dir", None
            else:
                kind, extra = "file", sha256_of(p)
            out[rel] = (kind, stat.S_IMODE(st.st_mode), round(st.st_mtime, 3), extra)
    return out


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_stat_file_dir_symlink_and_missing(guest_agent: RunningAgent, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    async with await guest_agent.connect() as c:
        st = await c.stat(str(tree / "data"))
    assert (st.type, st.mode, st.size, st.mtime, st.target) == ("file", 0o600, 3000, MTIME, None)
    async with await guest_agent.connect() as c:
        assert (await c.stat(str(tree / "link"))).target == "data"
    async with await guest_agent.connect() as c:
        assert (await c.stat(str(tree))).type == "dir"
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestNotFound, match="nope"):
            await c.stat(str(tmp_path / "nope"))


async def test_put_and_get_20_mib_file_with_equal_sha256(guest_agent: RunningAgent, tmp_path: Path) -> None:
    src, guest, back = tmp_path / "big.bin", tmp_path / "guest", tmp_path / "back"
    guest.mkdir()
    back.mkdir()
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    async with await guest_agent.connect() as c:
        result = await c.put_tree(src, str(guest))
    assert (result.entries, result.bytes) == (1, 20 * 1024 * 1024)
    assert sha256_of(guest / "big.bin") == sha256_of(src)
    async with await guest_agent.connect() as c:
        result = await c.get_tree(str(guest / "big.bin"), back)
    assert (result.entries, result.bytes) == (1, 20 * 1024 * 1024)
    assert sha256_of(back / "big.bin") == sha256_of(src)
    assert leftovers(guest) == ["big.bin"] and leftovers(back) == ["big.bin"]


async def test_tree_keeps_modes_mtimes_and_symlinks_both_ways(guest_agent: RunningAgent, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    guest, back = tmp_path / "guest", tmp_path / "back"
    guest.mkdir()
    back.mkdir()
    async with await guest_agent.connect() as c:
        put = await c.put_tree(tree, str(guest))
    assert snapshot(guest / "tree") == snapshot(tree)
    assert put.entries == len(snapshot(tree))
    async with await guest_agent.connect() as c:
        got = await c.get_tree(str(guest / "tree"), back)
    assert snapshot(back / "tree") == snapshot(tree)
    assert (got.entries, got.bytes) == (put.entries, put.bytes)


async def test_get_streams_entries_depth_first(guest_agent: RunningAgent, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    async with await guest_agent.connect() as c:
        stream = await c.get(str(tree))
        paths = [item.path async for item in stream if isinstance(item, TreeEntry)]
    assert stream.stat.type == "dir"
    assert paths == ["tree", "tree/bin", "tree/bin/run.sh", "tree/data", "tree/empty", "tree/link", "tree/sub",
                     "tree/sub/deeper", "tree/sub/deeper/file"]


async def test_put_merges_into_an_existing_directory_and_replaces_files(guest_agent: RunningAgent,
                                                                        tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    guest = tmp_path / "guest"
    (guest / "tree").mkdir(parents=True)
    (guest / "tree" / "keep").write_text("mine")
    (guest / "tree" / "data").write_text("old")
    async with await guest_agent.connect() as c:
        await c.put_tree(tree, str(guest))
    assert (guest / "tree" / "keep").read_text() == "mine"
    assert sha256_of(guest / "tree" / "data") == sha256_of(tree / "data")


async def test_put_into_a_missing_directory_is_not_found(guest_agent: RunningAgent, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestNotFound, match="no/such/dir") as info:
            await c.put_tree(tmp_path / "f", str(tmp_path / "no" / "such" / "dir"))
    assert info.value.hint


async def test_put_into_a_file_is_not_a_directory(guest_agent: RunningAgent, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestNotADirectory):
            await c.put_tree(tmp_path / "f", str(tmp_path / "f"))


async def test_put_over_a_directory_with_a_file_is_exists(guest_agent: RunningAgent, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x").write_text("file")
    (tmp_path / "guest" / "x").mkdir(parents=True)
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestExists):
            await c.put_tree(tmp_path / "src" / "x", str(tmp_path / "guest"))
    assert leftovers(tmp_path / "guest") == ["x"]


async def wait_until_clean(directory: Path, expected: list[str]) -> None:
    """The server's connection process cleans up once it sees the cut: give it a moment."""
    for _ in range(100):
        if leftovers(directory) == expected:
            return
        await asyncio.sleep(0.05)
    assert leftovers(directory) == expected


async def test_put_cut_off_midway_leaves_nothing_new(guest_agent: RunningAgent, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "existing").write_text("keep me")
    # A new directory with one complete file and one half-sent file; then the client vanishes.
    c = await guest_agent.connect()
    put = await c.begin_put(str(guest))
    await put.entry(TreeEntry("newdir", "dir", 0o755, MTIME))
    await put.entry(TreeEntry("newdir/done", "file", 0o644, MTIME, size=5))
    await put.data(b"hello")
    await put.file_end()
    await put.entry(TreeEntry("newdir/half", "file", 0o644, MTIME, size=10 << 20))
    await put.data(os.urandom(1 << 20))
    await c.close()
    await wait_until_clean(guest, ["existing"])
    # A single file replacing an existing one, cut off: the old content stays.
    c = await guest_agent.connect()
    put = await c.begin_put(str(guest))
    await put.entry(TreeEntry("existing", "file", 0o644, MTIME, size=1 << 20))
    await put.data(b"x" * 1000)
    await c.close()
    await wait_until_clean(guest, ["existing"])
    assert (guest / "existing").read_text() == "keep me"


async def test_put_with_a_wrong_checksum_is_refused_and_undone(guest_agent: RunningAgent, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    async with await guest_agent.connect() as c:
        await c.request("put", path=str(guest))
        await c.send_json(FrameType.ENTRY, TreeEntry("f", "file", 0o644, MTIME, size=3).to_json())
        await c.send(FrameType.DATA, b"abc")
        await c.send_json(FrameType.FILE_END, {"sha256": "0" * 64})
        result = (await c.receive()).json()
    assert result["ok"] is False and result["error"] == "checksum_mismatch"
    assert leftovers(guest) == []


async def test_put_refuses_paths_that_climb_out(guest_agent: RunningAgent, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    async with await guest_agent.connect() as c:
        put = await c.begin_put(str(guest))
        with pytest.raises(GuestBadRequest, match=r"\.\."):
            await put.entry(TreeEntry("../evil", "file", 0o644, MTIME, size=1))
            await put.data(b"x")
            await put.file_end()
            await put.finish()
    assert not (tmp_path / "evil").exists()


async def test_non_utf8_names_survive_the_round_trip(guest_agent: RunningAgent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    name = os.fsdecode(b"caf\xe9-\xff.txt")  # Latin-1 bytes: not UTF-8
    (src / name).write_text("bytes")
    guest, back = tmp_path / "guest", tmp_path / "back"
    guest.mkdir()
    back.mkdir()
    async with await guest_agent.connect() as c:
        await c.put_tree(src, str(guest))
    assert os.listdir(os.fsencode(guest / "src")) == [b"caf\xe9-\xff.txt"]
    async with await guest_agent.connect() as c:
        await c.get_tree(str(guest / "src"), back)
    assert (back / "src" / name).read_text() == "bytes"


async def test_get_of_missing_path_and_of_root(guest_agent: RunningAgent, tmp_path: Path) -> None:
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestNotFound):
            await c.get(str(tmp_path / "missing"))
    async with await guest_agent.connect() as c:
        with pytest.raises(GuestBadRequest):
            await c.get("/")


async def test_get_into_a_missing_local_directory_is_not_found(guest_agent: RunningAgent, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    async with await guest_agent.connect() as c:
        with pytest.raises(NotFoundError, match="nowhere"):
            await c.get_tree(str(tmp_path / "f"), tmp_path / "nowhere")


def test_local_writer_never_writes_through_a_symlink_the_tree_placed(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    writer = LocalTreeWriter(dest)
    writer.begin(TreeEntry("top", "dir", 0o755, MTIME))
    writer.begin(TreeEntry("top/link", "symlink", 0o777, MTIME, target=str(outside)))
    with pytest.raises(GuestProtocolError, match="without its directory"):
        writer.begin(TreeEntry("top/link/evil", "file", 0o644, MTIME, size=1))
    writer.abort()
    assert leftovers(outside) == [] and leftovers(dest) == []


def test_local_writer_abort_removes_a_half_received_tree(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("old")
    writer = LocalTreeWriter(tmp_path)
    writer.begin(TreeEntry("new", "dir", 0o755, MTIME))
    writer.begin(TreeEntry("new/f", "file", 0o644, MTIME, size=3))
    writer.write(b"abc")
    writer.begin(TreeEntry("keep", "file", 0o644, MTIME, size=3))
    writer.write(b"new")
    writer.end_file()
    writer.abort()
    assert leftovers(tmp_path) == ["keep"] and (tmp_path / "keep").read_text() == "old"
