"""JSON answers for the requests aiohttp refuses before the app sees them.

aiohttp's HTTP parser refuses a malformed request line, a NUL or other bad
byte in a header, headers or a request line that are too long, a bad
``Content-Length`` or chunked encoding ... and answers with a ``text/plain``
body from ``RequestHandler.handle_error``, bypassing every middleware.
:class:`AgentRunner` (a ``web.AppRunner``) serves the app with a
``RequestHandler`` whose ``handle_error`` answers the agent's JSON error shape
``{error, message, hint}`` instead (status unchanged: aiohttp answers every
parse error 400; the connection is closed afterwards, as aiohttp does).

``handle_error`` is also how aiohttp answers a handler that raised past the
middlewares (500) or timed out (504); the error middleware catches the former
first, but both get the same shape here.

Not covered, because aiohttp gives no hook there: a connection closed before a
whole request line arrived gets no answer at all, and the parser's own limits
are aiohttp's (8190 bytes for the request line and each header).
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

#: (error code, hint) by status; other statuses get "http_error".
CODES = {
    400: ("bad_http_request", "send a well-formed HTTP/1.1 request (request line, headers, body length)"),
    500: ("internal", "see fc-agent's log"),
    504: ("timeout", "try again; see fc-agent's log"),
}


def error_body(status: int, exc: BaseException | None, message: str | None) -> dict[str, str]:
    """The JSON body for a request aiohttp refused with ``status``."""
    code, hint = CODES.get(status, ("http_error", "see GET /openapi.json"))
    if status >= 500:
        text = "the agent failed unexpectedly" if status == 500 else "the request took too long"
    else:
        text = message or getattr(exc, "message", None) or str(exc or "") or HTTPStatus(status).phrase
        text = f"malformed HTTP request: {text}" if status == 400 else text
    return {"error": code, "message": text, "hint": hint}


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own refusals in JSON."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; raises if an answer has begun
        resp = web.json_response(error_body(status, exc, message), status=status)
        resp.force_close()
        return resp


class JsonErrorServer(Server):
    """aiohttp's ``Server`` (the protocol factory) making :class:`JsonErrorRequestHandler`\\ s."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class AgentRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer aiohttp's refusals in JSON."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorServer  # same state; only the protocol it makes differs
        return server


__all__ = ["AgentRunner", "JsonErrorRequestHandler", "JsonErrorServer", "error_body"]
