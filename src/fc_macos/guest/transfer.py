"""Streaming file-tree transfers over a guest connection: :class:`GetStream` (guest to
here) and :class:`PutSession` (here to guest).

Both check every file's size and checksum (:mod:`fc_macos.guest.checksum`: crc32, or
sha256 with an older guest agent) on the way, so a relay (fc-agent's tar bridge) can
stream without buffering and still rely on what arrives. Obtain them through
:meth:`GuestConnection.get <fc_macos.guest.protocol.GuestConnection.get>` and
:meth:`GuestConnection.begin_put <fc_macos.guest.protocol.GuestConnection.begin_put>`.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, AsyncIterator, Union

from .checksum import DEFAULT_CHECKSUM, new_checksum, require_known
from .errors import GuestAgentError, GuestChecksumMismatch, GuestConnectionClosed, GuestProtocolError, error_from_response
from .frames import MAX_FRAME, Frame, FrameType
from .tree import GuestStat, TransferResult, TreeEntry

if TYPE_CHECKING:
    from .protocol import GuestConnection

GetItem = Union[TreeEntry, bytes]

RESULT_GRACE_S = 5.0
"""How long to wait for the guest's RESULT after our side of a put broke off."""


class GetStream:
    """A ``get`` in progress: ``stat`` is the top path's stat; iterate for the tree.

    Iteration yields a :class:`TreeEntry` per entry, each file entry followed by its bytes
    (``bytes`` chunks, none for an empty file). A file's size and ``checksum`` (the
    algorithm the guest's RES named, so its FILE_ENDs carry) are checked before the next
    item is yielded (GuestChecksumMismatch otherwise); a failure the guest reports midway
    (a file that cannot be read) raises its typed error. After the iteration ``result``
    holds the END totals. Iterate once.
    """

    def __init__(self, conn: GuestConnection, stat: GuestStat, checksum: str = DEFAULT_CHECKSUM) -> None:
        self._conn = conn
        self.stat = stat
        self.checksum = require_known(checksum)
        self.result: TransferResult | None = None

    async def __aiter__(self) -> AsyncIterator[GetItem]:
        current: TreeEntry | None = None
        name = self.checksum
        sum_ = new_checksum(name)
        got = entries = total = 0
        while True:
            frame = await self._conn.receive()
            if frame.type == FrameType.ENTRY:
                if current is not None:
                    raise GuestProtocolError(f"ENTRY before the FILE_END of {current.path!r}")
                entry = TreeEntry.from_json(frame.json())
                entries += 1
                if entry.type == "file":
                    current, sum_, got = entry, new_checksum(name), 0
                yield entry
            elif frame.type == FrameType.DATA:
                if current is None:
                    raise GuestProtocolError("DATA outside a file entry")
                sum_.update(frame.payload)
                got += len(frame.payload)
                total += len(frame.payload)
                if got > current.size:
                    raise GuestChecksumMismatch(f"{current.path}: more bytes than the {current.size} announced")
                yield frame.payload
            elif frame.type == FrameType.FILE_END:
                if current is None:
                    raise GuestProtocolError("FILE_END outside a file entry")
                body = frame.json()
                if not isinstance(body.get(name), str):
                    raise GuestProtocolError(f"FILE_END of {current.path!r} without its {name}: {body}")
                want = body[name].lower()
                if got != current.size or sum_.hexdigest() != want:
                    raise GuestChecksumMismatch(
                        f"{current.path}: received {got} bytes with {name} {sum_.hexdigest()}, "
                        f"the guest sent {current.size} bytes with {name} {want}",
                        hint="copy it again (the file may have changed while it was read)",
                    )
                current = None
            elif frame.type == FrameType.END:
                if current is not None:
                    raise GuestProtocolError(f"END before the FILE_END of {current.path!r}")
                body = frame.json()
                if (body.get("entries"), body.get("bytes")) != (entries, total):
                    raise GuestProtocolError(f"END says {body}, received {entries} entries and {total} bytes")
                self.result = TransferResult(entries, total)
                return
            elif frame.type == FrameType.RESULT:
                raise error_from_response(frame.json())
            else:
                raise GuestProtocolError(f"unexpected frame type {frame.type!r} in a get")


