"""Port forwarding from this machine into a microVM, through the agent.

A :class:`Forwarder` listens on local addresses (default ``127.0.0.1``) and
bridges every accepted TCP connection to a guest port over its own tunnel
WebSocket (``AgentClient.tunnel``), many at once. A connection that the guest
refuses (nothing listens on the port) is closed and reported through
``on_event``; the listener keeps going.

Shutdown order (``close()``): stop accepting, close every open connection and
its tunnel, wait for their tasks. Used by ``fc-macos port-forward`` and by the
Python API's ``vm.forward(port)``.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fc_macos.errors import ConflictError, FcMacosError, UsageError

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient, TunnelStream

DEFAULT_ADDR = "127.0.0.1"
READ_SIZE = 64 * 1024


def _port(text: str, what: str, spec: str, *, zero: bool = False) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not (0 if zero else 1) <= port <= 65535:
        raise UsageError(f"invalid {what} {text!r} in {spec!r}",
                         hint="write [ADDR:]LOCAL_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80")
    return port


@dataclass(frozen=True)
class ForwardSpec:
    """``addr:local_port`` on this machine to ``guest_port`` in the guest
    (``local_port`` 0: any free port)."""

    addr: str
    local_port: int
    guest_port: int

    @classmethod
    def parse(cls, spec: str, *, default_addr: str = DEFAULT_ADDR) -> ForwardSpec:
        """``[ADDR:]LOCAL:GUEST``, ``PORT`` (the same port on both sides) or
        ``:GUEST`` (any free local port); IPv6 addresses in brackets."""
        addr, rest = default_addr, spec
        if spec.startswith("["):
            end = spec.find("]:")
            if end < 0:
                raise UsageError(f"invalid address in {spec!r}", hint="write IPv6 addresses as [::1]:8080:80")
            addr, rest = spec[1:end], spec[end + 2:]
        parts = rest.split(":")
        if len(parts) == 3 and addr == default_addr and not spec.startswith("["):
            addr, parts = parts[0] or default_addr, parts[1:]
        if len(parts) == 1:
            port = _port(parts[0], "port", spec)
            return cls(addr, port, port)
        if len(parts) != 2:
            raise UsageError(f"invalid port mapping {spec!r}",
                             hint="write [ADDR:]LOCAL_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80")
        local = _port(parts[0], "local port", spec, zero=True) if parts[0] else 0
        return cls(addr, local, _port(parts[1], "guest port", spec))


@dataclass(frozen=True)
class Listening:
    """A bound listener: ``addr:port`` here -> ``guest_port`` in the guest."""

    addr: str
    port: int
    guest_port: int


class Forwarder:
    """Forwards local ports to microVM ``name``'s ports. ``async with`` (or
    ``start()`` then ``close()``); not restartable after ``close()``."""

    def __init__(self, client: AgentClient, name: str, specs: Sequence[ForwardSpec], *,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.name = name
        self.specs = list(specs)
        self.on_event = on_event or (lambda message: None)
        self.listening: list[Listening] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> list[Listening]:
        """Bind every listener (all or none): ConflictError when a local port
        is taken, naming it."""
        try:
            for spec in self.specs:
                server = await self._listen(spec)
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
                self.listening.append(Listening(spec.addr, port, spec.guest_port))
        except BaseException:
            await self.close()
            raise
        return self.listening

    async def _listen(self, spec: ForwardSpec) -> asyncio.base_events.Server:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(self._connection(reader, writer, spec.guest_port))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

        try:
            return await asyncio.start_server(accepted, spec.addr, spec.local_port, reuse_address=True)
        except OSError as exc:
            where = f"{spec.addr}:{spec.local_port}"
            if exc.errno == errno.EADDRINUSE:
                raise ConflictError(f"{where} is already in use on this machine",
                                    hint=f"pick another local port, e.g. {spec.local_port + 1}:{spec.guest_port}, "
                                    f"or 0 for any free one (:{spec.guest_port})") from exc
            raise FcMacosError(f"cannot listen on {where}: {exc.strerror or exc}",
                               hint="use an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from exc

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, guest_port: int) -> None:
        try:
            async with self.client.tunnel(self.name, guest_port) as tunnel:
                await _bridge(reader, writer, tunnel)
        except FcMacosError as exc:
            self.on_event(f"connection to port {guest_port} of {self.name} failed: {exc.message}")
        except (ConnectionError, OSError):
            pass  # the local client went away
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop accepting, then close every open connection (idempotent)."""
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> Forwarder:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tunnel: TunnelStream) -> None:
    """Copy both ways until either side ends (EOF on either side ends both,
    like the tunnel itself: it has no half-close)."""
    loop = asyncio.get_running_loop()

    async def upstream() -> None:
        while data := await reader.read(READ_SIZE):
            await tunnel.send(data)

    async def downstream() -> None:
        while (data := await tunnel.receive()) is not None:
            writer.write(data)
            await writer.drain()

    tasks = {loop.create_task(upstream()), loop.create_task(downstream())}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a tunnel error reaches the caller
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
