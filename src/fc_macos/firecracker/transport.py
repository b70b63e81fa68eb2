"""The raw layer of the Firecracker client: HTTP over one API Unix socket.

:class:`FirecrackerTransport` speaks HTTP/1.1 over the socket with aiohttp
(``Host: localhost``), over one kept-alive connection by default (Firecracker
handles requests one at a time); a request whose kept-alive connection
Firecracker dropped unanswered is sent once more on a new one, and
``keep_alive=False`` opens one connection per request. :meth:`~FirecrackerTransport.request` returns every answer
unchanged (the agent's raw relay uses it); :func:`error_from_response` turns a
non-2xx answer into :class:`~fc_macos.errors.FirecrackerAPIError`. Socket
trouble (missing, refused, reset, timeout) raises
:class:`~fc_macos.errors.FirecrackerUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Mapping, TypeVar, cast

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from fc_macos.errors import FirecrackerAPIError, FirecrackerUnavailable
from fc_macos.firecracker import models as m
from fc_macos.firecracker.spec import SPEC_VERSION, validate_body

DEFAULT_TIMEOUT = 10.0

T = TypeVar("T", bound="FirecrackerTransport")


def _hint(status: int, fault: str) -> str:
    lowered = fault.lower()
    if "not supported before starting" in lowered:
        return "this call only works once the microVM runs: send InstanceStart first"
    if "not supported after starting" in lowered:
        return "this call is pre-boot only: configure it before InstanceStart (or in a new microVM)"
    if status == 413:
        return "the body is too large for Firecracker (MMDS size limit or --http-api-max-payload-size)"
    if status >= 500:
        return "Firecracker failed internally: check its log"
    return f"Firecracker's message says what to fix; see the Firecracker {SPEC_VERSION} API for this endpoint"


def error_from_response(response: m.FirecrackerResponse) -> FirecrackerAPIError:
    """The :class:`FirecrackerAPIError` for a non-2xx answer.

    ``fault_message`` comes from ``{"fault_message"}`` (Firecracker's own
    errors) or ``{"error"}`` (micro_http's HTTP-level errors); for any other
    body it is the raw text. ``body`` always keeps the raw text.
    """
    fault = ""
    try:
        parsed = json.loads(response.body) if response.body.strip() else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("fault_message", "error"):
            if isinstance(parsed.get(key), str):
                fault = parsed[key]
                break
    if not fault:
        fault = response.text.strip() or "(no body)"
    return FirecrackerAPIError(response.status, fault, body=response.text, hint=_hint(response.status, fault))


class FirecrackerTransport:
    """Async HTTP access to the Firecracker API at ``socket_path``.

    Use as ``async with ...``, or call :meth:`close` when done (the aiohttp
    session opens on first use). ``timeout`` bounds each request, in seconds.
    ``validate`` says whether :meth:`_call` checks bodies against the spec.
    With ``keep_alive`` (the default) one connection serves many requests; a
    request that finds its kept-alive connection closed by Firecracker (which
    drops a connection after an HTTP-level error) is sent once more on a new one.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        validate: bool = True,
        keep_alive: bool = True,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.validate = validate
        self.keep_alive = keep_alive
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self: T) -> T:
        self._get_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session. Idempotent; the client may be used again afterwards."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.UnixConnector(path=self.socket_path, force_close=not self.keep_alive)
            # Bytes pass through as sent: no compression asked for, none undone.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> m.FirecrackerResponse:
        """Send one request and return the answer unchanged, whatever its status.

        ``body`` is sent as JSON; ``data`` sends bytes as they are (not both).
        ``path`` (with any query string) is sent without re-encoding. Nothing is
        validated. Raises :class:`FirecrackerUnavailable` when the socket cannot
        be reached or does not answer within the timeout.
        """
        if body is not None and data is not None:
            raise ValueError("give either body (JSON) or data (bytes), not both")
        send_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            send_headers.setdefault("Content-Type", "application/json")
        if not path.startswith("/"):
            path = "/" + path
        limit = self.timeout if timeout is None else timeout
        try:
            try:
                return await self._send(method, path, data, send_headers, limit)
            except aiohttp.ServerDisconnectedError:
                if not self.keep_alive:
                    raise
                # The kept-alive connection was closed before our request was read.
                return await self._send(method, path, data, send_headers, limit)
        except asyncio.TimeoutError as exc:
            raise FirecrackerUnavailable(
                f"Firecracker at {self.socket_path} did not answer {method.upper()} {path} within {limit:g}s",
                hint="check that the Firecracker process is alive and not stuck (its log says more); "
                "slow calls such as snapshots may need a longer timeout",
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(exc) from exc
        except aiohttp.ClientError as exc:
            raise FirecrackerUnavailable(
                f"connection to Firecracker at {self.socket_path} failed during {method.upper()} {path}: {exc}",
                hint="the Firecracker process may have exited: check its log and exit status",
            ) from exc

    async def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], limit: float
    ) -> m.FirecrackerResponse:
        async with self._get_session().request(
            method.upper(),
            URL("http://localhost" + path, encoded=True),
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=limit),
        ) as resp:
            raw = await resp.read()
            return m.FirecrackerResponse(resp.status, CIMultiDictProxy(CIMultiDict(resp.headers)), raw)

    def _unreachable(self, exc: Exception) -> FirecrackerUnavailable:
        if not os.path.exists(self.socket_path):
            return FirecrackerUnavailable(
                f"Firecracker API socket {self.socket_path} does not exist",
                hint="start Firecracker with --api-sock at this path (it creates the socket at startup), "
                "or check that the microVM is still running",
            )
        return FirecrackerUnavailable(
            f"cannot connect to Firecracker API socket {self.socket_path}: {exc}",
            hint="nothing listens there: the Firecracker process has probably exited (check its log); "
            "remove the stale socket before starting a new one",
        )

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self.validate:
            validate_body(method, path, body)
        response = await self.request(method, path, body)
        if not response.ok:
            raise error_from_response(response)
        return None if response.status == 204 else response.json()

    async def wait_ready(self, timeout: float = 5.0, *, interval: float = 0.02) -> m.InstanceInfo:
        """Poll until the socket exists and ``GET /`` answers; return the instance info.

        Raises :class:`FirecrackerUnavailable` (with a hint) when ``timeout``
        seconds pass first, and :class:`FirecrackerAPIError` if ``GET /`` is
        answered with an error.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: FirecrackerUnavailable | None = None
        while True:
            remaining = deadline - loop.time()
            if os.path.exists(self.socket_path):
                try:
                    info = await self._probe(max(remaining, 0.05))
                    return cast(m.InstanceInfo, info)
                except FirecrackerUnavailable as exc:
                    last = exc
            if loop.time() >= deadline:
                break
            await asyncio.sleep(min(interval, max(deadline - loop.time(), 0)))
        state = "exists but does not answer" if os.path.exists(self.socket_path) else "never appeared"
        raise FirecrackerUnavailable(
            f"Firecracker API socket {self.socket_path} {state} within {timeout:g}s"
            + (f" (last error: {last.message})" if last else ""),
            hint="check that Firecracker started (its stderr and log say why not) and that --api-sock names this path",
        )

    async def _probe(self, limit: float) -> Any:
        response = await self.request("GET", "/", timeout=min(limit, self.timeout))
        if not response.ok:
            raise error_from_response(response)
        return response.json()


__all__ = ["DEFAULT_TIMEOUT", "FirecrackerTransport", "error_from_response"]
