"""Published ports and TCP streams into guests.

A published port is a TCP listener the agent owns on its own machine
(``host_addr:host_port``); every connection it accepts is bridged to
``guest_port`` inside the microVM through the guest agent's ``connect``
operation over vsock (the guest needs no network device). The manager
publishes a microVM's ports when it is created (``ports`` in the spec) or
later (``POST /ports``), publishes them again after an agent restart, and
frees them when the microVM stops or is deleted. The WebSocket tunnel
(``GET /tunnel``) uses the same :func:`connect_guest_port`.

Bridging follows the guest agent's rule: EOF on either side ends both
directions (after what was read has been written).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable

from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.agent.guest_errors import translate
from fc_macos.agent.tasks import cancel_until_done
from fc_macos.agent.wire import PortSpec
from fc_macos.errors import ConflictError, FcMacosError
from fc_macos.guest.errors import GuestAgentError, GuestConnectionRefused
from fc_macos.guest.protocol import GuestConnection

log = logging.getLogger("fc_agent.ports")

CHUNK = 256 * 1024
#: How long a connection to a published port waits for a guest agent that is still starting.
WAIT_READY_S = 30.0
GUEST_HOST = "127.0.0.1"


async def connect_guest_port(agent: GuestAgent, port: int, host: str = GUEST_HOST) -> GuestConnection:
    """A connection whose ``reader``/``writer`` are a raw byte stream to
    ``host:port`` inside the guest (the caller closes it). Raises
    GuestAgentNotReady, or 409 ``guest_port_closed`` naming the port, or the
    translated guest error."""
    conn = await agent.open()
    try:
        await conn.connect(port, host)
    except GuestAgentError as exc:
        await conn.close()
        error = translate(exc, agent.name)
        if isinstance(exc, GuestConnectionRefused):
            error.message = f"nothing listens on {host}:{port} in microVM {agent.name!r}"
        raise error from exc
    except BaseException:
        await conn.close()
        raise
    return conn


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    """Copy a -> b and b -> a until either side ends; then close both."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.create_task(pump(a[0], b[1])), asyncio.create_task(pump(b[0], a[1]))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_until_done(tasks)
        for _, writer in (a, b):
            writer.close()


class PortPublisher:
    """The agent's published ports, by microVM. ``guest_of(name)`` gives the
    microVM's GuestAgent (raising when it does not run). Use from one event loop."""

    def __init__(self, guest_of: Callable[[str], GuestAgent]) -> None:
        self.guest_of = guest_of
        self._servers: dict[str, dict[PortSpec, asyncio.Server]] = {}
        self._bridges: set[asyncio.Task[None]] = set()

    def ports(self, name: str) -> list[PortSpec]:
        """The ports ``name`` publishes now, in the order they were published."""
        return list(self._servers.get(name, {}))

    def owner(self, port: PortSpec) -> str | None:
        """The microVM publishing ``port``'s host port (on any of its addresses), if one does."""
        for name, servers in self._servers.items():
            if any(p.host_port == port.host_port for p in servers):
                return name
        return None

    async def publish(self, name: str, port: PortSpec) -> None:
        """Listen on ``port.address`` for microVM ``name``. ConflictError
        ``port_in_use`` naming the address when it is taken, ``port_not_allowed``
        or ``bad_host_addr`` when the machine refuses it (a low port without
        the right, an address it does not have): like a taken port, these
        depend on the machine, not on the request's form. Idempotent for a port
        ``name`` already publishes."""
        if port in self._servers.get(name, {}):
            return

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._bridges.add(task)
            try:
                await self._bridge(name, port, reader, writer)
            finally:
                self._bridges.discard(task)

        try:
            server = await asyncio.start_server(accepted, port.host_addr, port.host_port, reuse_address=True)
        except OSError as exc:
            raise self._bind_error(name, port, exc) from exc
        self._servers.setdefault(name, {})[port] = server
        log.info("%s: publishing %s -> guest port %d", name, port.address, port.guest_port)

    def _bind_error(self, name: str, port: PortSpec, exc: OSError) -> FcMacosError:
        if exc.errno == errno.EADDRINUSE:
            owner = self.owner(port)
            by = f" (microVM {owner!r} publishes it)" if owner else ""
            return ConflictError(
                f"{port.address} is already in use on the agent's machine{by}",
                hint=f"pick another host port for microVM {name!r}, or free {port.address} "
                f"(see 'ss -ltnp sport = :{port.host_port}' on the agent's machine)",
                code="port_in_use",
            )
        if exc.errno == errno.EACCES:
            return ConflictError(
                f"the agent may not listen on {port.address}: {exc.strerror}",
                hint="ports below 1024 need root (or CAP_NET_BIND_SERVICE): pick a port >= 1024",
                code="port_not_allowed",
            )
        return ConflictError(
            f"cannot listen on {port.address}: {exc.strerror or exc}",
            hint="host_addr must be an address of the agent's machine (0.0.0.0: all of them)",
            code="bad_host_addr",
        )

    async def unpublish(self, name: str, port: PortSpec) -> bool:
        """Stop listening on ``port`` for ``name``; False if it was not published.
        Connections already bridged carry on until either side ends."""
        server = self._servers.get(name, {}).pop(port, None)
        if server is None:
            return False
        server.close()
        log.info("%s: no longer publishing %s", name, port.address)
        if not self._servers.get(name):
            self._servers.pop(name, None)
        return True

    async def unpublish_all(self, name: str) -> None:
        """Free every port of ``name``. Idempotent."""
        for port in self.ports(name):
            await self.unpublish(name, port)

    async def close(self) -> None:
        """Stop every listener and bridged connection (the agent shuts down;
        the ports come back when it starts again). Idempotent."""
        for name in list(self._servers):
            for server in self._servers.pop(name).values():
                server.close()
        await cancel_until_done(list(self._bridges))

    async def _bridge(self, name: str, port: PortSpec, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            agent = self.guest_of(name)
            if agent.state == "starting":
                await agent.wait_ready(WAIT_READY_S)
            conn = await connect_guest_port(agent, port.guest_port)
        except FcMacosError as exc:
            log.info("%s: a connection to %s was refused: %s", name, port.address, exc.message)
            writer.close()
            return
        except Exception:
            writer.close()
            raise
        await splice((reader, writer), (conn.reader, conn.writer))


__all__ = ["PortPublisher", "connect_guest_port", "splice"]
