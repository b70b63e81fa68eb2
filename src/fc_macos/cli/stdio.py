"""This process's terminal and standard streams, for the commands that
stream bytes (``microvm shell``, ``exec``, ``cp -``): raw mode, window size,
writing everything, and reading stdin on the event loop."""

from __future__ import annotations

import asyncio
import os
import termios
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

READ_SIZE = 65536
QUEUED = 8  # chunks read ahead of the consumer at most


@contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Put terminal ``fd`` in raw mode for the block; yields whether it did.
    A non-terminal ``fd`` is left alone."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (which may be non-blocking)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


def terminal_size(*fds: int) -> tuple[int, int] | None:
    """(rows, cols) of the first of ``fds`` that is a terminal, else None."""
    for fd in fds:
        if os.isatty(fd):
            try:
                size = os.get_terminal_size(fd)
            except OSError:
                continue
            return size.lines, size.columns
    return None


def _read_ready(fd: int) -> bytes | None:
    """One read of ``fd`` after the loop said it is readable: the bytes, b""
    at its end (or on an error), None when there was nothing after all."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def watch_input(loop: asyncio.AbstractEventLoop, fd: int, deliver: Callable[[bytes], None]) -> Callable[[], None]:
    """Call ``deliver(chunk)`` on the loop for every chunk read from ``fd``,
    and ``deliver(b"")`` once at its end. Returns a function that stops
    watching. Pipes and terminals are polled; regular files and /dev/null
    (which cannot be) are read in a thread."""
    def readable() -> None:
        data = _read_ready(fd)
        if data is None:
            return
        if not data:
            loop.remove_reader(fd)
        deliver(data)

    try:
        loop.add_reader(fd, readable)
    except (PermissionError, ValueError, NotImplementedError, OSError):
        async def pump() -> None:
            while True:
                data = await loop.run_in_executor(None, os.read, fd, READ_SIZE)
                deliver(data)
                if not data:
                    return

        task = loop.create_task(pump())

        def cancel() -> None:
            task.cancel()

        return cancel

    def stop() -> None:
        try:
            loop.remove_reader(fd)
        except (ValueError, OSError):
            pass

    return stop


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """``fd``'s bytes as chunks until its end, read only as fast as they are
    consumed: at most QUEUED chunks wait, then the fd is not read until the
    consumer catches up (for streaming stdin somewhere). Each read happens in
    the loop's readiness callback, so it never blocks (the fd stays blocking)."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    state = {"watching": False, "ended": False}

    def readable() -> None:
        data = _read_ready(fd)
        if data is None:
            return
        chunks.put_nowait(data)
        if not data or chunks.qsize() >= QUEUED:
            state["ended"] = not data
            _unwatch()

    def _unwatch() -> None:
        if state["watching"]:
            loop.remove_reader(fd)
            state["watching"] = False

    try:
        loop.add_reader(fd, readable)
        state["watching"] = True
    except (PermissionError, ValueError, NotImplementedError, OSError):  # a regular file: reads never wait
        while data := await loop.run_in_executor(None, os.read, fd, READ_SIZE):
            yield data
        return
    try:
        while data := await chunks.get():
            if not state["watching"] and not state["ended"] and chunks.qsize() < QUEUED:
                loop.add_reader(fd, readable)
                state["watching"] = True
            yield data
    finally:
        _unwatch()
