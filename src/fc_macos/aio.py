"""The async Python API: microVMs as sandboxes.

::

    import fc_macos.aio

    async with fc_macos.aio.connect() as fc:          # the endpoint 'fc-macos setup' saved
        vm = await fc.run(name="box", vcpus=2, memory_mib=512)   # booted, guest agent ready
        r = await vm.exec(["uname", "-a"])
        print(r.exit_code, r.stdout, r.stderr)
        await vm.put("app/", "/srv/app")             # files and trees, like docker cp
        await vm.get("/var/log/app.log", ".")
        async with vm.forward(80) as port:            # http://127.0.0.1:<port>/ reaches the guest's :80
            ...
        await vm.delete()

:func:`fc_macos.connect` is the same API without ``await`` (a facade over this
one). Every call raises :class:`fc_macos.FcMacosError` subclasses only, each
with a hint.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fc_macos.agent.client import DEFAULT_TIMEOUT_S, AgentClient
from fc_macos.agent.client_streams import ExecResult, ExecSession, ExitStatus
from fc_macos.agent.wire import DEFAULT_BOOT_ARGS, MicroVMInfo, MicroVMSpec, PortSpec
from fc_macos import contexts
from fc_macos.config import AgentEndpoint, home_dir
from fc_macos.errors import ConfigError, UsageError
from fc_macos.forward import ForwardSpec, Forwarder
from fc_macos.transfer.copy import CopyProgress, CopyResult, copy_from_guest, copy_to_guest

Command = Sequence[str] | str


def _argv(command: Command) -> list[str]:
    """A list is the argv; a string runs through ``/bin/sh -c``."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    argv = [str(arg) for arg in command]
    if not argv:
        raise UsageError("an empty command", hint='give a command, e.g. ["uname", "-a"]')
    return argv


class MicroVM:
    """One microVM of the agent, by name. ``info`` is what the agent last said
    about it (``await vm.refresh()`` asks again)."""

    def __init__(self, client: Client, info: MicroVMInfo) -> None:
        self._client = client
        self.name = info.name
        self.info = info

    def __repr__(self) -> str:
        return f"<MicroVM {self.name} {self.info.state}>"

    @property
    def _agent(self) -> AgentClient:
        return self._client.agent

    async def refresh(self) -> MicroVMInfo:
        self.info = await self._agent.get_microvm(self.name)
        return self.info

    async def exec(self, command: Command, *, input: bytes | str | None = None, env: Mapping[str, str] | None = None,
                   cwd: str | None = None, timeout: float | None = None) -> ExecResult:
        """Run ``command`` (an argv list, or a string for ``/bin/sh -c``) to
        completion. ``input`` is its stdin. Returns its ExecResult
        (``exit_code``, ``stdout``/``stderr`` as text, ``*_bytes`` exactly);
        a non-zero exit is not an error. ExecError when it cannot start (no
        such command: ``exit_code`` 127). For big outputs use :meth:`exec_stream`."""
        data = input.encode() if isinstance(input, str) else input
        return await self._agent.exec(self.name, _argv(command), env=env, cwd=cwd, stdin=data, timeout_s=timeout)

    def exec_stream(self, command: Command, *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                    tty: bool = False, rows: int = 24, cols: int = 80, stdin: bool = False,
                    timeout: float | None = None) -> AbstractAsyncContextManager[ExecSession]:
        """Start ``command`` and stream: ``async with vm.exec_stream([...], stdin=True) as proc``,
        then ``await proc.send(b"...")``, ``await proc.close_stdin()``,
        ``async for stream, data in proc`` (``"stdout"``/``"stderr"``, bytes),
        ``proc.exit`` (or ``await proc.wait()``). The command is killed if the
        block is left before it exits."""
        return self._agent.exec_session(self.name, _argv(command), env=env, cwd=cwd, tty=tty,
                                        rows=rows if tty else None, cols=cols if tty else None,
                                        stdin=stdin, timeout_s=timeout)

    async def put(self, local: str | Path, remote: str, *, progress: CopyProgress | None = None) -> CopyResult:
        """Copy a local file or tree into the guest (``docker cp`` rules: into
        an existing directory, or to a new name whose parent exists)."""
        return await copy_to_guest(self._agent, self.name, str(local), remote, progress=progress)

    async def get(self, remote: str, local: str | Path, *, progress: CopyProgress | None = None) -> CopyResult:
        """Copy a guest file or tree to this machine (same rules); nothing
        partial is left behind if it fails."""
        return await copy_from_guest(self._agent, self.name, remote, str(local), progress=progress)

    @asynccontextmanager
    async def forward(self, guest_port: int, *, local_port: int = 0, addr: str = "127.0.0.1",
                      on_event: Callable[[str], None] | None = None) -> AsyncIterator[int]:
        """Forward ``addr:local_port`` (default: a free port on 127.0.0.1) to
        ``guest_port`` in the guest while the block runs; yields the local port."""
        async with Forwarder(self._agent, self.name, [ForwardSpec(addr, local_port, guest_port)],
                             on_event=on_event) as forwarder:
            yield forwarder.listening[0].port

    async def publish(self, host_port: int, guest_port: int, *, host_addr: str | None = None) -> list[dict[str, Any]]:
        """Have the agent publish ``guest_port`` on its machine as ``host_port``."""
        return await self._agent.publish_port(self.name, host_port, guest_port, host_addr=host_addr)

    async def unpublish(self, host_port: int) -> list[dict[str, Any]]:
        return await self._agent.unpublish_port(self.name, host_port)

    async def stop(self, *, force: bool = False, timeout: float = 10.0) -> MicroVMInfo:
        """Stop it (its files stay until :meth:`delete`)."""
        self.info = await self._agent.stop_microvm(self.name, force=force, timeout_s=timeout)
        return self.info

    async def start(self, *, wait: bool = True, wait_timeout: float = 60.0) -> MicroVMInfo:
        """Boot it again after :meth:`stop`, from its own disk with its own spec
        (with ``wait``, once its guest agent answers). ConflictError if it runs."""
        self.info = await self._agent.start_microvm(self.name, wait=wait, wait_timeout_s=wait_timeout)
        return self.info

    async def restart(self, *, force: bool = False, timeout: float = 10.0, wait_timeout: float = 60.0) -> MicroVMInfo:
        """Stop it (at once with ``force``) and start it again on its own disk."""
        self.info = await self._agent.restart_microvm(self.name, force=force, timeout_s=timeout,
                                                      wait_timeout_s=wait_timeout)  # fmt: skip
        return self.info

    async def delete(self, *, force: bool = True) -> None:
        """Delete it and its files (stopping it first unless ``force=False``)."""
        await self._agent.delete_microvm(self.name, force=force)



