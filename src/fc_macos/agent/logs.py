"""``GET /v1/microvms/{name}/logs``: a microVM's serial or Firecracker log as text.

``source`` is ``serial`` (everything the guest printed, ``serial.log``),
``firecracker`` (``firecracker.log``) or ``metrics`` (``metrics.json``, one
JSON object a line, written on every flush). ``tail=N`` starts with the last N
lines; ``follow=1`` keeps streaming what is appended until the microVM stops.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Mapping

from aiohttp import web

from fc_macos.agent.manager import MicroVMManager
from fc_macos.agent.wire import MAX_TAIL_LINES
from fc_macos.errors import ValidationError

SOURCES = {"serial": "serial_log", "firecracker": "log", "metrics": "metrics"}
FOLLOW_INTERVAL_S = 0.25
CHUNK = 64 * 1024


def parse_query(query: Mapping[str, str]) -> tuple[str, int | None, bool]:
    """``(source, tail, follow)`` from the query; ValidationError if malformed."""
    source = query.get("source", "serial")
    if source not in SOURCES:
        raise ValidationError(f"unknown log source {source!r}", hint="use source=serial, source=firecracker or source=metrics")
    tail_raw = query.get("tail")
    tail: int | None = None
    if tail_raw is not None:
        if not tail_raw.isdigit() or int(tail_raw) > MAX_TAIL_LINES:
            raise ValidationError(f"tail must be a whole number of lines, got {tail_raw!r}", hint="e.g. tail=100")
        tail = int(tail_raw)
    follow_raw = query.get("follow", "0").lower()
    if follow_raw not in ("0", "1", "true", "false", ""):
        raise ValidationError(f"follow must be 1 or 0, got {follow_raw!r}")
    return source, tail, follow_raw in ("1", "true")


def tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``path`` begin."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if lines == 0:
        return size
    with open(path, "rb") as fh:
        pos = size
        found = 0
        # A final newline ends the last line; it does not start a new one.
        fh.seek(max(0, size - 1))
        if size and fh.read(1) == b"\n":
            pos = size - 1
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            idx = len(block)
            while True:
                idx = block.rfind(b"\n", 0, idx)
                if idx < 0:
                    break
                found += 1
                if found == lines:
                    return pos + idx + 1
    return 0


async def stream_logs(request: web.Request, manager: MicroVMManager, name: str) -> web.StreamResponse:
    source, tail, follow = parse_query(request.query)
    manager.get(name)  # 404 for an unknown microVM
    path: Path = getattr(manager.paths(name), SOURCES[source])
    exited = manager.exited_event(name)
    offset = tail_offset(path, tail) if tail is not None else 0
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    try:
        await _stream(path, offset, follow, exited, resp)
    except ConnectionResetError:
        pass  # the reader went away; nothing else to do
    return resp


async def _stream(path: Path, offset: int, follow: bool, exited: asyncio.Event, resp: web.StreamResponse) -> None:
    """Copy ``path`` from ``offset``; with ``follow`` keep copying until ``exited`` is set."""
    while True:
        offset = await _copy_from(path, offset, resp)
        if not follow or exited.is_set():
            break
        try:
            await asyncio.wait_for(exited.wait(), FOLLOW_INTERVAL_S)
        except asyncio.TimeoutError:
            pass
    if follow:
        await _copy_from(path, offset, resp)  # what the last moments added
    await resp.write_eof()


async def _copy_from(path: Path, offset: int, resp: web.StreamResponse) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return offset
    try:
        size = os.fstat(fd).st_size
        if size < offset:  # truncated or replaced: start over
            offset = 0
        while offset < size:
            data = os.pread(fd, min(CHUNK, size - offset), offset)
            if not data:
                break
            offset += len(data)
            await resp.write(data)
    finally:
        os.close(fd)
    return offset
