"""HTTP handlers of a microVM's lifecycle beyond create/stop/delete: start a
stopped microVM again, restart it, and the agent's snapshots
(``/v1/microvms/{name}/start``, ``/restart``, ``/v1/snapshots``). They parse
the request and leave the work to :mod:`manager_lifecycle` and
:mod:`snapshots`; errors become JSON in :mod:`http_errors`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fc_macos.agent.http_errors import read_json
from fc_macos.agent.routing import MANAGER
from fc_macos.agent.wire import DEFAULT_WAIT_TIMEOUT_S
from fc_macos.errors import ValidationError



def parse_start(body: dict[str, Any] | None, *, restart: bool = False) -> dict[str, Any]:
    """The keyword arguments of a start (or restart) request body, already
    checked against ``StartRequest``/``RestartRequest`` by the contract
    middleware (:mod:`fc_macos.agent.contract`): ``wait`` and ``wait_timeout_s``,
    plus, for a restart, ``force`` and ``timeout_s`` (of the stop)."""
    body = body or {}
    out: dict[str, Any] = {
        "wait": body.get("wait", "guest_agent") is not None,
        "wait_timeout_s": float(body.get("wait_timeout_s", DEFAULT_WAIT_TIMEOUT_S)),
    }
    if restart:
        out |= {"force": bool(body.get("force", False)), "timeout_s": float(body.get("timeout_s", 10.0))}
    return out


async def start_microvm(request: web.Request) -> web.Response:
    options = parse_start(await read_json(request))
    info = await request.app[MANAGER].start_again(request.match_info["name"], **options)
    return web.json_response(info.to_dict())


async def restart_microvm(request: web.Request) -> web.Response:
    options = parse_start(await read_json(request), restart=True)
    info = await request.app[MANAGER].restart(request.match_info["name"], **options)
    return web.json_response(info.to_dict())


async def list_snapshots(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    return web.json_response({"directory": str(manager.settings.snapshots_dir), "snapshots": manager.snapshots.list()})


async def delete_snapshot(request: web.Request) -> web.Response:
    path = request.query.get("path", "")
    if not path:
        raise ValidationError("give the snapshot's state file: ?path=NAME (or an absolute path)",
                              hint="list them with GET /v1/snapshots")  # fmt: skip
    removed = request.app[MANAGER].snapshots.remove(path)
    return web.json_response({"removed": removed})


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("POST", "/v1/microvms/{name}/start", start_microvm),
    ("POST", "/v1/microvms/{name}/restart", restart_microvm),
    ("GET", "/v1/snapshots", list_snapshots),
    ("DELETE", "/v1/snapshots", delete_snapshot),
)


__all__ = ["ROUTES", "parse_start"]
