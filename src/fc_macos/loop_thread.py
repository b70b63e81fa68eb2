"""``LoopThread``: a private asyncio event loop in a daemon thread, so that code
without an event loop (the sync Python API, providers, scripts) can run the
async client's coroutines and block for their results.

:meth:`LoopThread.run` is the one way in: it runs an awaitable on the loop and
returns its result or raises its error in the caller's thread. When the caller
is interrupted (Ctrl+C: KeyboardInterrupt) the coroutine is cancelled on the
loop and waited for (at most :data:`CANCEL_WAIT_S`), so its cleanup (a copy
removing its temporary files, a client closing its session) runs before the
interruption propagates. :meth:`LoopThread.close` stops the loop and joins the
thread; it may be called twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
CANCEL_WAIT_S = 30.0


class LoopThread:
    """A private event loop running in a daemon thread (see the module's docstring)."""

    def __init__(self, name: str = "fc-macos-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the loop and return its result (or raise its error)."""
        finished = threading.Event()

        async def guarded() -> T:
            try:
                return await awaitable
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(guarded(), self.loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():  # interrupted here (Ctrl+C): cancel there, let it clean up
                future.cancel()
                finished.wait(CANCEL_WAIT_S)
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


__all__ = ["CANCEL_WAIT_S", "LoopThread"]
