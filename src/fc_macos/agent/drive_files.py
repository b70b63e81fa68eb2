"""A microVM's own drive files: where its private copies live and how they
are downloaded.

Every microVM writes to its own copies only, inside its work directory
(``<state-dir>/microvms/NAME/``): the rootfs (``rootfs.ext4``) and each
writable drive given in its spec (``drive-ID.img``, copied at boot by
:func:`fc_macos.agent.drive_copies.copy_writable`). Read-only drives are used in place. The user's
images in the image directory are never changed; to get a microVM's disk
back, download it with ``GET /v1/microvms/{name}/drives/{id}`` (``rootfs``
for the root drive), refused while the guest runs: stop or pause it first.

``PUT /v1/microvms/{name}/drives/{id}`` attaches a drive to a microVM whose
VMM runs (before start, or hot-plugged after): its path is resolved like a
spec's (a name in the image directories, or a path inside them) and a
writable drive gets its private copy first, then Firecracker gets the drive.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from fc_macos.agent import paths as image_paths
from fc_macos.agent.drive_copies import copy_path
from fc_macos.agent.http_errors import read_json
from fc_macos.agent.manager import MicroVMManager
from fc_macos.agent.routing import MANAGER
from fc_macos.errors import ConflictError, FirecrackerAPIError, NotFoundError, ValidationError
from fc_macos.firecracker.client import FirecrackerClient

log = logging.getLogger("fc_agent.drives")

#: States whose disks are not being written (a paused guest's disk is crash-consistent).
QUIET_STATES = ("created", "paused", "stopped", "failed")
CHUNK = 1024 * 1024


def drive_file(manager: MicroVMManager, name: str, drive_id: str) -> Path:
    """The file behind drive ``drive_id`` of microVM ``name``, if it may be read now."""
    info = manager.get(name)
    if info.state not in QUIET_STATES:
        raise ConflictError(
            f"microVM {name!r} is {info.state}: its disks change while it runs",
            hint=f"stop it ('fc-macos microvm stop --name {name}') or pause it "
            f"('fc-macos actions pause --name {name}') first",
            code="microvm_running",
        )
    if drive_id == "rootfs":
        path = manager.paths(name).rootfs
    elif drives := [d for d in info.spec.get("drives") or [] if isinstance(d, dict) and d.get("id") == drive_id]:
        path = Path(str(drives[0].get("path")))
    elif copy_path(manager.paths(name).workdir, drive_id).is_file():  # hot-plugged after start
        path = copy_path(manager.paths(name).workdir, drive_id)
    else:
        known = ", ".join(["rootfs", *(str(d.get("id")) for d in info.spec.get("drives") or [])])
        raise NotFoundError(f"microVM {name!r} has no drive {drive_id!r}", hint=f"its drives: {known}",
                            code="drive_not_found")  # fmt: skip
    if not path.is_file():
        raise NotFoundError(f"the file of drive {drive_id!r} of microVM {name!r} ({path}) no longer exists",
                            hint="a snapshot restore or a raw API call may have named another file",
                            code="drive_not_found")  # fmt: skip
    return path


async def download(request: web.Request) -> web.StreamResponse:
    """Stream a microVM's drive file (its private copy for writable drives)."""
    path = drive_file(request.app[MANAGER], request.match_info["name"], request.match_info["drive_id"])
    size = path.stat().st_size
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Content-Length": str(size),
                                       "Fc-Drive-Path": str(path)})  # fmt: skip
    await resp.prepare(request)
    try:
        with path.open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, CHUNK):
                await resp.write(chunk)
    except (ConnectionError, OSError) as exc:  # the client went away, or the file could not be read
        log.info("download of %s cut off: %s", path, exc)
        if request.transport is not None:
            request.transport.abort()  # short of Content-Length: no client takes it for whole
        return resp
    await resp.write_eof()
    return resp


def _attach_body(body: Any) -> tuple[str, bool, bool]:
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"]:
        raise ValidationError("the drive must be a JSON object with a non-empty path",
                              hint='e.g. {"path": "data.ext4", "read_only": false}', code="invalid_drive")  # fmt: skip
    unknown = sorted(set(body) - {"path", "read_only", "root"})
    if unknown:
        raise ValidationError(f"unknown field(s) in the drive: {', '.join(unknown)}",
                              hint="allowed fields: path, read_only, root", code="unknown_field")  # fmt: skip
    flags = [body.get(k, False) for k in ("read_only", "root")]
    if not all(isinstance(f, bool) for f in flags):
        raise ValidationError("read_only and root must be true or false", code="invalid_drive")
    return body["path"], flags[0], flags[1]


async def attach(request: web.Request) -> web.Response:
    """Attach a drive (resolved in the image directories; writable ones copied first)."""
    manager = request.app[MANAGER]
    name, drive_id = request.match_info["name"], request.match_info["drive_id"]
    given, read_only, root = _attach_body(await read_json(request))
    vm = manager.running(name)
    assert vm.vmm is not None
    source = image_paths.resolve_file(f"drive {drive_id}", given, manager.settings.all_image_dirs)
    target = source if read_only else copy_path(manager.paths(name).workdir, drive_id)
    if not read_only:
        await asyncio.to_thread(shutil.copyfile, source, target)
    try:
        async with FirecrackerClient(vm.vmm.paths.api_sock) as fc:
            await fc.put_drive(drive_id, path_on_host=str(target), is_root_device=root, is_read_only=read_only)
    except FirecrackerAPIError as exc:
        if not read_only:
            target.unlink(missing_ok=True)
        if exc.status >= 500:
            raise
        raise ValidationError(f"Firecracker refused drive {drive_id!r}: {exc.fault_message}",
                              hint="drives are added before start ('fc-macos run --no-start'); after start only "
                              "where Firecracker supports hot-plug", code="drive_refused") from exc  # fmt: skip
    except BaseException:
        if not read_only:
            target.unlink(missing_ok=True)
        raise
    return web.json_response({"id": drive_id, "path": str(target), "source": str(source),
                              "read_only": read_only, "root": root})  # fmt: skip


__all__ = ["QUIET_STATES", "attach", "download", "drive_file"]
