"""The only place that turns errors into HTTP answers.

Domain code raises :mod:`fc_macos.errors` types; :func:`error_middleware`
maps them to a status code and the JSON body ``{"error", "message", "hint"}``
(plus ``step`` and ``fault_message`` for boot failures). aiohttp's own HTTP
errors (unknown route, wrong method, body too large ...) get the same JSON
shape, never HTML. Anything unexpected is the agent's fault: 500, logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from fc_macos.errors import (
    AgentAuthError,
    BootError,
    ConflictError,
    FcMacosError,
    FirecrackerAPIError,
    FirecrackerUnavailable,
    NoSpaceError,
    NotFoundError,
    UsageError,
    ValidationError,
)

log = logging.getLogger("fc_agent.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Most specific first.
STATUS_OF: tuple[tuple[type[FcMacosError], int], ...] = (
    (AgentAuthError, 401),
    (BootError, 422),
    (UsageError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (FirecrackerAPIError, 502),
    (FirecrackerUnavailable, 502),
    (NoSpaceError, 507),
)

_HTTP_CODES = {
    400: ("bad_request", "check the request against GET /openapi.json"),
    401: ("unauthorized", "send 'Authorization: Bearer <token>' with the token from fc-agent's token file"),
    404: ("not_found", "see GET /openapi.json for the agent's routes"),
    405: ("method_not_allowed", "see GET /openapi.json for the methods each route accepts"),
    413: ("too_large", "send a smaller request body"),
}


def status_for(exc: FcMacosError) -> int:
    """The status of ``exc``: its own ``http_status`` if it has one (the guest
    channel's errors, see :mod:`fc_macos.agent.guest_errors`), else by class."""
    own = getattr(exc, "http_status", None)
    if isinstance(own, int):
        return own
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status
    return 500


#: Hints for errors raised without one (every answer says what to do next).
DEFAULT_HINTS = {
    400: "fix the request; GET /openapi.json describes every body and query",
    404: "list what exists with GET /v1/microvms",
    403: "check the permissions inside the guest",
    409: "check the microVM's state with GET /v1/microvms/NAME",
    413: "ask for less, or stream it (the WebSocket form)",
    422: "check the microVM spec and fc-agent's log",
    500: "see fc-agent's log",
    502: "the Firecracker process may have exited: check the microVM's state and logs",
    504: "check the microVM's console log (GET /v1/microvms/NAME/logs)",
    507: "free space on the agent's disk",
}


def error_body(exc: FcMacosError) -> dict[str, Any]:
    body = exc.to_dict()
    if not body.get("hint"):
        body["hint"] = DEFAULT_HINTS.get(status_for(exc), DEFAULT_HINTS[500])
    if isinstance(exc, BootError):
        body["step"] = exc.step
        cause = exc.__cause__
        if isinstance(cause, FirecrackerAPIError):
            body["fault_message"] = cause.fault_message
    return body


def error_response(exc: FcMacosError) -> web.Response:
    return web.json_response(error_body(exc), status=status_for(exc))


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code, hint = _HTTP_CODES.get(exc.status, ("http_error", "see GET /openapi.json"))
    message = exc.reason if exc.status != 413 else f"request body too large: {exc.text}"
    resp = web.json_response({"error": code, "message": message, "hint": hint}, status=exc.status)
    if exc.status == 405 and "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FcMacosError as exc:
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response(
            {"error": "internal", "message": "the agent failed unexpectedly", "hint": "see fc-agent's log"},
            status=500,
        )


# A typed request key where aiohttp has them (3.14+; a plain name before, which it warns about).
_PARSED_BODY: Any = web.RequestKey("fc_agent_json_body", object) if hasattr(web, "RequestKey") else "fc_agent.json_body"


async def read_json(request: web.Request) -> Any:
    """The request's JSON body (``None`` when empty), parsed once per request
    (the contract check and the handler share it: do not change it).
    Malformed JSON is a ValidationError; a body over the limit becomes
    aiohttp's 413."""
    if _PARSED_BODY in request:
        return request[_PARSED_BODY]
    raw = await request.read()
    if not raw.strip():
        body = None
    else:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValidationError(
                f"request body is not valid JSON: {exc}",
                hint="send a JSON object with 'Content-Type: application/json'",
                code="malformed_json",
            ) from exc
    request[_PARSED_BODY] = body
    return body
