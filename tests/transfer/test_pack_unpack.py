"""pack -> unpack round trips on this machine (no agent involved): modes,
mtimes and symlinks survive, big files stream, and a broken or interrupted
stream leaves nothing at the destination."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fc_macos.errors import ConflictError, FcMacosError
from fc_macos.transfer.pack import pack, tree_size
from fc_macos.transfer.unpack import TEMP_PREFIX, unpack


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(tree / "run.sh", 0o4755)
    (tree / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    os.chmod(tree / "sub" / "data.bin", 0o600)
    os.symlink("sub/data.bin", tree / "link")
    os.symlink("/no/such/target", tree / "dangling")
    os.chmod(tree / "sub" / "deeper", 0o1777)
    os.utime(tree / "sub" / "data.bin", (1_600_000_000, 1_600_000_000))
    os.utime(tree / "sub", (1_500_000_000, 1_500_000_000))
    return tree


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", oct(info.st_mode & 0o7777), int(info.st_mtime))
        else:
            out[rel] = ("file", oct(info.st_mode & 0o7777), int(info.st_mtime),
                        hashlib.sha256(path.read_bytes()).hexdigest())
    return out


async def test_a_tree_round_trips_with_modes_mtimes_and_symlinks(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tmp_path / "out").mkdir()
    done: list[int] = []
    result = await unpack(pack(tree, "renamed"), tmp_path / "out" / "renamed", progress=done.append)
    assert snapshot(tmp_path / "out" / "renamed") == snapshot(tree)
    assert result.entries == 7 and result.bytes == 300_000 + len("#!/bin/sh\necho hi\n")
    assert done and done[-1] == result.bytes
    assert os.listdir(tmp_path / "out") == ["renamed"]  # no temporary left


async def test_a_big_file_streams_and_overwrites(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as fh:
        for _ in range(20):
            fh.write(os.urandom(1 << 20))
    target = tmp_path / "copy"
    target.write_text("old")
    sent: list[int] = []
    await unpack(pack(big, "copy", progress=sent.append), target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert len(sent) > 10 and sent[-1] >= 20 << 20  # many chunks, not one buffer
    assert abs(tree_size(big) - sent[-1]) < 64 * 1024


async def test_contents_merge_into_an_existing_directory(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "keep.txt").write_text("kept")
    await unpack(pack(tree, "tree"), dest)
    assert (dest / "keep.txt").read_text() == "kept"
    assert (dest / "sub" / "data.bin").read_bytes() == (tree / "sub" / "data.bin").read_bytes()
    assert os.readlink(dest / "link") == "sub/data.bin"


async def test_a_relative_target_lands_beside_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src.txt").write_text("text")
    monkeypatch.chdir(tmp_path)
    await unpack(pack(Path("src.txt"), "copy.txt"), Path("copy.txt"))
    assert (tmp_path / "copy.txt").read_text() == "text"
    assert sorted(os.listdir(tmp_path)) == ["copy.txt", "src.txt"]


async def test_a_directory_onto_a_file_changes_nothing(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    target = tmp_path / "file"
    target.write_text("mine")
    with pytest.raises(ConflictError, match="cannot overwrite the non-directory"):
        await unpack(pack(tree, "file"), target)
    assert target.read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["file", "tree"]


async def _cut(chunks: AsyncIterator[bytes], after: int) -> AsyncIterator[bytes]:
    sent = 0
    async for chunk in chunks:
        yield chunk[: max(0, after - sent)]
        sent += len(chunk)
        if sent >= after:
            raise ConnectionResetError("the agent went away")


async def test_a_stream_cut_midway_leaves_nothing(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(ConnectionResetError):
        await unpack(_cut(pack(tree, "tree"), 100_000), tmp_path / "out" / "tree")
    assert os.listdir(tmp_path / "out") == []


async def test_a_truncated_archive_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    data = b"".join([chunk async for chunk in pack(make_tree(tmp_path), "tree")])

    async def short() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]

    (tmp_path / "out").mkdir()
    with pytest.raises(FcMacosError, match="broke off"):
        await unpack(short(), tmp_path / "out" / "tree")
    assert os.listdir(tmp_path / "out") == []


async def test_cancelling_midway_removes_the_temporary(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        info = tarfile.TarInfo("big")
        info.size = 10 << 20
        header = io.BytesIO()
        with tarfile.open(fileobj=header, mode="w") as tar:
            tar.addfile(info, io.BytesIO(b"x" * info.size))
        raw = header.getvalue()
        yield raw[:2 << 20]
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(unpack(slow(), tmp_path / "big"))
    await started.wait()
    for _ in range(100):  # the worker has begun writing the file
        if any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir()):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert os.listdir(tmp_path) == []


async def test_paths_leaving_the_tree_are_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        top = tarfile.TarInfo("top")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        evil = tarfile.TarInfo("top/../../escape")
        tar.addfile(evil, io.BytesIO(b""))

    async def chunks() -> AsyncIterator[bytes]:
        yield buf.getvalue()

    with pytest.raises(FcMacosError, match="unexpected path"):
        await unpack(chunks(), tmp_path / "top")
    assert os.listdir(tmp_path) == []
