"""The agent's side of the guest channel against the real fc-guest-agent,
run on this host (``--listen unix:PATH``) behind a stand-in for Firecracker's
hybrid vsock socket: guest agent states, one-shot exec, files both ways,
published ports. Fast (no guest boots); the same code paths as in a microVM
from the vsock socket on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import tarfile
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fc_macos.agent import guest_agent as ga
from fc_macos.agent import guest_exec, guest_files
from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.agent.guest_errors import GuestAgentNotReady, GuestChannelError
from fc_macos.agent.ports import PortPublisher
from fc_macos.agent.wire import PortSpec
from fc_macos.errors import ConflictError, FcMacosError
from fc_macos.guest.errors import GuestNotFound
from tests.helpers.hybrid_vsock import HybridVsock, hybrid_vsock
from tests.guest.conftest import RunningAgent, agent_binary, guest_agent  # noqa: F401  (fixtures)


@pytest.fixture
async def vsock(short_tmp: Path, guest_agent: RunningAgent) -> AsyncIterator[HybridVsock]:  # noqa: F811
    async with hybrid_vsock(short_tmp / "v.sock", {10240: Path(guest_agent.socket)}) as fake:
        yield fake


@pytest.fixture
async def guest(vsock: HybridVsock) -> AsyncIterator[GuestAgent]:
    agent = GuestAgent("hostvm", vsock.path)
    agent.start(started_at=time.time())
    assert await agent.wait_ready(10), agent.to_dict()
    yield agent
    await agent.close()


async def test_states_starting_ready_unresponsive_and_back(
    short_tmp: Path, guest_agent: RunningAgent, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setattr(ga, "OPEN_RETRY_S", 0.5)
    changes: list[str] = []
    agent = GuestAgent("hostvm", short_tmp / "v.sock")
    agent.on_change = lambda: changes.append(agent.state)
    assert agent.to_dict() == {"state": "starting", "version": None, "ready_s": None, "reason": "not started yet",
                               "guest": None}
    agent.start(started_at=time.time())
    await asyncio.sleep(0.6)  # no vsock socket yet (the VMM is still starting): still starting
    assert agent.state == "starting"
    with pytest.raises(GuestAgentNotReady) as info:
        await agent.open()
    assert info.value.code == "guest_agent_starting" and "still starting" in info.value.message
    assert "fc-macos microvm status --name hostvm" in (info.value.hint or "")
    async with hybrid_vsock(short_tmp / "v.sock", {10240: Path(guest_agent.socket)}) as fake:
        assert await agent.wait_ready(10)
        state = agent.to_dict()
        assert state["state"] == "ready" and state["version"] and state["ready_s"] > 0.5
        # what the guest says of itself (here the guest agent runs on this host)
        guest = state["guest"]
        assert guest["hostname"] == os.uname().nodename and guest["kernel"] == os.uname().release
        assert guest["arch"] == os.uname().machine and guest["uptime_s"] > 0
        assert {"ifname": "lo", "family": "inet", "address": "127.0.0.1", "prefixlen": 8} in guest["addresses"]
        # the guest agent stops answering (killed, no supervisor): an operation says so
        fake.backends.clear()
        with pytest.raises(GuestAgentNotReady) as info:
            await agent.open()
        assert info.value.code == "guest_agent_unresponsive" and "does not answer" in info.value.message
        assert agent.to_dict()["guest"] is None  # only while it answers
        assert agent.state == "unresponsive" and "supervisor" in (info.value.hint or "")
        # it comes back (its supervisor restarted it): polling finds it ready again
        fake.backends[10240] = Path(guest_agent.socket)
        assert await agent.wait_ready(10)
        assert agent.ready_s == state["ready_s"]  # the boot's ready time stays
    await agent.close()
    assert [c for c in changes if c != "starting"] == ["ready", "unresponsive", "ready"], changes


async def test_absent_states_say_why(short_tmp: Path) -> None:
    no_vsock = GuestAgent("plain", None)
    assert no_vsock.to_dict()["state"] == "absent"
    with pytest.raises(GuestAgentNotReady) as info:
        await no_vsock.open()
    assert info.value.code == "guest_agent_absent" and "vsock: false" in info.value.message
    assert "without --no-vsock" in (info.value.hint or "")
    skipped = GuestAgent("odd", short_tmp / "v.sock", absent_reason="the rootfs is not ext4")
    with pytest.raises(GuestAgentNotReady) as info:
        await skipped.open()
    assert "not ext4" in info.value.message and "ext4" in (info.value.hint or "")
    assert skipped.saved() == {"version": None, "ready_s": None, "absent": "the rootfs is not ext4"}


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_the_next_operation_starts_on_a_spare_connection(
    vsock: HybridVsock, guest: GuestAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ga, "SPARE_TTL_S", 0.5)
    await until(lambda: vsock.live == 0)  # ready (the probe's connection closed), nothing kept open
    before = len(vsock.connects)
    first = await guest_exec.run_once(guest, {"argv": ["echo", "one"]})
    assert first["stdout"] == "one\n"
    # after it: one connection opened ahead (the exec's own has closed)
    await until(lambda: (len(vsock.connects), vsock.live) == (before + 2, 1))
    second = await guest_exec.run_once(guest, {"argv": ["echo", "two"]})
    assert second["stdout"] == "two\n"
    # the second ran on the spare: the only new CONNECT is the next spare's
    await until(lambda: (len(vsock.connects), vsock.live) == (before + 3, 1))
    await asyncio.sleep(0.1)
    assert len(vsock.connects) == before + 3
    # back to back (an operation may take the spare still being dialled): each
    # operation one connection, and one spare left
    outs = [(await guest_exec.run_once(guest, {"argv": ["echo", str(i)]}))["stdout"] for i in range(8)]
    assert outs == [f"{i}\n" for i in range(8)]
    await until(lambda: (len(vsock.connects), vsock.live) == (before + 11, 1))
    await until(lambda: vsock.live == 0, timeout=3)  # unused, it is closed after SPARE_TTL_S


async def test_a_connection_held_open_does_not_keep_spares_from_others(vsock: HybridVsock, guest: GuestAgent) -> None:
    await until(lambda: vsock.live == 0)
    held = await guest.open()  # e.g. a tunnel that lasts for hours
    try:
        await until(lambda: vsock.live == 1)
        await guest_exec.run_once(guest, {"argv": ["true"]})
        await until(lambda: guest._spare is not None and vsock.live == 2)  # the tunnel and a spare
    finally:
        await held.close()


async def test_a_spare_broken_meanwhile_is_not_used(vsock: HybridVsock, guest: GuestAgent) -> None:
    await guest_exec.run_once(guest, {"argv": ["true"]})
    await until(lambda: guest._spare is not None and vsock.live == 1)
    vsock.reset()  # e.g. the guest's connections were reset
    await until(lambda: guest._spare is not None and guest._spare.reader.at_eof())
    again = await guest_exec.run_once(guest, {"argv": ["echo", "fresh"]})  # seen closed: not taken
    assert again["stdout"] == "fresh\n"
    await until(lambda: guest._spare is not None and vsock.live == 1)
    before = len(vsock.connects)
    vsock.reset()  # and used before its end is seen: the request goes again on a new connection
    assert not guest._spare.reader.at_eof()
    again = await guest_exec.run_once(guest, {"argv": ["echo", "again"]})
    assert again["stdout"] == "again\n" and len(vsock.connects) >= before + 1


async def test_pause_and_close_drop_the_spare(vsock: HybridVsock, guest: GuestAgent) -> None:
    await guest_exec.run_once(guest, {"argv": ["true"]})
    await until(lambda: guest._spare is not None and vsock.live == 1)
    guest.drop_spare()  # the manager does this when the microVM is paused
    await until(lambda: vsock.live == 0)
    await guest_exec.run_once(guest, {"argv": ["true"]})
    await until(lambda: guest._spare is not None and vsock.live == 1)
    await guest.close()
    await until(lambda: vsock.live == 0)
    assert guest._spare is None and guest._dialing is None and not guest._watchers


async def test_exec_once_codes_streams_and_stdin(guest: GuestAgent) -> None:
    async def run(**body: object) -> dict:
        return await guest_exec.run_once(guest, body)

    for code in (0, 1, 42):
        assert (await run(argv=["sh", "-c", f"exit {code}"]))["exit_code"] == code
    out = await run(argv=["sh", "-c", "echo out; echo err >&2; kill -TERM $$"])
    assert (out["stdout"], out["stderr"], out["exit_code"], out["signal"]) == ("out\n", "err\n", 143, 15)
    missing = await run(argv=["no-such-command"])
    assert missing["exit_code"] == 127 and "no-such-command" in missing["stderr"]
    piped = await run(argv=["sh", "-c", "tr a-z A-Z; echo $GREETING"], stdin="hello\n", env={"GREETING": "hi"})
    assert piped["stdout"] == "HELLO\nhi\n"
    raw = await run(argv=["head", "-c", "3"], stdin_b64="AAEC", encoding="base64")
    assert raw["stdout"] == "AAEC"
    with pytest.raises(GuestNotFound):
        await run(argv=["true"], cwd="/no/such/dir")
    timed = await run(argv=["sleep", "30"], timeout_s=0.5)
    assert timed["timed_out"] is True


async def test_exec_once_refuses_too_much_output(guest: GuestAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest_exec, "MAX_OUTPUT", 1024 * 1024)
    with pytest.raises(GuestChannelError) as info:
        await guest_exec.run_once(guest, {"argv": ["head", "-c", "3000000", "/dev/zero"]})
    assert (info.value.code, info.value.http_status) == ("output_too_large", 413)
    ok = await guest_exec.run_once(guest, {"argv": ["head", "-c", "1000000", "/dev/zero"], "encoding": "base64"})
    assert len(base64.b64decode(ok["stdout"])) == 1000000


def make_tree(root: Path) -> None:
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "tree" / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "tree" / "sub" / "run.sh").chmod(0o755)
    (root / "tree" / "secret").write_text("s")
    (root / "tree" / "secret").chmod(0o600)
    (root / "tree" / "link").symlink_to("sub/run.sh")
    os.utime(root / "tree" / "secret", (1_600_000_000, 1_600_000_000))


def digest(root: Path) -> dict[str, tuple[str, int, str]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, "")
            else:
                out[rel] = ("file", st.st_mode & 0o7777, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def has_dir(guest: GuestAgent, dest: Path) -> guest_files.HasDir:
    return guest_files.guest_has_dir(guest.open, str(dest))


class Body:
    """Bytes fed like an HTTP body (readexactly/read), optionally cut off after ``cut`` bytes."""

    def __init__(self, data: bytes, cut: int | None = None) -> None:
        self.stream = asyncio.StreamReader()
        self.stream.feed_data(data if cut is None else data[:cut])
        if cut is None:
            self.stream.feed_eof()
        else:
            self.stream.set_exception(ConnectionResetError("client went away"))

    async def readexactly(self, n: int) -> bytes:
        return await self.stream.readexactly(n)

    async def read(self, n: int = -1) -> bytes:
        return await self.stream.read(n)


async def test_files_out_and_in_keep_modes_symlinks_and_contents(guest: GuestAgent, short_tmp: Path) -> None:
    make_tree(short_tmp / "src")
    # get: the guest's tree as a tar stream, checked as it goes
    conn = await guest.open()
    stream = await conn.get(str(short_tmp / "src" / "tree"))
    assert stream.stat.type == "dir"
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    summary = await guest_files.tree_to_tar(stream, write)
    await conn.close()
    sizes = [p.stat().st_size for p in (short_tmp / "src").rglob("*") if p.is_file() and not p.is_symlink()]
    assert (summary.entries, summary.bytes) == (6, sum(sizes))
    with tarfile.open(fileobj=io.BytesIO(bytes(out))) as tar:
        assert tar.getmember("tree/secret").mtime == 1_600_000_000
        tar.extractall(short_tmp / "copy", filter="fully_trusted")
    assert digest(short_tmp / "copy") == digest(short_tmp / "src")

    # put: that tar into another directory of the guest
    (short_tmp / "dest").mkdir()
    conn = await guest.open()
    session = await conn.begin_put(str(short_tmp / "dest"))
    result = await guest_files.tar_to_tree(guest_files.TarReader(Body(bytes(out))), session, has_dir(guest, short_tmp / "dest"))
    await conn.close()
    assert result.entries == 6
    assert digest(short_tmp / "dest") == digest(short_tmp / "src")


async def test_put_cut_off_midway_leaves_nothing(guest: GuestAgent, short_tmp: Path) -> None:
    make_tree(short_tmp / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(short_tmp / "src" / "tree", arcname="tree")
        tar.add(short_tmp / "src" / "tree" / "big.bin", arcname="alone.bin")
    data = buf.getvalue()
    (short_tmp / "dest").mkdir()
    for cut in (len(data) // 2, len(data) - 2048 - 700):  # inside big.bin, inside alone.bin
        conn = await guest.open()
        session = await conn.begin_put(str(short_tmp / "dest"))
        with pytest.raises(ConnectionResetError):
            await guest_files.tar_to_tree(guest_files.TarReader(Body(data, cut)), session, has_dir(guest, short_tmp / "dest"))
        await conn.close()
        await asyncio.sleep(0.3)  # the guest agent notices the closed connection and cleans up
        assert os.listdir(short_tmp / "dest") == []


async def test_tar_refusals(guest: GuestAgent, short_tmp: Path) -> None:
    def tar_of(*members: tuple[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    (short_tmp / "dest").mkdir()
    for data, needle in ((tar_of(("../up", b"x")), "outside"), (tar_of(("/abs", b"x")), "absolute"),
                         (b"\x01" * 1024, "not a tar")):  # fmt: skip
        conn = await guest.open()
        session = await conn.begin_put(str(short_tmp / "dest"))
        with pytest.raises(guest_files.TarFormatError, match=needle):
            await guest_files.tar_to_tree(guest_files.TarReader(Body(data)), session, has_dir(guest, short_tmp / "dest"))
        await conn.close()
    await asyncio.sleep(0.2)
    assert os.listdir(short_tmp / "dest") == []


async def test_published_port_bridges_connections(guest: GuestAgent) -> None:
    payload = os.urandom(5 * 1024 * 1024)

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        writer.write(request.upper() + payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(service, "127.0.0.1", 0)
    guest_port = server.sockets[0].getsockname()[1]
    publisher = PortPublisher(lambda name: guest)
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    host_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    spec = PortSpec(host_port=host_port, guest_port=guest_port, host_addr="127.0.0.1")
    await publisher.publish("hostvm", spec)
    try:
        async def fetch(i: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
            writer.write(b"get %d\n" % i)
            await writer.drain()
            data = await reader.read()
            writer.close()
            return data

        answers = await asyncio.gather(*(fetch(i) for i in range(8)))
        for i, data in enumerate(answers):
            assert data == b"GET %d\n" % i + payload
        # the same address again is taken, named in the error
        other = PortPublisher(lambda name: guest)
        with pytest.raises(ConflictError) as info:
            await other.publish("other", spec)
        assert info.value.code == "port_in_use" and f"127.0.0.1:{host_port}" in info.value.message
        assert publisher.ports("hostvm") == [spec]
    finally:
        await publisher.close()
        server.close()
    assert publisher.ports("hostvm") == []


def fed(*frames: bytes) -> Any:
    """A get's stream of ``frames`` (from a guest agent that answers like that)."""
    from fc_macos.guest.protocol import GuestConnection
    from fc_macos.guest.transfer import GetStream
    from fc_macos.guest.tree import GuestStat

    reader = asyncio.StreamReader()
    for frame in frames:
        reader.feed_data(frame)
    reader.feed_eof()
    return GetStream(GuestConnection(reader, None), GuestStat("file", 0o644, 3, 1.0, None))  # type: ignore[arg-type]


