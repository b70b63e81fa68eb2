"""The guest agent of each microVM, seen from fc-agent: its state and the way in.

:class:`GuestAgent` tracks one running microVM's guest agent::

    absent        no vsock device (vsock: false), or the agent could not be
                  installed (reason); polled slowly all the same, in case the
                  image brings its own
    starting      polled (``info``) from InstanceStart on, until it answers
    ready         answered (version, ready_s = InstanceStart to ready);
                  a heartbeat checks it every HEARTBEAT_S
    unresponsive  was ready and no longer answers, or did not answer within
                  BOOT_DEADLINE_S of InstanceStart; polled on, it becomes
                  ready again when it answers (its supervisor restarts it)

After a snapshot restore or an agent restart the state starts as
``starting`` and is re-established by polling. :meth:`GuestAgent.open` is the
one way into the guest: a connection to the guest agent's port over the
microVM's hybrid vsock socket, or a 409 that says why there is none.

The protocol serves one operation per connection, and opening one costs a
round trip into the guest (the hybrid vsock ``CONNECT``) and a fork of the
guest agent. So after each operation one connection is opened ahead for the
next (a *spare*): a script's next exec, copy or tunnel starts on a connection
that is already there. A spare nobody takes is closed after SPARE_TTL_S (the
guest agent drops a connection that sends no request within 30 s), and when
the microVM is paused (the guest's clock jumps on resume), so a microVM
nobody uses has none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fc_macos.agent import vsock
from fc_macos.agent.guest_errors import GuestAgentNotReady
from fc_macos.agent.tasks import cancel_until_done
from fc_macos.guest import GUEST_AGENT_PORT
from fc_macos.guest.errors import GuestAgentError, GuestConnectionClosed
from fc_macos.guest.protocol import GuestConnection

log = logging.getLogger("fc_agent.guest_agent")

PROBE_TIMEOUT_S = 3.0
STARTING_INTERVAL_S = 0.25
HEARTBEAT_S = 10.0
RETRY_INTERVAL_S = 1.0
ABSENT_INTERVAL_S = 5.0
BOOT_DEADLINE_S = 120.0
#: How long an operation keeps trying a guest agent that stopped answering
#: (its supervisor restarts it after 0.1 s, backing off to 2 s).
OPEN_RETRY_S = 4.0
#: How long a spare connection is kept for the next operation.
SPARE_TTL_S = 15.0


class GuestAgent:
    """The guest agent of one microVM (see the module docstring).

    ``uds`` is the microVM's vsock socket (None: no vsock device, the state is
    ``absent`` for good). ``absent_reason`` is set when the agent could not be
    installed. ``saved`` holds what its record kept (``version``, ``ready_s``).
    ``on_change`` is called after every state change; ``is_running`` says
    whether the guest runs (no polling while it is paused). Use from one
    event loop; :meth:`close` ends the polling (idempotent).
    """

    def __init__(
        self, name: str, uds: Path | None, *, absent_reason: str | None = None,
        saved: dict[str, Any] | None = None, on_change: Callable[[], None] = lambda: None,
        is_running: Callable[[], bool] = lambda: True,
    ) -> None:  # fmt: skip
        self.name = name
        self.uds = uds
        self.on_change = on_change
        self.is_running = is_running
        self.absent_reason = absent_reason if uds is not None else "the microVM has no vsock device (vsock: false)"
        self.state = "absent" if self.absent_reason else "starting"
        self.reason: str | None = self.absent_reason or "not started yet"
        saved = saved or {}
        self.version: str | None = saved.get("version")
        self.ready_s: float | None = saved.get("ready_s")
        self.info: dict[str, Any] = {}  # the last answer to info
        self._info_at = 0.0
        self.ready = asyncio.Event()
        self.started_at: float | None = None
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # a state change cuts the poller's wait short
        self._closed = False
        self._spare: GuestConnection | None = None
        self._spare_expiry: asyncio.TimerHandle | None = None
        self._dialing: asyncio.Future[GuestConnection] | None = None  # a spare on its way
        self._watchers: set[asyncio.Task[None]] = set()  # one per open connection: refill when it closes

    # -- state --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "version": self.version, "ready_s": self.ready_s, "reason": self.reason,
                "guest": self.guest_facts()}

    def guest_facts(self) -> dict[str, Any] | None:
        """What the guest agent's last ``info`` said of its guest (hostname, kernel,
        arch, addresses, and the uptime it has now), while it is ready; else None."""
        info = self.info
        if self.state != "ready" or not info:
            return None
        uptime = info.get("uptime_s")
        if isinstance(uptime, (int, float)):
            uptime = round(uptime + time.monotonic() - self._info_at, 1)
        addresses = [
            {k: a.get(k) for k in ("ifname", "family", "address", "prefixlen")}
            for a in info.get("addresses") or () if isinstance(a, dict)
        ]  # fmt: skip
        return {"hostname": info.get("hostname"), "kernel": info.get("kernel"), "arch": info.get("arch"),
                "uptime_s": uptime, "addresses": addresses}

    def saved(self) -> dict[str, Any]:
        """What the microVM record keeps of it (given back as ``saved`` after an agent restart)."""
        absent = self.absent_reason if self.uds is not None else None
        return {"version": self.version, "ready_s": self.ready_s, "absent": absent}

    def _set(self, state: str, reason: str | None) -> None:
        if (state, reason) == (self.state, self.reason):
            return
        if state != self.state:
            log.info("%s: guest agent %s -> %s%s", self.name, self.state, state, f" ({reason})" if reason else "")
        self.state, self.reason = state, reason
        self._wake.set()
        if state == "ready":
            self.ready.set()
        else:
            self.ready.clear()
        self.on_change()

    def _answered(self, info: dict[str, Any] | None = None) -> None:
        if info is not None:
            self.info, self._info_at = info, time.monotonic()
            self.version = str(info.get("version")) if info.get("version") is not None else self.version
        if self.ready_s is None and self.started_at is not None:
            self.ready_s = round(max(0.0, time.time() - self.started_at), 3)
        self._set("ready", None)

    def _not_answering(self, reason: str) -> None:
        if self.absent_reason and self.state == "absent":
            return
        self._set("unresponsive", reason)

    # -- polling ------------------------------------------------------------------

    def start(self, started_at: float, *, again: bool = False) -> None:
        """Begin polling: the guest started at ``started_at`` (wall clock:
        InstanceStart, or the snapshot load). ``again``: the agent restarted or
        the guest was restored, so the state is re-established. Idempotent."""
        if self.uds is None or self._task is not None:
            return
        self.started_at = started_at
        self._deadline = max(started_at + BOOT_DEADLINE_S, time.time() + 10.0) if again else started_at + BOOT_DEADLINE_S
        if not self.absent_reason:
            self._set("starting", "re-checking after an agent restart or a restore" if again else "the guest is booting")
        self._task = asyncio.get_running_loop().create_task(self._poll(), name=f"guest-agent-{self.name}")

    async def _poll(self) -> None:
        while not self._closed:
            if not self.is_running():
                await asyncio.sleep(RETRY_INTERVAL_S)
                continue
            try:
                info = await self.probe()
            except (vsock.VsockDialError, GuestAgentError) as exc:
                self._probe_failed(exc.message)
            else:
                self._answered(info)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval())
            except asyncio.TimeoutError:
                pass

    def _probe_failed(self, message: str) -> None:
        if self.state == "ready":
            self._not_answering(f"stopped answering: {message}")
        elif self.state == "starting" and time.time() > self._deadline:
            self._not_answering(f"did not answer within {BOOT_DEADLINE_S:g}s of the start ({message})")

    def _interval(self) -> float:
        return {"ready": HEARTBEAT_S, "starting": STARTING_INTERVAL_S, "absent": ABSENT_INTERVAL_S}.get(
            self.state, RETRY_INTERVAL_S
        )

    async def probe(self) -> dict[str, Any]:
        """Ask the guest agent ``info`` (at most PROBE_TIMEOUT_S). Raises
        VsockDialError or GuestAgentError."""
        async with await self._dial(PROBE_TIMEOUT_S) as conn:
            try:
                return await asyncio.wait_for(conn.info(), PROBE_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise GuestAgentError(f"no answer to info within {PROBE_TIMEOUT_S:g}s") from None

    async def _dial(self, timeout: float) -> GuestConnection:
        assert self.uds is not None
        reader, writer = await vsock.dial(self.uds, GUEST_AGENT_PORT, timeout=timeout)
        return GuestConnection(reader, writer)

    async def wait_ready(self, timeout: float) -> bool:
        """True once the guest agent is ready, False after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop polling (the microVM stopped, or the agent shuts down). Idempotent.
        The poller is cancelled until it has ended: a cancellation swallowed on its
        way out (closing a connection) does not keep it alive."""
        self._closed = True
        self.drop_spare()
        tasks = [t for t in (self._task, *self._watchers) if t is not None]
        self._task = None
        if tasks:
            await cancel_until_done(tasks)

    # -- the way in ---------------------------------------------------------------

    async def open(self) -> GuestConnection:
        """A new connection to the guest agent (for one operation; the caller
        closes it), or GuestAgentNotReady saying
        why there is none (absent, still starting, not answering). A guest
        agent that stopped answering gets OPEN_RETRY_S to come back."""
        if self.uds is None:
            raise self.not_ready()
        conn = self._take_spare() or await self._claim_dialing() or await self._dial_for_use()
        self._refill_after(conn)
        return conn

    async def _dial_for_use(self) -> GuestConnection:
        if self.state in ("absent", "starting"):
            try:
                conn = await self._dial(1.0)
            except vsock.VsockDialError:
                raise self.not_ready() from None
            self._answered()
            return conn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OPEN_RETRY_S
        while True:
            try:
                conn = await self._dial(PROBE_TIMEOUT_S)
            except vsock.VsockDialError as exc:
                if loop.time() >= deadline:
                    self._not_answering(f"stopped answering: {exc.message}")
                    raise self.not_ready() from None
                await asyncio.sleep(0.2)
                continue
            self._answered()
            return conn

    # -- the spare connection -------------------------------------------------------

    def _take_spare(self) -> GuestConnection | None:
        """The spare, if it is still open (else None; it is dropped either way)."""
        spare, self._spare = self._spare, None
        if self._spare_expiry is not None:
            self._spare_expiry.cancel()
            self._spare_expiry = None
        if spare is None:
            return None
        if spare.reader.at_eof() or spare.writer.is_closing() or not self.is_running():
            spare.writer.transport.abort()
            return None
        return spare

    async def _claim_dialing(self) -> GuestConnection | None:
        """The spare being dialled right now, once it is there (None if there is
        none on its way, or its dial failed)."""
        dial, self._dialing = self._dialing, None
        if dial is None:
            return None
        try:
            return await asyncio.shield(dial)
        except vsock.VsockDialError:
            return None
        except asyncio.CancelledError:
            dial.add_done_callback(_abort_dialled)  # the caller went away: nobody takes it
            raise

    def drop_spare(self) -> None:
        """Close the spare connection, if any (the microVM is paused or goes away)."""
        spare = self._take_spare()
        if spare is not None:
            spare.writer.transport.abort()
        dial, self._dialing = self._dialing, None
        if dial is not None:
            dial.cancel()
            dial.add_done_callback(_abort_dialled)

    def _refill_after(self, conn: GuestConnection) -> None:
        """Open the next spare once ``conn``'s operation is over (its connection
        closed), so that opening it does not compete with the operation for the
        guest; none once closed."""
        if not self._closed:
            watcher = asyncio.get_running_loop().create_task(self._refill(conn), name=f"guest-spare-{self.name}")
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    async def _refill(self, after: GuestConnection) -> None:
        try:
            await after.writer.wait_closed()
        except OSError:
            pass  # reset by the guest: closed all the same
        if self._closed or self._spare is not None or self._dialing is not None:
            return
        dial = self._dialing = asyncio.ensure_future(self._dial_spare())
        dial.add_done_callback(self._dialled)

    async def _dial_spare(self) -> GuestConnection:
        conn = await self._dial(PROBE_TIMEOUT_S)
        return SpareConnection(conn.reader, conn.writer, self._dial_for_use)

    def _dialled(self, dial: asyncio.Future[GuestConnection]) -> None:
        """A spare's dial ended: keep the connection for the next operation,
        unless one took it already (:meth:`_claim_dialing`)."""
        if self._dialing is not dial:
            return  # claimed, or dropped
        self._dialing = None
        if dial.cancelled() or dial.exception() is not None:
            log.debug("%s: no spare connection: %s", self.name, "cancelled" if dial.cancelled() else dial.exception())
            return
        conn = dial.result()
        if self._closed or self._spare is not None:
            conn.writer.transport.abort()
            return
        self._spare = conn
        self._spare_expiry = asyncio.get_running_loop().call_later(SPARE_TTL_S, self.drop_spare)

    def not_ready(self) -> GuestAgentNotReady:
        """The 409 for the current state."""
        name = self.name
        logs = f"see its console: 'fc-macos microvm logs --name {name}' (GET /v1/microvms/{name}/logs)"
        if self.state == "absent" or self.uds is None:
            hint = (
                f"create the microVM again with its vsock device ('fc-macos run' without --no-vsock; "
                f"in a spec, without 'vsock: false'); {logs}"
                if self.uds is None
                else "boot an ext4 rootfs (fc-macos images build makes one) on an agent machine with e2fsprogs "
                "(debugfs), or put /sbin/fc-guest-agent in the image and start it from its init"
            )
            return GuestAgentNotReady(
                f"microVM {name!r} has no guest agent: {self.absent_reason or self.reason}",
                code="guest_agent_absent", hint=hint,
            )  # fmt: skip
        if self.state == "starting":
            since = "" if self.started_at is None else f", {time.time() - self.started_at:.0f}s after the start"
            return GuestAgentNotReady(
                f"the guest agent of microVM {name!r} is still starting ({self.reason}{since})",
                code="guest_agent_starting",
                hint=f"wait until 'fc-macos microvm status --name {name}' shows its guest agent ready "
                f"(GET /v1/microvms/{name}: guest_agent.state), or start it with --wait (wait: \"guest_agent\"); "
                + logs,
            )
        return GuestAgentNotReady(
            f"the guest agent of microVM {name!r} does not answer: {self.reason}",
            code="guest_agent_unresponsive",
            hint="if it crashed, its supervisor restarts it within seconds: try again; if it stays unresponsive, "
            f"restart the microVM; {logs}",
        )


class SpareConnection(GuestConnection):
    """A connection opened ahead for the next operation. If it ends before the
    guest agent answers its request at all (the guest's connections were reset,
    the guest agent's server was restarted: the usual reason is that it was
    dropped before the request reached the guest), the request is sent once more
    on a new connection from ``redial``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        redial: Callable[[], Awaitable[GuestConnection]],
    ) -> None:  # fmt: skip
        super().__init__(reader, writer)
        self._redial: Callable[[], Awaitable[GuestConnection]] | None = redial

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        try:
            return await super().request(op, **fields)
        except GuestConnectionClosed:
            redial, self._redial = self._redial, None
            if redial is None:
                raise
        log.debug("a spare connection was gone; %s goes on a new one", op)
        fresh = await redial()
        self.writer.transport.abort()
        self.reader, self.writer = fresh.reader, fresh.writer
        self._used = False
        return await super().request(op, **fields)


def _abort_dialled(dial: asyncio.Future[GuestConnection]) -> None:
    """Done callback: close the connection a dial made, if it made one."""
    if not dial.cancelled() and dial.exception() is None:
        dial.result().writer.transport.abort()


__all__ = ["GuestAgent"]
