"""The host side of Firecracker's hybrid vsock: opening a stream to a port in
the guest (Firecracker's ``docs/vsock.md``).

Firecracker exposes a microVM's virtio-vsock device on the host as a Unix
socket (``uds_path``). A host-initiated connection to guest port P is: connect
to ``uds_path``, write ``CONNECT P\\n``, read ``OK <host_port>\\n``; from then on
the stream is a raw byte pipe to the guest's ``AF_VSOCK`` listener on P. When
nothing listens on P, Firecracker just closes the stream. The ``OK`` line is
read through the stream's buffer (consumed, never peeked), so bytes the guest
sends right after it stay in that buffer for the caller.

:func:`dial` is the one implementation: fc-agent reaches guest agents with it
(:mod:`fc_macos.agent.vsock`) and :func:`fc_macos.guest.protocol.open_hybrid_vsock`
wraps it for scripts and tests.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

from fc_macos.errors import FcMacosError

#: The longest handshake answer accepted ("OK 1073741824\n" is 14 bytes).
MAX_HANDSHAKE_LINE = 64
#: The stream's buffer limit (what one read may return, and the longest line).
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


async def dial(
    path: Path | str, port: int, *, timeout: float, limit: int = STREAM_LIMIT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream to ``port`` in the guest through the hybrid vsock socket
    ``path``, within ``timeout`` seconds; ``limit`` is the stream's buffer limit.
    Raises :class:`VsockDialError`. The caller owns (and must close) the
    returned writer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=limit), timeout
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



__all__ = ["MAX_HANDSHAKE_LINE", "STREAM_LIMIT", "VsockDialError", "dial"]