async def test_a_tree_that_does_not_match_its_checksum_or_breaks_off_is_never_a_whole_tar() -> None:
    from fc_macos.guest.frames import FrameType, encode_frame, encode_json

    entry = encode_json(FrameType.ENTRY, {"path": "f", "type": "file", "mode": 0o644, "mtime": 1, "size": 3})
    data = encode_frame(FrameType.DATA, b"abc")
    good_sum = f"{zlib.crc32(b'abc'):08x}"  # what fc-agent asks for
    end = encode_json(FrameType.END, {"entries": 1, "bytes": 3})
    written = bytearray()

    async def write(chunk: bytes) -> None:
        written.extend(chunk)

    summary = await guest_files.tree_to_tar(fed(entry, data, encode_json(FrameType.FILE_END, {"crc32": good_sum}), end), write)
    assert (summary.entries, summary.bytes) == (1, 3)
    with tarfile.open(fileobj=io.BytesIO(bytes(written))) as tar:
        assert tar.extractfile("f").read() == b"abc"  # type: ignore[union-attr]

    for frames, error in (
        ((entry, data, encode_json(FrameType.FILE_END, {"crc32": "0" * 8}), end), "checksum_mismatch"),
        ((entry, data + data, encode_json(FrameType.FILE_END, {"crc32": good_sum}), end), "checksum_mismatch"),
        ((entry, data), "guest_connection_closed"),  # the stream ends before END
        ((encode_json(FrameType.ENTRY, {"path": "../x", "type": "file", "size": 0}),), "guest_protocol"),
        ((encode_json(FrameType.RESULT, {"ok": False, "error": "permission_denied", "message": "m"}),), "permission_denied"),
    ):
        written.clear()
        with pytest.raises(FcMacosError) as info:
            await guest_files.tree_to_tar(fed(*frames), write)
        assert info.value.code == error, (frames, info.value)
        assert not bytes(written).endswith(b"\0" * 1024)  # no end-of-archive blocks: not a whole tar


async def test_close_ends_the_poller_even_if_a_cancellation_is_swallowed(short_tmp: Path) -> None:
    agent = GuestAgent("hostvm", short_tmp / "v.sock")
    swallowed = asyncio.Event()

    async def probe() -> dict:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # as a connection's close may do on its way out
            swallowed.set()
        return {"version": "x"}

    agent.probe = probe  # type: ignore[method-assign]
    agent.start(started_at=time.time())
    poller = agent._task
    assert poller is not None
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await agent.close()
    assert swallowed.is_set() and poller.done() and time.monotonic() - started < 3


def test_translated_hints_name_the_microvm() -> None:
    """The guest agent does not know the microVM's name; the agent's answer fills it in."""
    from fc_macos.agent.guest_errors import translate
    from fc_macos.guest.errors import error_from_response

    for code, command in (("command_not_found", "fc-macos exec --name web -- sh -c"),
                          ("not_found", "fc-macos exec --name web -- ls"),
                          ("io_error", "fc-macos microvm logs --name web")):
        error = translate(error_from_response({"error": code, "message": "m"}), "web")
        assert command in (error.hint or "") and "NAME" not in (error.hint or ""), (code, error.hint)
