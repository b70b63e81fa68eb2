"""The guest channel's part of :class:`~fc_macos.agent.manager.MicroVMManager`
(a mixin): the guest agent of a running microVM, its published ports (added,
removed, published again after an agent restart) and create's wait for the
guest agent. Everything the ports need is kept in the microVM's record, so
an agent restart brings them back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from fc_macos.agent.guest_agent import GuestAgent
from fc_macos.agent.guest_errors import GuestAgentNotReady, GuestChannelError
from fc_macos.agent.microvm import MicroVM
from fc_macos.agent.ports import PortPublisher
from fc_macos.agent.wire import RUNNING, PortSpec, not_running_hint
from fc_macos.errors import ConflictError, FcMacosError, NotFoundError
from fc_macos.firecracker.launcher import VMMPaths

log = logging.getLogger("fc_agent.manager")


class GuestAccess:
    """Mixed into the manager: needs its ``_get``, ``running``, ``_save``, ``paths``."""

    ports: PortPublisher

    if TYPE_CHECKING:
        def _get(self, name: str) -> MicroVM: ...
        def running(self, name: str) -> MicroVM: ...
        def _save(self) -> None: ...
        def paths(self, name: str) -> VMMPaths: ...
        async def _guest_up(self, vm: MicroVM, timeout_s: float) -> bool: ...

    def guest(self, name: str) -> GuestAgent:
        """The guest agent of ``name`` if the guest runs: NotFoundError, or
        ConflictError ``not_running`` (stopped, created but not started, paused)."""
        vm = self._get(name)
        if vm.state != RUNNING or vm.vmm is None or vm.guest is None:
            raise ConflictError(f"microVM {name!r} is {vm.state}, not running", hint=not_running_hint(name, vm.state),
                                code="not_running")
        return vm.guest

    def list_ports(self, name: str) -> Sequence[PortSpec]:
        """The ports running microVM ``name`` publishes (ConflictError if it does not run)."""
        self.running(name)
        return self.ports.ports(name)

    async def add_port(self, name: str, port: PortSpec) -> Sequence[PortSpec]:
        """Publish ``port`` for running microVM ``name`` and record it;
        ConflictError ``port_in_use`` naming the address if it is taken.
        Idempotent for a port it publishes already. Returns its ports."""
        vm = self.running(name)
        if vm.vsock is None:
            raise GuestAgentNotReady(
                f"microVM {name!r} has no vsock device, so no guest agent to carry a published port's connections",
                code="guest_agent_absent",
                hint="boot a microVM with vsock (the default; not 'fc-macos run --no-vsock') to publish ports, "
                "or give it a network ('fc-macos run --network') and reach its address",
            )
        await self.ports.publish(name, port)
        vm.ports = [asdict(p) for p in self.ports.ports(name)]
        self._save()
        return self.ports.ports(name)

    async def remove_port(self, name: str, host_port: int, host_addr: str | None = None) -> None:
        """Stop publishing ``host_port`` (on ``host_addr``, or every address) for
        ``name``; NotFoundError if it publishes no such port."""
        vm = self.running(name)
        gone = [p for p in self.ports.ports(name) if p.host_port == host_port and host_addr in (None, p.host_addr)]
        if not gone:
            where = f"{host_addr}:{host_port}" if host_addr else f"port {host_port}"
            raise NotFoundError(
                f"microVM {name!r} publishes no {where}",
                hint=f"list its ports: GET /v1/microvms/{name}/ports ('fc-macos microvm ports --name {name}')",
                code="port_not_published",
            )
        for port in gone:
            await self.ports.unpublish(name, port)
        vm.ports = [asdict(p) for p in self.ports.ports(name)]
        self._save()

    async def _publish_again(self, vm: MicroVM) -> None:
        """Publish ``vm``'s recorded ports again (after an agent restart); a
        port that is taken meanwhile is dropped, saying so in ``vm.error``."""
        kept = []
        for port in vm.port_specs():
            try:
                await self.ports.publish(vm.name, port)
                kept.append(port)
            except FcMacosError as exc:
                log.warning("%s: cannot publish %s again: %s", vm.name, port.address, exc.message)
                vm.error = f"port {port.address} was not published again after the agent restarted: {exc.message}"
        vm.ports = [asdict(p) for p in kept]

    async def _wait_for_guest_agent(self, vm: MicroVM, timeout_s: float) -> None:
        """Return once ``vm``'s guest agent is ready; else GuestChannelError
        504 ``guest_agent_timeout`` (409 ``guest_agent_absent`` when there is
        none to wait for). The microVM keeps running either way, unless its
        guest dies or panics first: then it is ``failed`` and the error is a
        BootError with the console's last lines (``Lifecycle._guest_up``)."""
        guest = vm.guest
        if guest is not None and await self._guest_up(vm, timeout_s):
            return
        serial = self.paths(vm.name).serial_log
        if guest is None or guest.uds is None:
            raise GuestChannelError(
                f"microVM {vm.name!r} is {vm.state} (it keeps running), but it has no vsock device, so no guest agent to wait for",
                code="guest_agent_absent", status=409, hint="create it without wait, or without vsock: false",
            )  # fmt: skip
        state = f"{guest.state}: {guest.reason}" if guest.reason else guest.state
        raise GuestChannelError(
            f"microVM {vm.name!r} is {vm.state} and keeps running, but its guest agent was not ready within "
            f"{timeout_s:g}s ({state})",
            code="guest_agent_timeout", status=504,
            hint=f"see what the guest printed: 'fc-macos microvm logs --name {vm.name}' ({serial}); "
            f"check again with 'fc-macos microvm status --name {vm.name}' (GET /v1/microvms/{vm.name}), "
            f"or stop it: 'fc-macos microvm stop --name {vm.name}'",
        )  # fmt: skip

    async def _release_guest(self, vm: MicroVM) -> None:
        """Free what the running guest held: its published ports and the guest agent's polling."""
        await self.ports.unpublish_all(vm.name)
        if vm.guest is not None:
            await vm.guest.close()


__all__ = ["GuestAccess"]