class Client:
    """A connection to one fc-agent: ``async with connect() as fc`` (or
    ``fc = await connect()`` and ``await fc.close()``)."""

    def __init__(self, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT_S, home: Path | None = None,
                 fingerprint: str | None = None, context: str | None = None) -> None:
        self.agent = AgentClient(url, token, timeout=timeout, home=home, fingerprint=fingerprint, context=context)
        self.url = url

    async def open(self) -> Client:
        await self.agent.__aenter__()
        return self

    async def close(self) -> None:
        await self.agent.close()

    async def __aenter__(self) -> Client:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, Client]:
        return self.open().__await__()

    async def run(self, name: str | None = None, *, vcpus: int = 1, memory_mib: int = 256, kernel: str | None = None,
                  initrd: str | None = None, rootfs: str | None = None, boot_args: str = DEFAULT_BOOT_ARGS,
                  network: bool = False, ports: Sequence[tuple[int, int] | PortSpec] = (),
                  wait: bool = True, wait_timeout: float = 60.0) -> MicroVM:
        """Create and boot a microVM; with ``wait`` (the default) only return
        once its guest agent is ready (GuestAgentUnavailable with
        ``guest_agent_timeout`` if it is not within ``wait_timeout`` s; the
        microVM keeps running then). ``ports``: ``(host_port, guest_port)``
        pairs the agent publishes. BootError names a failing boot step."""
        published = tuple(p if isinstance(p, PortSpec) else PortSpec(host_port=p[0], guest_port=p[1]) for p in ports)
        spec = MicroVMSpec(name=name, vcpus=vcpus, memory_mib=memory_mib, kernel=kernel, initrd=initrd, rootfs=rootfs,
                           boot_args=boot_args, network=network, ports=published,
                           wait="guest_agent" if wait else None, wait_timeout_s=wait_timeout)
        return MicroVM(self, await self.agent.create_microvm(spec))

    async def microvm(self, name: str) -> MicroVM:
        """An existing microVM (NotFoundError if there is none by that name)."""
        return MicroVM(self, await self.agent.get_microvm(name))

    async def list(self) -> list[MicroVM]:
        return [MicroVM(self, info) for info in await self.agent.list_microvms()]


def endpoint_of(url: str | None, token: str | None, home: Path | None, context: str | None = None) -> AgentEndpoint:
    """``url``/``token`` when given; else the context named ``context``, by
    ``FC_MACOS_CONTEXT`` or by 'fc-macos context use' (the CLI's choice,
    :func:`fc_macos.contexts.select`); else the endpoint 'fc-macos setup' saved."""
    if url is not None:
        if token is None:
            raise UsageError("connect(url=...) needs token=... as well",
                             hint="the token is in agent.json next to the URL, or run 'fc-macos setup'")
        return AgentEndpoint(url, token)
    chosen = contexts.select(home or home_dir(), context, os.environ.get(contexts.ENV) or None)
    if chosen is not None:
        return chosen.endpoint()
    try:
        return AgentEndpoint.load(home)
    except ConfigError as exc:
        raise ConfigError(exc.message, hint="run 'fc-macos setup' first, or pass connect(url=..., token=...)") from exc


def connect(url: str | None = None, token: str | None = None, *, home: str | Path | None = None,
            timeout: float = DEFAULT_TIMEOUT_S, context: str | None = None) -> Client:
    """A Client of the agent at ``url`` with ``token``; else of context
    ``context`` (or FC_MACOS_CONTEXT's, or the current one: a remote agent over
    HTTPS with its certificate pinned); else of the one 'fc-macos setup' saved
    under ``home`` (default FC_MACOS_HOME). ConfigError, saying to run setup,
    when nothing was saved."""
    home_path = Path(home) if home is not None else None
    endpoint = endpoint_of(url, token, home_path, context)
    return Client(endpoint.url, endpoint.token, timeout=timeout, home=home_path, fingerprint=endpoint.fingerprint,
                  context=endpoint.context)


__all__ = ["Client", "ExecResult", "ExecSession", "ExitStatus", "MicroVM", "connect"]
