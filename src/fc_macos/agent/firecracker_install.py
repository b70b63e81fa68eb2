"""The Firecracker binary fc-agent runs, installed over its API
(``/v1/firecracker``): see what it runs, and upload another.

An upload is streamed and size- and sha256-checked by an
:class:`~fc_macos.agent.image_store.ImageStore` on ``<state-dir>/bin`` (as
an image upload is) into ``bin/firecracker.new``, made executable (0755) and
run with ``--version``: only when that answers ``Firecracker v...`` within
:data:`VERSION_TIMEOUT_S` is it renamed over ``bin/firecracker``; otherwise it
is removed (422 ``firecracker_unusable``, with what it printed) and nothing is
replaced. One install at a time.

From then on new microVMs run it (:attr:`AgentSettings.firecracker`: the
installed binary wins over ``--firecracker-bin`` while it exists, also after a
restart; ``GET /v1/info`` and the start log say which one runs). MicroVMs
already running keep their process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from fc_macos.agent.image_routes import _body, _sha_query, _size_query
from fc_macos.agent.image_store import ImageStore, sha256_file
from fc_macos.agent.settings import AgentSettings
from fc_macos.errors import ValidationError

log = logging.getLogger("fc_agent.firecracker")

PATH = "/v1/firecracker"
STAGING = "firecracker.new"
VERSION_TIMEOUT_S = 10.0
VERSION_RE = re.compile(r"^Firecracker v\d\S*")


class FirecrackerUnusable(ValidationError):
    """The uploaded binary does not run as Firecracker here: HTTP 422."""

    http_status = 422
    code = "firecracker_unusable"


class Installs:
    """The installs of one agent: its settings, the store on ``<state-dir>/bin``, a lock (one at a time)."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.store = ImageStore(settings.installed_firecracker.parent)
        self.lock = asyncio.Lock()


INSTALLS: web.AppKey[Installs] = web.AppKey("firecracker_installs", Installs)


async def version_of(binary: Path | str) -> str:
    """The first line of ``binary --version`` when it says ``Firecracker v...``
    within :data:`VERSION_TIMEOUT_S`; FirecrackerUnusable (with what it said) otherwise."""
    try:
        proc = await asyncio.create_subprocess_exec(
            str(binary), "--version", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise _unusable(binary, f"it cannot be started: {exc.strerror or exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), VERSION_TIMEOUT_S)
    except asyncio.TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise _unusable(binary, f"'--version' did not answer within {VERSION_TIMEOUT_S:g} s") from None
    said = out.decode(errors="replace").strip()
    first = said.splitlines()[0] if said else ""
    if proc.returncode != 0 or not VERSION_RE.match(first):
        raise _unusable(binary, f"'--version' said {said[-300:]!r} (exit status {proc.returncode})")
    return first


def _unusable(binary: Path | str, why: str) -> FirecrackerUnusable:
    return FirecrackerUnusable(
        f"the uploaded file does not run as Firecracker on the agent's machine: {why}; nothing was replaced",
        hint=f"send a Firecracker binary built for this machine's architecture ({os.uname().machine}), "
        "e.g. from https://github.com/firecracker-microvm/firecracker/releases",
    )


async def _describe(installs: Installs) -> dict[str, Any]:
    binary = installs.settings.firecracker
    found = shutil.which(binary)
    answer: dict[str, Any] = {"path": binary, "source": installs.settings.firecracker_source,
                              "size": None, "sha256": None, "version": None}
    if found is not None:
        answer |= {"size": Path(found).stat().st_size, "sha256": await asyncio.to_thread(sha256_file, Path(found))}
        try:
            answer["version"] = await version_of(found)
        except FirecrackerUnusable as exc:
            log.warning("%s", exc.message)
    return answer


async def get_firecracker(request: web.Request) -> web.Response:
    return web.json_response(await _describe(request.app[INSTALLS]))


async def put_firecracker(request: web.Request) -> web.Response:
    installs = request.app[INSTALLS]
    store, target = installs.store, installs.settings.installed_firecracker
    size, sha256 = _size_query(request), _sha_query(request)
    async with installs.lock:
        present = [i for i in await store.find(sha256, size) if i.name == target.name]
        if not present:
            await asyncio.to_thread(_remove, store.directory / STAGING)
            if await store.prepare(STAGING, size, sha256, replace=True) is None:
                await store.receive(STAGING, size, sha256, _body(request))
            staged = store.directory / STAGING
            try:
                staged.chmod(0o755)
                await version_of(staged)
                os.replace(staged, target)
            finally:
                await asyncio.to_thread(_remove, staged)
            log.info("installed Firecracker %s (%d bytes, sha256 %s): new microVMs run it", target, size, sha256)
        answer = await _describe(installs)
    return web.json_response(answer, status=200 if present else 201)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def add_routes(app: web.Application, settings: AgentSettings) -> None:
    """Serve ``GET``/``PUT /v1/firecracker``; on startup, remove what an
    install cut off by a crash left and log which Firecracker new microVMs run."""
    installs = app[INSTALLS] = Installs(settings)
    app.router.add_route("GET", PATH, get_firecracker)
    app.router.add_route("PUT", PATH, put_firecracker)

    async def on_startup(app: web.Application) -> None:
        if installs.store.directory.is_dir():
            await asyncio.to_thread(installs.store.remove_leftovers)
            await asyncio.to_thread(_remove, installs.store.directory / STAGING)
        if installs.settings.firecracker_source == "installed":
            log.info("new microVMs run %s (installed through PUT %s; it wins over --firecracker-bin %s)",
                     settings.firecracker, PATH, settings.firecracker_bin)
        else:
            log.info("new microVMs run %s (--firecracker-bin)", settings.firecracker)

    app.on_startup.append(on_startup)


__all__ = ["FirecrackerUnusable", "add_routes", "version_of"]
