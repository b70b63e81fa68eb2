"""The dashboard's I/O: polls the agent and the provider, and runs the actions.

Polls never raise and never take longer than their timeout: an agent that is
slow, dead or not set up becomes ``AgentFacts(reachable=False, error, hint)``
in the :class:`Snapshot`, and the last microVMs and host figures it gave are
kept (with their age) so the screen can say so instead of freezing. The
provider's ``vm_status()`` is synchronous (``tart`` calls): it runs in a
thread. Actions raise :class:`~fc_macos.errors.FcMacosError` with hints; the
app shows them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fc_macos.agent.client import AgentClient
from fc_macos.agent.wire import CREATED, PAUSED, RUNNING, MicroVMInfo, MicroVMSpec
from fc_macos.cli.dashboard.model import AgentFacts, Snapshot
from fc_macos.config import AgentEndpoint
from fc_macos.errors import FcMacosError, NotFoundError, UsageError
from fc_macos.providers.base import VMStatus

POLL_TIMEOUT_S = 2.0  # one poll of the agent; the screen refreshes every second regardless
VM_STATUS_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 200
OLD_AGENT_NOTE = "note     this agent has no GET /v1/host (no host figures): update it with 'fc-macos setup'"


class DashboardSource:
    """Everything the dashboard reads and does. ``endpoint`` and ``vm_status``
    are the provider's (``endpoint`` may raise ConfigError before setup); both
    are called again on every poll, so a re-run of setup is picked up."""

    def __init__(self, *, endpoint: Callable[[], AgentEndpoint], vm_status: Callable[[], VMStatus],
                 home: Path | None = None, timeout_s: float = POLL_TIMEOUT_S) -> None:
        self._endpoint = endpoint
        self._vm_status = vm_status
        self.home = home
        self.timeout_s = timeout_s
        self._client: AgentClient | None = None
        self._client_endpoint: AgentEndpoint | None = None
        self.snapshot = Snapshot(vm=None, agent=AgentFacts(url=None, reachable=False, error="asking the agent..."))

    # -- polls (never raise) ----------------------------------------------------

    async def poll_agent(self) -> Snapshot:
        """Ask the agent for its microVMs and host figures (at most ``timeout_s``)."""
        try:
            endpoint = self._endpoint()
        except FcMacosError as exc:
            return self._set(agent=AgentFacts(url=None, reachable=False, error=exc.message, hint=exc.hint))
        try:
            client = await self._agent(endpoint)
            infos, host = await asyncio.wait_for(self._ask(client), self.timeout_s)
        except asyncio.TimeoutError:
            return self._set(agent=self._unreachable(
                endpoint, f"no answer within {self.timeout_s:g}s",
                "the agent is slow or its machine is down: check 'fc-macos vm status'"))
        except FcMacosError as exc:
            return self._set(agent=self._unreachable(endpoint, exc.message, exc.hint))
        facts = host.get("agent") or {}
        agent = AgentFacts(url=endpoint.url, reachable=True, version=facts.get("version"),
                           uptime_s=facts.get("uptime_s"))
        notes = (OLD_AGENT_NOTE,) if "cpus" not in host else ()
        return self._set(agent=agent, host=host if "cpus" in host else None, microvms=tuple(infos),
                         updated_at=time.monotonic(), notes=notes)

    async def poll_vm(self) -> Snapshot:
        """Ask the provider about the Linux VM (in a thread: ``tart`` may be slow)."""
        try:
            vm = await asyncio.wait_for(asyncio.to_thread(self._vm_status), VM_STATUS_TIMEOUT_S)
        except asyncio.TimeoutError:
            previous = self.snapshot.vm
            vm = VMStatus(previous.name if previous else "?", previous.provider if previous else "?", False, False,
                          "not answering", details={"error": f"no status within {VM_STATUS_TIMEOUT_S:g}s"})
        except FcMacosError as exc:
            vm = VMStatus("?", "?", False, False, "unknown", details={"error": exc.message})
        return self._set(vm=vm)

    async def _ask(self, client: AgentClient) -> tuple[list[MicroVMInfo], dict[str, Any]]:
        return await client.list_microvms(), await self._host(client)

    async def _host(self, client: AgentClient) -> dict[str, Any]:
        try:
            return await client.host_stats()
        except NotFoundError:  # an agent older than GET /v1/host
            health = await client.health()
            return {"agent": {"version": health.get("version")}}

    def _unreachable(self, endpoint: AgentEndpoint, error: str, hint: str | None) -> AgentFacts:
        return dataclasses.replace(self.snapshot.agent, url=endpoint.url, reachable=False, error=error, hint=hint)

    def _set(self, **changes: Any) -> Snapshot:
        self.snapshot = dataclasses.replace(self.snapshot, **changes)
        return self.snapshot

    async def _agent(self, endpoint: AgentEndpoint) -> AgentClient:
        """The kept client, made again when the endpoint changed (setup ran again)."""
        if self._client is None or self._client_endpoint != endpoint:
            await self.close()
            client = AgentClient.from_endpoint(endpoint, home=self.home)
            await client.__aenter__()
            self._client, self._client_endpoint = client, endpoint
        return self._client

    async def close(self) -> None:
        """Close the kept client; the source can be polled again afterwards."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # -- actions (raise FcMacosError) -------------------------------------------

    async def _client_now(self) -> AgentClient:
        return await self._agent(self._endpoint())

    async def stop(self, name: str) -> MicroVMInfo:
        return await (await self._client_now()).stop_microvm(name)

    async def pause_or_resume(self, info: MicroVMInfo) -> str:
        """Pause a running microVM or resume a paused one (``PATCH /vm`` through
        the Firecracker relay, like 'fc-macos actions pause'); returns the new state."""
        if info.state == RUNNING:
            target, new_state = "Paused", PAUSED
        elif info.state == PAUSED:
            target, new_state = "Resumed", RUNNING
        else:
            raise UsageError(f"{info.name} is {info.state}: only a running microVM pauses, only a paused one resumes",
                             hint=f"start it first: 'fc-macos actions start --name {info.name}'"
                             if info.state == CREATED else "create a new one with n")
        await (await self._client_now()).firecracker(info.name, "PATCH", "/vm", {"state": target})
        return new_state

    async def delete(self, name: str) -> None:
        """Delete ``name`` and its files, stopping it first if it runs."""
        await (await self._client_now()).delete_microvm(name, force=True)

    async def create(self, spec: MicroVMSpec) -> MicroVMInfo:
        return await (await self._client_now()).create_microvm(spec)

    async def follow_log(self, name: str) -> AsyncIterator[str]:
        """The serial log of ``name`` (its last lines, then what the guest prints)
        until the microVM stops; over its own connection."""
        async with AgentClient.from_endpoint(self._endpoint(), home=self.home) as client:
            async for chunk in client.logs(name, tail=LOG_TAIL_LINES, follow=True):
                yield chunk
