"""The sync Python API: :mod:`fc_macos.aio` without ``await``.

::

    import fc_macos

    with fc_macos.connect() as fc:
        vm = fc.run(name="box", vcpus=2, memory_mib=512)
        print(vm.exec(["uname", "-a"]).stdout)
        with vm.forward(80) as port:
            ...
        vm.delete()

It is one facade over the async client, not a second client: every
:class:`Client` owns a private event loop running in a daemon thread, and each
method runs the matching :mod:`fc_macos.aio` coroutine there and blocks for
its result. Ctrl+C (KeyboardInterrupt) in the calling thread cancels the
coroutine and waits for its cleanup (a copy removes its temporary files)
before it propagates. A Client may be used from one thread at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fc_macos import aio
from fc_macos.agent.client import DEFAULT_TIMEOUT_S
from fc_macos.agent.client_streams import ExecResult, ExitStatus
from fc_macos.agent.wire import DEFAULT_BOOT_ARGS, MicroVMInfo, PortSpec
from fc_macos.loop_thread import LoopThread
from fc_macos.transfer.copy import CopyProgress, CopyResult

T = TypeVar("T")


@contextmanager
def _entered(loop: LoopThread, manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """An async context manager entered and left on ``loop``."""
    value = loop.run(manager.__aenter__())
    try:
        yield value
    except BaseException as exc:
        if not loop.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
            raise
    else:
        loop.run(manager.__aexit__(None, None, None))


class ExecSession:
    """A running command (see :class:`fc_macos.aio` ``exec_stream``), without ``await``:
    ``send``, ``close_stdin``, ``resize``, ``signal``, ``receive``, ``wait``,
    and ``for stream, data in session``."""

    def __init__(self, loop: LoopThread, session: aio.ExecSession) -> None:
        self._loop = loop
        self._session = session

    @property
    def pid(self) -> int | None:
        return self._session.pid

    @property
    def exit(self) -> ExitStatus | None:
        return self._session.exit

    def send(self, data: bytes) -> None:
        self._loop.run(self._session.send(data))

    def close_stdin(self) -> None:
        self._loop.run(self._session.close_stdin())

    def resize(self, rows: int, cols: int) -> None:
        self._loop.run(self._session.resize(rows, cols))

    def signal(self, signum: int) -> None:
        self._loop.run(self._session.signal(signum))

    def receive(self) -> tuple[str, bytes] | None:
        return self._loop.run(self._session.receive())

    def wait(self) -> ExitStatus:
        return self._loop.run(self._session.wait())

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        while (item := self.receive()) is not None:
            yield item


class MicroVM:
    """One microVM; the methods of :class:`fc_macos.aio.MicroVM`, blocking."""

    def __init__(self, loop: LoopThread, vm: aio.MicroVM) -> None:
        self._loop = loop
        self._vm = vm
        self.name = vm.name

    def __repr__(self) -> str:
        return repr(self._vm)

    @property
    def info(self) -> MicroVMInfo:
        return self._vm.info

    def refresh(self) -> MicroVMInfo:
        return self._loop.run(self._vm.refresh())

    def exec(self, command: aio.Command, *, input: bytes | str | None = None, env: Mapping[str, str] | None = None,
             cwd: str | None = None, timeout: float | None = None) -> ExecResult:
        """Run ``command`` to completion: ``r.exit_code``, ``r.stdout``, ``r.stderr``."""
        return self._loop.run(self._vm.exec(command, input=input, env=env, cwd=cwd, timeout=timeout))

    @contextmanager
    def exec_stream(self, command: aio.Command, *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                    tty: bool = False, rows: int = 24, cols: int = 80, stdin: bool = False,
                    timeout: float | None = None) -> Iterator[ExecSession]:
        """``with vm.exec_stream([...]) as proc: for stream, data in proc: ...``"""
        manager = self._vm.exec_stream(command, env=env, cwd=cwd, tty=tty, rows=rows, cols=cols, stdin=stdin,
                                       timeout=timeout)
        with _entered(self._loop, manager) as session:
            yield ExecSession(self._loop, session)

    def put(self, local: str | Path, remote: str, *, progress: CopyProgress | None = None) -> CopyResult:
        return self._loop.run(self._vm.put(local, remote, progress=progress))

    def get(self, remote: str, local: str | Path, *, progress: CopyProgress | None = None) -> CopyResult:
        return self._loop.run(self._vm.get(remote, local, progress=progress))

    @contextmanager
    def forward(self, guest_port: int, *, local_port: int = 0, addr: str = "127.0.0.1",
                on_event: Callable[[str], None] | None = None) -> Iterator[int]:
        """``with vm.forward(80) as port:`` 127.0.0.1:port reaches the guest's port 80."""
        with _entered(self._loop, self._vm.forward(guest_port, local_port=local_port, addr=addr,
                                                   on_event=on_event)) as port:
            yield port

    def publish(self, host_port: int, guest_port: int, *, host_addr: str | None = None) -> list[dict[str, Any]]:
        return self._loop.run(self._vm.publish(host_port, guest_port, host_addr=host_addr))

    def unpublish(self, host_port: int) -> list[dict[str, Any]]:
        return self._loop.run(self._vm.unpublish(host_port))

    def stop(self, *, force: bool = False, timeout: float = 10.0) -> MicroVMInfo:
        return self._loop.run(self._vm.stop(force=force, timeout=timeout))

    def start(self, *, wait: bool = True, wait_timeout: float = 60.0) -> MicroVMInfo:
        return self._loop.run(self._vm.start(wait=wait, wait_timeout=wait_timeout))

    def restart(self, *, force: bool = False, timeout: float = 10.0, wait_timeout: float = 60.0) -> MicroVMInfo:
        return self._loop.run(self._vm.restart(force=force, timeout=timeout, wait_timeout=wait_timeout))

    def delete(self, *, force: bool = True) -> None:
        self._loop.run(self._vm.delete(force=force))