class PutSession:
    """A ``put`` in progress into the guest directory given to ``begin_put``.

    Send each entry with :meth:`entry`; for a file follow it with :meth:`data` (any chunk
    sizes) and :meth:`file_end` (the ``checksum``, the algorithm the guest's RES named, is
    computed from the data sent). End with
    :meth:`finish`, which returns the guest's totals once everything is in place. If the
    guest refuses something midway, the next call raises its typed error. To give up,
    close the connection: the guest then leaves nothing new behind.
    """

    def __init__(self, conn: GuestConnection, checksum: str = DEFAULT_CHECKSUM) -> None:
        self.checksum = require_known(checksum)
        self._sum = new_checksum(checksum)
        self._conn = conn
        self._result: asyncio.Future[Frame] = asyncio.ensure_future(conn.receive())
        self._result.add_done_callback(_consume)
        self._file: TreeEntry | None = None
        self._sent = 0
        self.entries = 0
        self.bytes = 0

    async def _raise_result(self) -> None:
        frame = await self._result
        if frame.type != FrameType.RESULT:
            raise GuestProtocolError(f"unexpected frame type {frame.type!r} during a put")
        body = frame.json()
        raise error_from_response(body) if body.get("ok") is not True else GuestProtocolError(
            "the guest finished the put before END")

    async def _send(self, type_: int, payload: bytes) -> None:
        if self._result.done():
            await self._raise_result()
        try:
            await self._conn.send(type_, payload)
        except GuestConnectionClosed as closed:
            # The guest may have refused and closed: its RESULT says why.
            try:
                await asyncio.wait_for(asyncio.shield(self._result), RESULT_GRACE_S)
            except (asyncio.TimeoutError, GuestAgentError):
                raise closed from None
            await self._raise_result()

    async def entry(self, entry: TreeEntry) -> None:
        """Sends an ENTRY (for a file, its bytes and :meth:`file_end` follow)."""
        if self._file is not None:
            raise GuestProtocolError(f"entry {entry.path!r} before the file_end of {self._file.path!r}")
        await self._send(FrameType.ENTRY, _json(entry.to_json()))
        self.entries += 1
        if entry.type == "file":
            self._file, self._sum, self._sent = entry, new_checksum(self.checksum), 0

    async def data(self, chunk: bytes) -> None:
        """Sends bytes of the current file entry."""
        if self._file is None:
            raise GuestProtocolError("data outside a file entry")
        for i in range(0, len(chunk), MAX_FRAME):
            part = chunk[i:i + MAX_FRAME]
            self._sum.update(part)
            self._sent += len(part)
            self.bytes += len(part)
            await self._send(FrameType.DATA, part)

    async def file_end(self) -> None:
        """Ends the current file: FILE_END with the checksum of the bytes sent."""
        if self._file is None:
            raise GuestProtocolError("file_end outside a file entry")
        if self._sent != self._file.size:
            raise GuestChecksumMismatch(
                f"{self._file.path}: {self._sent} bytes sent, the entry announced {self._file.size}",
                hint="the file changed while it was copied: copy it again",
            )
        await self._send(FrameType.FILE_END, _json({self.checksum: self._sum.hexdigest()}))
        self._file = None

    async def finish(self) -> TransferResult:
        """Sends END and waits for the guest's RESULT; returns its totals."""
        if self._file is not None:
            raise GuestProtocolError(f"finish before the file_end of {self._file.path!r}")
        await self._send(FrameType.END, _json({"entries": self.entries, "bytes": self.bytes}))
        frame = await self._result
        body = frame.json() if frame.type == FrameType.RESULT else {}
        if frame.type != FrameType.RESULT or body.get("ok") is not True:
            await self._raise_result()
        return TransferResult(int(body["entries"]), int(body["bytes"]))


def _consume(fut: asyncio.Future[Frame]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" warning


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


__all__ = ["GetItem", "GetStream", "PutSession"]
