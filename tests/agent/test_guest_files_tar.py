"""Tar streams without directory members into a guest (``tar cf - a/b/c.txt``, tools that
list only files): fc-agent's tar -> put conversion adds the missing directories, like GNU tar
and ``docker cp`` when they extract, against the real fc-guest-agent on this host behind a
stand-in for Firecracker's hybrid vsock socket (no guest boots)."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from pathlib import Path

import pytest

from fc_macos.agent import guest_files
from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.guest.tree import TransferResult
from tests.agent.test_guest_channel import Body, guest, vsock  # noqa: F401  (fixtures)
from tests.guest.conftest import agent_binary, guest_agent  # noqa: F401  (fixtures)

FILE_MTIME = 1_650_000_000


def tar_of(*members: tuple[str, str, int, bytes]) -> bytes:
    """A tar of exactly ``members`` (name, "file"/"dir"/"hardlink", mode, data), nothing added."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, mode, data in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, FILE_MTIME
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, "elsewhere"
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


async def put(guest: GuestAgent, dest: Path, data: bytes) -> TransferResult:  # noqa: F811
    conn = await guest.open()
    try:
        session = await conn.begin_put(str(dest))
        return await guest_files.tar_to_tree(
            guest_files.TarReader(Body(data)), session, guest_files.guest_has_dir(guest.open, str(dest)))
    finally:
        await conn.close()


def mode_mtime(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_mode & 0o7777, int(st.st_mtime)


async def test_only_file_members_nested_three_deep(guest: GuestAgent, short_tmp: Path) -> None:  # noqa: F811
    dest = short_tmp / "dest"
    dest.mkdir()
    data = tar_of(("a/b/c/deep.txt", "file", 0o640, b"deep\n"), ("a/b/side.txt", "file", 0o644, b"side\n"),
                  ("x/y.txt", "file", 0o600, b"y\n"), ("top.txt", "file", 0o644, b"top\n"))  # fmt: skip
    result = await put(guest, dest, data)
    assert (dest / "a/b/c/deep.txt").read_bytes() == b"deep\n"
    assert (dest / "a/b/side.txt").read_bytes() == b"side\n"
    assert (dest / "x/y.txt").read_bytes() == b"y\n" and (dest / "top.txt").read_bytes() == b"top\n"
    assert mode_mtime(dest / "a/b/c/deep.txt") == (0o640, FILE_MTIME)
    for made in ("a", "a/b", "a/b/c", "x"):  # made like tar makes them: 0755, the file's mtime
        assert mode_mtime(dest / made) == (0o755, FILE_MTIME), made
    assert (result.entries, result.bytes) == (8, 16)  # 4 files and the 4 directories they needed


async def test_a_mix_keeps_the_directories_the_tar_has(guest: GuestAgent, short_tmp: Path) -> None:  # noqa: F811
    dest = short_tmp / "dest"
    dest.mkdir()
    data = tar_of(("a/", "dir", 0o700, b""), ("a/b/c/f.txt", "file", 0o644, b"f"),
                  ("a/b/c/d/", "dir", 0o711, b""), ("a/b/c/d/g.txt", "file", 0o644, b"g"))  # fmt: skip
    await put(guest, dest, data)
    assert mode_mtime(dest / "a") == (0o700, FILE_MTIME)
    assert mode_mtime(dest / "a/b")[0] == mode_mtime(dest / "a/b/c")[0] == 0o755
    assert mode_mtime(dest / "a/b/c/d")[0] == 0o711
    assert (dest / "a/b/c/f.txt").read_bytes() == b"f" and (dest / "a/b/c/d/g.txt").read_bytes() == b"g"


async def test_directories_the_guest_has_are_joined_not_changed(guest: GuestAgent, short_tmp: Path) -> None:  # noqa: F811
    dest = short_tmp / "dest"
    (dest / "tmp").mkdir(parents=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "real").mkdir()
    (dest / "via").symlink_to("real")  # a put follows a symlink to a directory
    await put(guest, dest, tar_of(("tmp/sub/f.txt", "file", 0o644, b"f"), ("via/g.txt", "file", 0o644, b"g")))
    assert mode_mtime(dest / "tmp")[0] == 0o1777  # tar leaves an existing directory as it is
    assert mode_mtime(dest / "tmp/sub") == (0o755, FILE_MTIME)
    assert (dest / "tmp/sub/f.txt").read_bytes() == b"f"
    assert (dest / "real/g.txt").read_bytes() == b"g" and (dest / "via").is_symlink()


async def test_a_failing_tar_leaves_no_made_directory(guest: GuestAgent, short_tmp: Path) -> None:  # noqa: F811
    dest = short_tmp / "dest"
    (dest / "keep").mkdir(parents=True)
    data = tar_of(("keep/new/deep/f.txt", "file", 0o644, b"f"), ("fresh/a.txt", "file", 0o644, b"a"),
                  ("fresh/link", "hardlink", 0o644, b""))  # fmt: skip
    with pytest.raises(guest_files.TarFormatError, match="hard link"):
        await put(guest, dest, data)
    await asyncio.sleep(0.3)  # the guest agent notices the closed connection and cleans up
    assert os.listdir(dest) == ["keep"] and os.listdir(dest / "keep") == []


async def test_a_member_inside_a_file_of_the_same_tar_is_refused(guest: GuestAgent, short_tmp: Path) -> None:  # noqa: F811
    dest = short_tmp / "dest"
    dest.mkdir()
    data = tar_of(("a", "file", 0o644, b"a file"), ("a/b.txt", "file", 0o644, b"b"))
    with pytest.raises(guest_files.TarFormatError, match="'a/b.txt' is inside 'a'"):
        await put(guest, dest, data)
    await asyncio.sleep(0.3)
    assert os.listdir(dest) == []