class Client:
    """A connection to one fc-agent: ``with fc_macos.connect() as fc``. Its
    event loop thread ends with ``close()`` (or the ``with`` block)."""

    def __init__(self, client: aio.Client) -> None:
        self._loop = LoopThread()
        self._client = client
        try:
            self._loop.run(client.open())
        except BaseException:
            self._loop.close()
            raise
        self.url = client.url

    def close(self) -> None:
        """Close the connection and stop the loop thread (idempotent)."""
        if not self._loop.loop.is_closed():
            try:
                self._loop.run(self._client.close())
            finally:
                self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, name: str | None = None, *, vcpus: int = 1, memory_mib: int = 256, kernel: str | None = None,
            initrd: str | None = None, rootfs: str | None = None, boot_args: str = DEFAULT_BOOT_ARGS,
            network: bool = False, ports: Sequence[tuple[int, int] | PortSpec] = (),
            wait: bool = True, wait_timeout: float = 60.0) -> MicroVM:
        """Create and boot a microVM, by default waiting for its guest agent
        (see :meth:`fc_macos.aio.Client.run`)."""
        vm = self._loop.run(self._client.run(name, vcpus=vcpus, memory_mib=memory_mib, kernel=kernel, initrd=initrd,
                                             rootfs=rootfs, boot_args=boot_args, network=network, ports=ports,
                                             wait=wait, wait_timeout=wait_timeout))
        return MicroVM(self._loop, vm)

    def microvm(self, name: str) -> MicroVM:
        return MicroVM(self._loop, self._loop.run(self._client.microvm(name)))

    def list(self) -> list[MicroVM]:
        return [MicroVM(self._loop, vm) for vm in self._loop.run(self._client.list())]


def connect(url: str | None = None, token: str | None = None, *, home: str | Path | None = None,
            timeout: float = DEFAULT_TIMEOUT_S, context: str | None = None) -> Client:
    """Connect to fc-agent: ``url`` and ``token``; else context ``context``
    (or FC_MACOS_CONTEXT's, or the one 'fc-macos context use' chose); else the
    endpoint 'fc-macos setup' saved (ConfigError saying to run setup when
    there is none). See :func:`fc_macos.aio.connect`."""
    return Client(aio.connect(url, token, home=home, timeout=timeout, context=context))


__all__ = ["Client", "ExecResult", "ExecSession", "MicroVM", "connect"]
