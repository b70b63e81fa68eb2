"""``BlockingAgent``: :class:`~fc_macos.agent.client.AgentClient` for code without an event loop.

Providers, setup and scripts call fc-agent synchronously; this is the one way
they do it (there is no second agent client). A private event loop runs in a
daemon thread (:class:`~fc_macos.loop_thread.LoopThread`, shared with the sync Python API), one ``AgentClient`` session lives on it, and each call runs a
coroutine there and waits for its result::

    with BlockingAgent(url, token) as agent:
        agent.health()                                  # {"status": "ok", "version": ...}
        infos = agent.run(lambda c: c.list_microvms())  # any AgentClient method
        for text in agent.iterate(lambda c: c.logs("web", follow=True)):
            print(text, end="")                         # any async iterator it returns

Errors are AgentClient's own typed errors (``AgentUnreachable``,
``AgentAuthError``, ``NotFoundError`` ...), raised in the caller's thread.
A ``BlockingAgent`` may be used from several threads; calls are serialised by
the loop. ``close()`` is idempotent; the loop starts on first use, so making
one costs nothing. Interrupting a call (Ctrl+C) cancels its coroutine.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from fc_macos.loop_thread import LoopThread

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient
    from fc_macos.agent.wire import MicroVMInfo
    from fc_macos.config import AgentEndpoint

T = TypeVar("T")
_END = object()  # what iterate()'s step returns at the end of the iterator

#: Per-read timeout of the providers' probes; creating a microVM needs AgentClient's longer default.
PROBE_TIMEOUT_S = 5.0


class BlockingAgent:
    """Blocking calls to one fc-agent at ``url`` with ``token`` (``None``: only
    ``/healthz`` works). ``timeout`` is AgentClient's per-read timeout;
    ``fingerprint`` pins the agent's certificate and ``context`` names the
    context in hints (see AgentClient)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float | None = None,
                 home: Path | None = None, fingerprint: str | None = None, context: str | None = None) -> None:
        self.url = url
        self.token = token
        self._options: dict[str, Any] = {"home": home, "fingerprint": fingerprint, "context": context}
        if timeout is not None:
            self._options["timeout"] = timeout
        self._loop: LoopThread | None = None
        self._client: AgentClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_endpoint(cls, endpoint: AgentEndpoint, **kwargs: Any) -> BlockingAgent:
        return cls(endpoint.url, endpoint.token, fingerprint=endpoint.fingerprint, context=endpoint.context, **kwargs)

    def __enter__(self) -> BlockingAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the generic call ------------------------------------------------------------------

    def run(self, work: Callable[[AgentClient], Awaitable[T]]) -> T:
        """Run ``work(client)`` on the private loop and return its result (or raise its error)."""
        loop, client = self._start()

        async def call() -> T:
            return await work(client)

        return loop.run(call())

    def iterate(self, make: Callable[[AgentClient], AsyncIterator[T]]) -> Iterator[T]:
        """Yield what the async iterator ``make(client)`` yields (``c.logs(...)``, a
        console ...), one item per step of the loop; leaving the ``for`` early closes it."""
        loop, client = self._start()
        iterator = make(client)

        async def step() -> object:
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return _END

        try:
            while True:
                item = loop.run(step())
                if item is _END:
                    return
                yield cast(T, item)
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None and self._loop is loop:
                loop.run(close())

    # -- what providers and scripts ask most -----------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` (no token needed)."""
        return self.run(lambda c: c.health())

    def info(self) -> dict[str, Any]:
        """``GET /v1/info`` (checks the token too)."""
        return self.run(lambda c: c.info())

    def answers(self) -> bool:
        """Whether the agent answers ``/v1/info`` with this token; never raises an FcMacosError."""
        from fc_macos.errors import FcMacosError

        try:
            self.info()
        except FcMacosError:
            return False
        return True

    def list_microvms(self) -> list[MicroVMInfo]:
        return self.run(lambda c: c.list_microvms())

    def stop_microvm(self, name: str, *, force: bool = False, timeout_s: float = 10.0) -> MicroVMInfo:
        return self.run(lambda c: c.stop_microvm(name, force=force, timeout_s=timeout_s))

    # -- the loop --------------------------------------------------------------------------

    def _start(self) -> tuple[LoopThread, AgentClient]:
        with self._lock:
            if self._loop is not None and self._client is not None:
                return self._loop, self._client
            from fc_macos.agent.client import AgentClient

            loop = LoopThread("fc-macos-agent")
            client = AgentClient(self.url, self.token or "", **self._options)
            loop.run(client.__aenter__())
            self._loop, self._client = loop, client
            return loop, client

    def close(self) -> None:
        """Close the session and stop the loop's thread; safe to call twice."""
        with self._lock:
            loop, client = self._loop, self._client
            self._loop = self._client = None
        if loop is None:
            return
        if client is not None:
            loop.run(client.close())
        loop.close()


__all__ = ["PROBE_TIMEOUT_S", "BlockingAgent"]
