"""Bearer-token authentication of every route but ``GET /healthz``.

The token lives in a file (``--token-file``); :func:`load_or_create_token`
creates it (mode 0600, ``secrets.token_urlsafe``) when missing. Comparison is
constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from fc_macos.agent.http_errors import error_response
from fc_macos.errors import AgentAuthError, ConfigError

#: Paths served without a token.
PUBLIC_PATHS = frozenset({"/healthz"})


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one is written there (0600) if the
    file is missing. Raises ConfigError if it cannot be read or written."""
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}", hint="check its permissions") from exc
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(token + "\n")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the token file {path}: {exc}",
            hint="pass --token-file with a writable path, or run fc-agent as root",
        ) from exc
    return token


def token_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = token.encode()

    @web.middleware
    async def check_token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            err = AgentAuthError(
                "missing or wrong token" if header else "this request needs a token",
                hint="send 'Authorization: Bearer <token>'; the token is in fc-agent's token file "
                "(run 'fc-macos setup' again to refresh the saved one)",
            )
            resp = error_response(err)
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return await handler(request)

    return check_token
