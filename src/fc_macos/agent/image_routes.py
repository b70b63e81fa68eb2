"""HTTP handlers of the agent's image directory (``/v1/images``): list, upload
(streamed: never held in memory, not limited by ``max_body_bytes``) and delete,
over :class:`~fc_macos.agent.image_store.ImageStore`; and the download of a
microVM's drive files and the attaching of drives
(``/v1/microvms/{name}/drives/{id}``, see
:mod:`fc_macos.agent.drive_files`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from fc_macos.agent import drive_files, routing
from fc_macos.agent.contract import query_flag
from fc_macos.agent.image_store import ImageStore, Stored
from fc_macos.agent.manager import MicroVMManager
from fc_macos.agent.routing import MANAGER
from fc_macos.errors import FcMacosError, ValidationError

log = logging.getLogger("fc_agent.images")

STORE: web.AppKey[ImageStore] = web.AppKey("image_store", ImageStore)
CHUNK = 256 * 1024


def _store(request: web.Request) -> ImageStore:
    return request.app[STORE]


def users_of(manager: MicroVMManager, path: Path) -> list[str]:
    """The microVMs whose spec names ``path`` (kernel, initrd, rootfs or a drive)."""
    wanted = str(path)
    users = []
    for vm in manager.list():
        spec = vm.spec
        named = [spec.get("kernel"), spec.get("initrd"), spec.get("rootfs"),
                 *(d.get("path") for d in spec.get("drives") or [] if isinstance(d, dict))]  # fmt: skip
        if wanted in named:
            users.append(vm.name)
    return users


def _size_query(request: web.Request) -> int:
    raw = request.query.get("size", "")
    if not raw.isdigit():
        raise ValidationError(f"size must be the file's size in bytes, got {raw!r}",
                              hint="e.g. ?size=1048576&sha256=HEX", code="invalid_size")  # fmt: skip
    return int(raw)


def _sha_query(request: web.Request) -> str:
    raw = request.query.get("sha256", "")
    if not raw:
        raise ValidationError("sha256 is required: the sha256 of the whole file, in hex",
                              hint="e.g. ?size=1048576&sha256=HEX", code="invalid_sha256")  # fmt: skip
    return raw


async def list_images(request: web.Request) -> web.Response:
    store = _store(request)
    if "sha256" in request.query or "size" in request.query:
        images = await store.find(request.query.get("sha256"),
                                  _size_query(request) if "size" in request.query else None)
    else:
        images = store.files()
    store.directory.mkdir(parents=True, exist_ok=True)
    return web.json_response({
        "directory": str(store.directory),
        "free_bytes": store.free_bytes(store.directory),
        "images": [i.to_dict() for i in images],
    })  # fmt: skip


def _answer(stored: Stored) -> web.Response:
    return web.json_response(stored.to_dict(), status=201 if stored.outcome == "uploaded" else 200)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk
    except (FcMacosError, GeneratorExit):
        raise
    except Exception as exc:  # the body broke off (aiohttp's payload errors, a reset connection)
        raise ValidationError(
            f"the request body was cut off ({type(exc).__name__}); nothing was kept",
            hint="send the file again", code="body_incomplete",
        ) from exc


async def put_image(request: web.Request) -> web.Response:
    name, store = request.match_info["name"], _store(request)
    size, sha256 = _size_query(request), _sha_query(request)
    manager = request.app[MANAGER]
    ready = await store.prepare(name, size, sha256, replace=query_flag(request, "replace"),
                                in_use=lambda p: users_of(manager, p))
    if ready is not None:
        return _answer(ready)
    stored = await store.receive(name, size, sha256, _body(request))
    log.info("received image %s (%d bytes, sha256 %s)", name, size, sha256)
    return _answer(stored)


async def delete_image(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    await _store(request).delete(request.match_info["name"], in_use=lambda p: users_of(manager, p))
    return web.Response(status=204)


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/v1/images", list_images),
    ("PUT", "/v1/images/{name}", put_image),
    ("DELETE", "/v1/images/{name}", delete_image),
    ("GET", "/v1/microvms/{name}/drives/{drive_id}", drive_files.download),
    ("PUT", "/v1/microvms/{name}/drives/{drive_id}", drive_files.attach),
)


def add_routes(app: web.Application, store: ImageStore) -> None:
    """Serve ``store`` (uploads may not replace or delete what the app's
    microVMs use); on startup, remove what uploads cut off by a crash left."""
    app[STORE] = store
    routing.add_routes(app, ROUTES)

    async def remove_leftovers(app: web.Application) -> None:
        await asyncio.to_thread(store.remove_leftovers)

    app.on_startup.append(remove_leftovers)


__all__ = ["ROUTES", "add_routes", "users_of"]
