"""Ending background tasks for good.

A task can swallow a cancellation on its way out (a library's ``close()``
that catches ``CancelledError`` while it waits) and carry on; awaiting it
once after ``cancel()`` may then never return. :func:`cancel_until_done`
cancels again until every task has ended, so a shutdown cannot hang on one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

#: How long one cancellation gets before the next one.
RECANCEL_S = 1.0


async def cancel_until_done(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` (again every RECANCEL_S) until all have ended; their
    results and exceptions are discarded. Safe for tasks already done."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning


__all__ = ["cancel_until_done"]
