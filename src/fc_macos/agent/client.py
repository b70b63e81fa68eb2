"""``AgentClient``: the host side's async client of fc-agent (see docs/design.md).

One method per agent endpoint (the image directory's in
:mod:`fc_macos.agent.client_images`). The agent's JSON error bodies
(``{"error", "message", "hint"}``) are turned back into the typed errors of
:mod:`fc_macos.errors`, each with a hint that says what to do next; connection
failures become :class:`~fc_macos.errors.AgentUnreachable`. The client never
prints.

Usage::

    async with AgentClient(url, token) as agent:
        info = await agent.create_microvm(MicroVMSpec(vcpus=2))
        async with agent.console(info.name) as console:
            await console.send(b"uname -a\\n")
            print(await console.receive())
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import json
import os
import posixpath
import socket
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from fc_macos.agent.client_images import ImagesMixin
from fc_macos.agent.client_streams import ExecResult, ExecSession, GuestStat, TunnelStream, error_of_exec, json_object
from fc_macos.agent.client_tls import connector_ssl, plain_http_to_tls, tls_error
from fc_macos.agent.wire import MicroVMInfo, MicroVMSpec
from fc_macos.config import AgentEndpoint, home_dir
from fc_macos.errors import (
    EXEC_EXIT_CODES,
    AgentAuthError,
    AgentError,
    AgentRequestError,
    AgentUnreachable,
    BootError,
    ConflictError,
    ExecError,
    NoSpaceError,
    FcMacosError,
    FirecrackerAPIError,
    FirecrackerUnavailable,
    GuestAgentUnavailable,
    NotFoundError,
)

DEFAULT_TIMEOUT_S = 120.0  # creating a microVM boots it before the agent answers
CONNECT_TIMEOUT_S = 5.0
UNREACHABLE_HINT = "check it with 'fc-macos vm status'; start it with 'fc-macos vm start'"
FILE_CHUNK = 256 * 1024
GUEST_AGENT_CODES = ("guest_agent_absent", "guest_agent_starting", "guest_agent_unresponsive", "guest_agent_timeout")
Progress = Callable[[int], None]


class ConsoleStream:
    """A microVM's serial console: bytes both ways, plus window-size control.

    ``receive()`` returns the next chunk of guest output, or ``None`` once the
    agent has closed the console (the microVM stopped or the agent went away).
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        """Send keyboard input to the guest, unchanged."""
        try:
            await self._ws.send_bytes(data)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise AgentUnreachable(f"console connection lost: {exc}", hint="run 'fc-macos vm status'") from exc

    async def resize(self, rows: int, cols: int) -> None:
        """Tell the agent the terminal's size (a text control frame)."""
        try:
            await self._ws.send_str(json.dumps({"type": "resize", "rows": rows, "cols": cols}))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise AgentUnreachable(f"console connection lost: {exc}", hint="run 'fc-macos vm status'") from exc

    async def receive(self) -> bytes | None:
        """The next chunk of guest output; ``None`` when the console closed."""
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type == aiohttp.WSMsgType.TEXT:
                continue  # control frames from the agent; nothing to show
            return None

    async def close(self) -> None:
        await self._ws.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (chunk := await self.receive()) is not None:
            yield chunk


