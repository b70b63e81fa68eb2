"""HTTP handlers of a microVM's lifecycle beyond create/stop/delete: start a
stopped microVM again, restart it, and the agent's snapshots
(``/v1/microvms/{name}/start``, ``/restart``, ``/v1/snapshots``). They parse
the request and leave the work to :mod:`manager_lifecycle` and
:mod:`snapshots`; errors become JSON in :mod:`http_errors`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fc_macos.agent.http_errors import read_json
from fc_macos.agent.manager import MicroVMManager
from fc_macos.agent.wire import DEFAULT_WAIT_TIMEOUT_S, MAX_WAIT_TIMEOUT_S, WAIT_FOR
from fc_macos.errors import ValidationError

MANAGER: web.AppKey[MicroVMManager] = web.AppKey("lifecycle_manager", MicroVMManager)
MAX_STOP_TIMEOUT_S = 3600.0


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValidationError(f"{key} must be a number of seconds between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def parse_start(raw: Any, *, restart: bool = False) -> dict[str, Any]:
    """The keyword arguments of a start (or restart) request body:
    ``{"wait": "guest_agent" | null, "wait_timeout_s"}`` plus, for a restart,
    ``force`` and ``timeout_s`` (of the stop). ValidationError otherwise."""
    body = {} if raw is None else raw
    allowed = {"wait", "wait_timeout_s", *(("force", "timeout_s") if restart else ())}
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", hint='e.g. {"wait": "guest_agent"}')
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", hint=f"allowed fields: {', '.join(sorted(allowed))}",
                              code="unknown_field")  # fmt: skip
    wait = body.get("wait", "guest_agent")
    if wait is not None and wait not in WAIT_FOR:
        raise ValidationError(f"wait must be null or one of {', '.join(WAIT_FOR)}, got {wait!r}",
                              hint='"guest_agent" (the default): answer once the guest agent is ready; null: at once')
    out: dict[str, Any] = {
        "wait": wait is not None,
        "wait_timeout_s": _number(body, "wait_timeout_s", DEFAULT_WAIT_TIMEOUT_S, 0.001, MAX_WAIT_TIMEOUT_S),
    }
    if restart:
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ValidationError(f"force must be true or false, got {force!r}")
        out |= {"force": force, "timeout_s": _number(body, "timeout_s", 10.0, 0, MAX_STOP_TIMEOUT_S)}
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


def add_routes(app: web.Application, manager: MicroVMManager) -> None:
    """Serve the lifecycle routes from ``manager``."""
    app[MANAGER] = manager
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)


__all__ = ["ROUTES", "add_routes", "parse_start"]
