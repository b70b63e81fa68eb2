"""Byte streams between a worker thread and the event loop.

``tarfile`` is blocking: packing and unpacking run in a worker thread while
the network side runs on the event loop. Two bridges connect them, each with
bounded buffering (backpressure both ways) and each abortable from either side:

* :class:`ThreadToLoop`: the thread ``write()``s (a file object for
  ``tarfile.open(mode="w|")``), the loop iterates the chunks.
* :class:`LoopToThread`: the loop ``feed()``s chunks, the thread ``read()``s
  (a file object for ``tarfile.open(mode="r|")``).

Closing a bridge from the consuming side (``abort()``) makes the other side's
next call raise :class:`TransferAborted`, so that a worker thread never blocks
forever on a reader that went away.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

#: Chunks in flight between the two sides (each up to CHUNK bytes).
DEPTH = 16
CHUNK = 256 * 1024


class TransferAborted(Exception):
    """The other side of a bridge went away."""


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class ThreadToLoop:
    """A writable file object for a worker thread whose bytes come out of
    ``async for chunk in bridge`` on the loop. The thread calls ``finish()``
    (with the exception that stopped it, if any) when it is done."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue()
        self._credits = threading.Semaphore(DEPTH)
        self._aborted = False

    # -- the worker thread's side (a file object) --------------------------

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if not chunk:
            return 0
        self._credits.acquire()
        if self._aborted:
            raise TransferAborted("the reader went away")
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        return len(chunk)

    def flush(self) -> None:
        pass

    def finish(self, error: BaseException | None = None) -> None:
        """No more writes; ``error`` (if any) is raised on the loop's side."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, _End(error))
        except RuntimeError:  # the loop is closed: nobody reads any more
            pass

    # -- the loop's side ---------------------------------------------------

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    if item.error is not None and not isinstance(item.error, TransferAborted):
                        raise item.error
                    return
                self._credits.release()
                yield item
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the writer: its next (or current, blocked) ``write`` raises."""
        self._aborted = True
        for _ in range(DEPTH + 1):
            self._credits.release()


class LoopToThread:
    """A readable file object for a worker thread, fed from the loop with
    ``await bridge.feed(chunk)`` and ended with ``await bridge.end()``."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | _End] = queue.Queue(DEPTH)
        self._buffer = bytearray()  # appended at the end, taken from the front (both cheap)
        self._ended = False
        self._stopped = threading.Event()

    # -- the loop's side ---------------------------------------------------

    async def _put(self, item: bytes | _End) -> None:
        while True:
            if self._stopped.is_set():
                raise TransferAborted("the reader stopped")
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.002)

    async def feed(self, chunk: bytes) -> None:
        """Hand ``chunk`` to the reader, waiting while its buffer is full.
        Raises TransferAborted once the reader has stopped."""
        await self._put(chunk)

    async def end(self, error: BaseException | None = None) -> None:
        """The stream is complete (or broke with ``error``): ``read`` returns
        b"" (or raises TransferAborted) once the buffer is drained."""
        try:
            await self._put(_End(error))
        except TransferAborted:
            pass

    def cancel(self) -> None:
        """Drop what is buffered and make the reader's next ``read`` raise
        TransferAborted (callable from the loop at any time)."""
        self._stopped.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put_nowait(_End(TransferAborted("interrupted")))

    # -- the worker thread's side (a file object) --------------------------

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size < 0 or len(self._buffer) < size):
            item = self._queue.get()
            if isinstance(item, _End):
                self._ended = True
                if item.error is not None:
                    raise TransferAborted(str(item.error)) from item.error
                break
            self._buffer += item
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def stop(self) -> None:
        """The reader is done: later ``feed`` calls raise TransferAborted."""
        self._stopped.set()