class AgentClient(ImagesMixin):
    """Async client of one fc-agent. Use as ``async with AgentClient(...)``.

    ``home`` is only used to name the token file in error hints; ``context``
    (a context's name) makes the hints speak of that context. With
    ``fingerprint`` (``SHA256:...``) the agent's certificate is pinned: no other
    is accepted, and no CA is asked (:mod:`fc_macos.agent.client_tls`). Every
    method raises :class:`~fc_macos.errors.FcMacosError` subclasses only.
    """

    def __init__(self, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT_S, home: Path | None = None,
                 fingerprint: str | None = None, context: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.home = home
        self.fingerprint = fingerprint
        self.context = context
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_endpoint(cls, endpoint: AgentEndpoint, **kwargs: Any) -> AgentClient:
        return cls(endpoint.url, endpoint.token, fingerprint=endpoint.fingerprint, context=endpoint.context, **kwargs)

    async def __aenter__(self) -> AgentClient:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            # exec sessions and tunnels each hold a connection for as long as they last
            connector=aiohttp.TCPConnector(limit=0, ssl=connector_ssl(self.fingerprint)),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=self.timeout),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- endpoints ---------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``GET /healthz`` (no token needed): ``{"status": "ok", "version"}``."""
        return await self._json("GET", "/healthz")

    async def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the agent's API as an OpenAPI document."""
        return await self._json("GET", "/openapi.json")

    async def info(self) -> dict[str, Any]:
        """``GET /v1/info``: version, arch, Firecracker binary, image directories."""
        return await self._json("GET", "/v1/info")

    async def snapshot_path(self, path: str) -> str:
        """``path`` as a snapshot path on the agent's machine: absolute paths
        unchanged, relative ones (bare names) inside the agent's snapshot
        directory (``snapshot_dir`` of ``GET /v1/info``), where a snapshot
        restore (``MicroVMSpec.snapshot``) finds them by name. AgentError if
        the agent does not report that directory (an older fc-agent)."""
        if posixpath.isabs(path):
            return path
        snapshot_dir = (await self.info()).get("snapshot_dir")
        if not isinstance(snapshot_dir, str) or not snapshot_dir:
            raise AgentError(
                f"the agent at {self.url} does not report its snapshot directory",
                hint="update fc-agent with 'fc-macos setup', or give absolute snapshot paths",
            )
        return posixpath.join(snapshot_dir, path)

    async def list_microvms(self) -> list[MicroVMInfo]:
        data = await self._json("GET", "/v1/microvms")
        return [MicroVMInfo.from_dict(item) for item in data.get("microvms", [])]

    async def create_microvm(self, spec: MicroVMSpec) -> MicroVMInfo:
        """Create a microVM and return it: booted and ``running``; ``created``
        (not started) with ``spec.start`` false; restored from
        ``spec.snapshot`` (``running``, or ``paused`` without resume).
        BootError names the failing step. Not idempotent."""
        return MicroVMInfo.from_dict(await self._json("POST", "/v1/microvms", body=spec.to_request()))

    async def get_microvm(self, name: str) -> MicroVMInfo:
        return MicroVMInfo.from_dict(await self._json("GET", self._vm_path(name)))

    async def stop_microvm(self, name: str, *, force: bool = False, timeout_s: float = 10.0) -> MicroVMInfo:
        """Stop a microVM (graceful, then killed after ``timeout_s``; at once with ``force``)."""
        body = {"force": force, "timeout_s": timeout_s}
        return MicroVMInfo.from_dict(await self._json("POST", self._vm_path(name) + "/stop", body=body))

    async def delete_microvm(self, name: str, *, force: bool = False) -> None:
        """Delete a microVM and its files; ``ConflictError`` if it runs and not ``force``."""
        params = {"force": "true"} if force else None
        await self._request("DELETE", self._vm_path(name), params=params)

    async def start_microvm(self, name: str, *, wait: bool = True, wait_timeout_s: float = 60.0) -> MicroVMInfo:
        """Boot the stopped microVM ``name`` again from its own disk with its
        own spec (``POST /start``); with ``wait`` once its guest agent answers.
        ConflictError if it runs or its disk is gone; BootError if the boot fails."""
        body = {"wait": "guest_agent" if wait else None, "wait_timeout_s": wait_timeout_s}
        return MicroVMInfo.from_dict(await self._json("POST", self._vm_path(name) + "/start", body=body))

    async def restart_microvm(self, name: str, *, force: bool = False, timeout_s: float = 10.0, wait: bool = True,
                              wait_timeout_s: float = 60.0) -> MicroVMInfo:  # fmt: skip
        """Stop ``name`` if it runs (at once with ``force``), then start it again (``POST /restart``)."""
        body = {"force": force, "timeout_s": timeout_s, "wait": "guest_agent" if wait else None,
                "wait_timeout_s": wait_timeout_s}  # fmt: skip
        return MicroVMInfo.from_dict(await self._json("POST", self._vm_path(name) + "/restart", body=body))

    async def list_snapshots(self) -> dict[str, Any]:
        """``GET /v1/snapshots``: ``{"directory", "snapshots": [{"snapshot_path", "mem_path",
        "microvm", "created_at", "disk", "disk_exists", "snapshot_bytes", "mem_bytes"}]}``."""
        return await self._json("GET", "/v1/snapshots")

    async def delete_snapshot(self, path: str) -> list[str]:
        """Remove the snapshot whose state file is ``path`` (a bare name or a
        listed path) and its memory file; returns the files removed."""
        return list((await self._json("DELETE", "/v1/snapshots", params={"path": path})).get("removed", []))

    async def firecracker(
        self, name: str, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """Relay one Firecracker API call to microVM ``name``.

        Returns ``(status, parsed JSON body or None)`` for a 2xx answer. A non-2xx
        answer from Firecracker raises FirecrackerAPIError carrying Firecracker's
        ``fault_message``; the agent's own errors (unknown microVM ...) raise
        as elsewhere.
        """
        url_path = f"{self._vm_path(name)}/firecracker/{path.lstrip('/')}"
        status, text = await self._raw(method.upper(), url_path, body=body)
        parsed = _parse_json(text)
        if 200 <= status < 300:
            return status, parsed
        if isinstance(parsed, dict) and "fault_message" in parsed:
            raise FirecrackerAPIError(status, str(parsed["fault_message"]), body=text)
        if isinstance(parsed, dict) and "error" in parsed and "message" not in parsed:
            raise FirecrackerAPIError(status, str(parsed["error"]), body=text)
        raise self._error(status, text)

    @asynccontextmanager
    async def console(self, name: str, *, scrollback: bool = True) -> AsyncIterator[ConsoleStream]:
        """Attach to the serial console of microVM ``name`` (a WebSocket).

        With ``scrollback`` the agent first replays what the guest printed so far.
        """
        session = self._need_session()
        params = {} if scrollback else {"scrollback": "0"}
        try:
            ws = await session.ws_connect(
                self.url + self._vm_path(name) + "/console", params=params, heartbeat=30.0
            )
        except aiohttp.WSServerHandshakeError as exc:
            # The handshake loses the error body: ask again to get the typed error.
            await self.get_microvm(name)
            if exc.status == 409:
                raise ConflictError(
                    f"microVM {name!r} is not running, so its console is closed",
                    hint=f"read what it printed with 'fc-macos microvm logs --name {name}'",
                ) from exc
            raise AgentRequestError(exc.status, "console", f"cannot attach to the console of {name!r}: {exc.message}",
                                    hint=f"run 'fc-macos microvm status --name {name}'") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._connection_error(exc) from exc
        stream = ConsoleStream(ws)
        try:
            yield stream
        finally:
            await stream.close()

    async def logs(
        self, name: str, *, source: str = "serial", tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        """Yield a microVM's log text in chunks; with ``follow`` until it stops."""
        params: dict[str, str] = {"source": source}
        if tail is not None:
            params["tail"] = str(tail)
        if follow:
            params["follow"] = "1"
        session = self._need_session()
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=None if follow else self.timeout)
        try:
            async with session.get(self.url + self._vm_path(name) + "/logs", params=params, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise self._error(resp.status, await resp.text())
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                async for chunk in resp.content.iter_any():
                    text = decoder.decode(chunk)
                    if text:
                        yield text
                if tail_text := decoder.decode(b"", final=True):
                    yield tail_text
        except FcMacosError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._connection_error(exc) from exc

    # -- inside the guest (through its guest agent) -------------------------

    async def exec(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
        stdin: bytes | None = None, timeout_s: float | None = None,
    ) -> ExecResult:
        """Run ``argv`` in microVM ``name`` to completion (``POST /exec``) and
        return its exit status and output. For small outputs (16 MiB per
        stream at most; more: :meth:`exec_session`). ExecError (exit code
        127/126) when the command cannot start; GuestAgentUnavailable when the
        guest agent cannot serve. Not idempotent: the command runs each call."""
        body: dict[str, Any] = {"argv": list(argv), "encoding": "base64"}
        if env:
            body["env"] = dict(env)
        if cwd:
            body["cwd"] = cwd
        if stdin is not None:
            body["stdin_b64"] = base64.b64encode(stdin).decode()
        if timeout_s:
            body["timeout_s"] = timeout_s
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=None)
        return ExecResult.from_wire(await self._json("POST", self._vm_path(name) + "/exec", body=body, timeout=timeout))

    @asynccontextmanager
    async def exec_session(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
        tty: bool = False, rows: int | None = None, cols: int | None = None, stdin: bool = False,
        timeout_s: float | None = None,
    ) -> AsyncIterator[ExecSession]:
        """Start ``argv`` in microVM ``name`` over the exec WebSocket and yield
        the running :class:`ExecSession` (streams both ways, resize, signals).
        With ``tty`` the command gets a pty of ``rows`` x ``cols``; with
        ``stdin`` its stdin is the session's (else /dev/null). Leaving the
        block closes the session; a command still running is then killed."""
        start: dict[str, Any] = {"argv": list(argv), "env": dict(env or {}), "tty": tty, "stdin": stdin}
        if cwd:
            start["cwd"] = cwd
        if rows and cols:
            start.update(rows=rows, cols=cols)
        if timeout_s:
            start["timeout_s"] = timeout_s
        ws = await self._ws_connect(self._vm_path(name) + "/exec", {}, f"exec in {name!r}")
        try:
            await ws.send_str(json.dumps(start))
            pid = await self._exec_started(ws)
            session = ExecSession(ws, pid)
            yield session
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise self._connection_error(exc) from exc
        finally:
            await ws.close()

    async def _exec_started(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> int | None:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            answer = json_object(msg.data)
            if answer.get("type") == "started":
                pid = answer.get("pid")
                return int(pid) if pid is not None else None
            if answer.get("type") == "error":  # the guest agent's answer: the command did not start
                raise self._error_of_body(409, answer) if answer.get("error") in GUEST_AGENT_CODES \
                    else error_of_exec(answer)
        raise AgentError("fc-agent closed the exec session before the command started",
                         hint="see the agent's log with 'fc-macos vm logs'")

    async def stat(self, name: str, path: str) -> GuestStat:
        """What ``path`` is in microVM ``name`` (lstat). NotFoundError if it does not exist."""
        data = await self._json("GET", self._vm_path(name) + "/files/stat", params={"path": path})
        return GuestStat.from_dict(path, data)

    async def get_files(self, name: str, path: str, *, progress: Progress | None = None) -> AsyncIterator[bytes]:
        """Yield ``path`` of microVM ``name`` (a file or a tree) as a tar
        stream whose top entry is its basename (``GET /files``).
        ``progress(done_bytes)`` follows the bytes received. A stream that
        breaks off raises AgentError (the agent checks every file's sha256)."""
        session = self._need_session()
        done = 0
        try:
            async with session.get(self.url + self._vm_path(name) + "/files", params={"path": path}) as resp:
                if resp.status >= 400:
                    raise self._error(resp.status, await resp.text())
                async for chunk in resp.content.iter_chunked(FILE_CHUNK):
                    done += len(chunk)
                    if progress is not None:
                        progress(done)
                    yield chunk
        except FcMacosError:
            raise
        except aiohttp.ClientPayloadError as exc:
            raise AgentError(f"the copy of {path} from {name!r} broke off after {done} bytes: {exc}",
                             hint=f"check the microVM with 'fc-macos microvm status --name {name}' and try again") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._connection_error(exc) from exc

    async def put_files(self, name: str, directory: str, tar: AsyncIterable[bytes] | bytes, *,
                        progress: Progress | None = None) -> dict[str, Any]:
        """Unpack the tar stream ``tar`` into the existing ``directory`` of
        microVM ``name`` (``PUT /files``); returns ``{"entries", "bytes"}``.
        ``progress(done_bytes)`` follows the bytes sent. The guest agent puts
        every file in place only once it is complete, so a transfer cut off
        midway leaves nothing new behind."""

        async def body() -> AsyncIterator[bytes]:
            done = 0
            chunks: AsyncIterable[bytes] = _once(tar) if isinstance(tar, bytes) else tar
            async for chunk in chunks:
                done += len(chunk)
                if progress is not None:
                    progress(done)
                yield chunk

        headers = {"Content-Type": "application/x-tar"}
        return await self._json("PUT", self._vm_path(name) + "/files", params={"path": directory},
                                data=body(), headers=headers)

    @asynccontextmanager
    async def tunnel(self, name: str, port: int, *, host: str | None = None) -> AsyncIterator[TunnelStream]:
        """A raw byte stream to TCP ``port`` (on ``host``, default the guest's
        127.0.0.1) inside microVM ``name``. ConflictError (``guest_port_closed``)
        when nothing listens there."""
        params = {"port": str(port)}
        if host:
            params["host"] = host
        ws = await self._ws_connect(self._vm_path(name) + "/tunnel", params, f"tunnel to port {port} of {name!r}")
        stream = TunnelStream(ws)
        try:
            yield stream
        finally:
            await stream.close()

    async def list_ports(self, name: str) -> list[dict[str, Any]]:
        """The ports microVM ``name`` publishes: ``[{"host_addr", "host_port", "guest_port"}]``."""
        return list((await self._json("GET", self._vm_path(name) + "/ports")).get("ports", []))

    async def publish_port(self, name: str, host_port: int, guest_port: int, *,
                           host_addr: str | None = None) -> list[dict[str, Any]]:
        """Publish ``guest_port`` of microVM ``name`` on the agent's machine as
        ``host_addr:host_port`` (default all addresses); returns the ports now
        published. ConflictError (``port_in_use``) when that port is taken."""
        body: dict[str, Any] = {"host_port": host_port, "guest_port": guest_port}
        if host_addr:
            body["host_addr"] = host_addr
        return list((await self._json("POST", self._vm_path(name) + "/ports", body=body)).get("ports", []))

    async def unpublish_port(self, name: str, host_port: int, *, host_addr: str | None = None) -> list[dict[str, Any]]:
        """Stop publishing ``host_port`` (on ``host_addr``, default: every
        address it is published on) of microVM ``name``; returns the ports left."""
        params = {"host_addr": host_addr} if host_addr else None
        await self._request("DELETE", f"{self._vm_path(name)}/ports/{int(host_port)}", params=params)
        return await self.list_ports(name)

    # -- plumbing ----------------------------------------------------------

    @staticmethod
    def _vm_path(name: str) -> str:
        return "/v1/microvms/" + quote(name, safe="")

    def _need_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AgentClient must be used as 'async with AgentClient(...)'")
        return self._session

    async def _raw(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, str]:
        session = self._need_session()
        kwargs["params"] = params
        if body is not None:
            kwargs["json"] = body
        try:
            async with session.request(method, self.url + path, **kwargs) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise (await plain_http_to_tls(exc, self.url) or self._connection_error(exc)) from exc

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        status, text = await self._raw(method, path, **kwargs)
        if status >= 400:
            raise self._error(status, text)
        return _parse_json(text)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        data = await self._request(method, path, **kwargs)
        if not isinstance(data, dict):
            raise AgentError(
                f"the agent at {self.url} answered {method} {path} with something that is not a JSON object",
                hint="is another program listening there? run 'fc-macos vm status'",
            )
        return data

    async def _ws_connect(self, path: str, params: dict[str, str], what: str) -> aiohttp.ClientWebSocketResponse[Any]:
        """Open a WebSocket; a refused handshake becomes the agent's typed error."""
        session = self._need_session()
        try:
            return await session.ws_connect(self.url + path, params=params, heartbeat=30.0, max_msg_size=16 << 20)
        except aiohttp.WSServerHandshakeError as exc:
            # The handshake loses the error body; the agent checks before upgrading,
            # so the same request without the upgrade answers with that body.
            status, text = await self._raw("GET", path, params=params)
            if status == exc.status and isinstance(_parse_json(text), dict):
                raise self._error(status, text) from exc
            raise AgentRequestError(exc.status, "websocket", f"fc-agent refused the {what}: HTTP {exc.status}",
                                    hint="is fc-agent up to date? run 'fc-macos setup' again") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._connection_error(exc) from exc

    def _connection_error(self, exc: BaseException) -> AgentError:
        """What a failed connection stands for: AgentTLSError when TLS failed
        (the certificate is not the pinned one, the agent does not speak TLS),
        else AgentUnreachable."""
        return tls_error(exc, self.url, self.context) or self._unreachable(exc)

    def _unreachable(self, exc: BaseException) -> AgentUnreachable:
        hint = UNREACHABLE_HINT
        if self.context:
            host = urlsplit(self.url).hostname
            hint = (f"is fc-agent running on {host} and its port open? (there: 'systemctl status fc-agent'); "
                    f"check the URL of context '{self.context}' with 'fc-macos context list'")
        return AgentUnreachable(f"cannot reach fc-agent at {self.url}: {_reason(exc)}", hint=hint)

    def _error(self, status: int, text: str) -> FcMacosError:
        """Turn an agent error answer back into the typed error it stands for."""
        parsed = _parse_json(text)
        body = parsed if isinstance(parsed, dict) else {}
        if "error" not in body:
            # fc-agent always answers errors with {"error", ...}: something else holds its
            # address (a stopped VM's old address now routed elsewhere, another program).
            return AgentUnreachable(
                f"cannot reach fc-agent at {self.url}: something else answered HTTP {status}",
                hint=UNREACHABLE_HINT,
            )
        return self._error_of_body(status, body, text)

    def _error_of_body(self, status: int, body: dict[str, Any], text: str = "") -> FcMacosError:
        code = str(body.get("error") or f"http_{status}")
        message = str(body.get("message") or text.strip() or f"the agent answered HTTP {status}")
        hint = body.get("hint")
        if code in GUEST_AGENT_CODES:
            return GuestAgentUnavailable(message, hint=hint, code=code)
        if code in EXEC_EXIT_CODES:
            return ExecError(message, code=code, hint=hint)
        if status == 401 and self.context:
            return AgentAuthError(
                f"the agent at {self.url} refused the token of context '{self.context}': {message}",
                hint="copy the agent's token file again (/etc/fc-agent/token on that host, or its --token-file) "
                f"and replace the context: fc-macos context add {self.context} --url {self.url} "
                f"--token-file FILE --fingerprint {self.fingerprint or 'SHA256:...'} --force",
            )
        if status == 401:
            token_file = (self.home or home_dir()) / "agent.json"
            return AgentAuthError(
                f"the agent refused the token: {message}",
                hint=f"the token in {token_file} does not match the agent's; run 'fc-macos setup' again",
            )
        if status == 404 and code == "not_found":
            # The agent's hint speaks HTTP; the host's user wants the command (and the agent's guess).
            guess = str(hint).split("?")[0] + "? " if str(hint).startswith("did you mean") else ""
            return NotFoundError(message, hint=f"{guess}run 'fc-macos microvm list'")
        if status == 404:  # image_not_found, drive_not_found ...: the agent's own hint
            return NotFoundError(message, hint=hint, code=code)
        if status == 507:
            return NoSpaceError(message, hint=hint)
        if status == 409:
            return ConflictError(message, hint=hint, code=code)
        if code == "boot_failed":
            err = BootError(str(body.get("step") or "unknown"), message, hint=hint)
            err.message = message  # the agent's message already names the step
            err.args = (message,)
            return err
        if code == "firecracker_unavailable":
            return FirecrackerUnavailable(message, hint=hint)
        return AgentRequestError(status, code, message, hint=hint)

    async def host_stats(self) -> dict[str, Any]:
        """``GET /v1/host``: the agent machine's CPUs, CPU % over the last interval,
        memory, disk (of the state directory) and load, and the agent's version,
        pid and uptime (see :mod:`fc_macos.agent.host_stats`). An agent older
        than this endpoint answers 404: NotFoundError."""
        return await self._json("GET", "/v1/host")


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in plain words ("connection refused"), not
    aiohttp's "Cannot connect to host ... ssl:default [Connect call failed ...]"."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            return f"cannot resolve the host name {exc.host!r}"
        if error.errno:
            return os.strerror(error.errno).lower()
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _parse_json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


__all__ = ["AgentClient", "ConsoleStream", "ExecResult", "ExecSession", "GuestStat", "TunnelStream"]
