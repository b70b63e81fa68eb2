"""The host side of Firecracker's hybrid vsock: one microVM's vsock device and
a dialer for connections into the guest.

Firecracker exposes a microVM's virtio-vsock device on the host as a Unix
socket (``uds_path``). A host-initiated connection to guest port P is: connect
to ``uds_path``, write ``CONNECT P\\n``, read ``OK <host_port>\\n``; from then on
the stream is a raw byte pipe to the guest's ``AF_VSOCK`` listener on P. When
nothing listens on P, Firecracker just closes the stream. The ``OK`` line is
read through the stream's buffer (consumed, never peeked), so bytes the guest
sends right after it stay in that buffer for the caller.

Every microVM of this agent (unless ``vsock: false``) has one device: its CID
is the lowest one no other microVM of the agent holds (>= 3, kept in
state.json with the microVM until it is deleted) and its socket is
``<workdir>/vsock.sock``.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fc_macos.errors import FcMacosError

#: The device's socket inside the microVM's work directory.
SOCKET_NAME = "vsock.sock"
#: CIDs 0-2 are reserved (hypervisor, local, host).
FIRST_GUEST_CID = 3
#: The longest handshake answer accepted ("OK 1073741824\n" is 14 bytes).
MAX_HANDSHAKE_LINE = 64
#: Read this much per call when pumping a stream.
STREAM_LIMIT = 256 * 1024


class VsockDialError(FcMacosError):
    """A connection into the guest could not be made. ``reason`` says why:
    ``no_device`` (the vsock socket is missing or nobody accepts on it: the
    VMM is gone), ``closed`` (the VMM closed the stream before ``OK``: nothing
    listens on that port in the guest, or the guest's vsock driver is not up),
    ``timeout`` (no answer in time) or ``protocol`` (an answer that is not
    ``OK <n>``)."""

    code = "vsock_unreachable"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def uds_path(workdir: Path) -> Path:
    """The vsock socket of the microVM whose work directory is ``workdir``."""
    return workdir / SOCKET_NAME


def allocate_cid(used: Iterable[int]) -> int:
    """The lowest CID >= 3 not in ``used``."""
    taken = set(used)
    cid = FIRST_GUEST_CID
    while cid in taken:
        cid += 1
    return cid


def device_record(guest_cid: int, path: Path) -> dict[str, Any]:
    """The device as state.json and MicroVMInfo show it."""
    return {"guest_cid": guest_cid, "uds_path": str(path)}


async def dial(path: Path, port: int, *, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream to ``port`` in the guest through the hybrid vsock socket
    ``path``, within ``timeout`` seconds. Raises :class:`VsockDialError`. The
    caller owns (and must close) the returned writer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=STREAM_LIMIT), timeout
        )
    except asyncio.TimeoutError:
        raise VsockDialError("timeout", f"the vsock socket {path} did not accept within {timeout:g}s") from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            raise VsockDialError("no_device", f"no vsock device answers at {path} ({exc.strerror})") from exc
        raise VsockDialError("no_device", f"cannot connect to the vsock socket {path}: {exc}") from exc
    try:
        writer.write(b"CONNECT %d\n" % port)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        writer.close()
        raise VsockDialError(
            "timeout", f"vsock port {port} did not answer within {timeout:g}s (is the guest's vsock driver up?)"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a line over the buffer limit
        writer.close()
        raise VsockDialError("closed", f"the vsock stream to port {port} broke during the handshake: {exc}") from exc
    if not line.endswith(b"\n"):
        writer.close()
        raise VsockDialError("closed", f"nothing accepted the connection to vsock port {port} in the guest")
    fields = line.split()
    if len(line) > MAX_HANDSHAKE_LINE or len(fields) != 2 or fields[0] != b"OK" or not fields[1].isdigit():
        writer.close()
        raise VsockDialError("protocol", f"unexpected vsock handshake answer {line[:MAX_HANDSHAKE_LINE]!r}")
    return reader, writer


__all__ = ["SOCKET_NAME", "VsockDialError", "allocate_cid", "device_record", "dial", "uds_path"]
