"""One microVM's vsock device as fc-agent keeps it.

Every microVM of this agent (unless ``vsock: false``) has one device: its CID
is the lowest one no other microVM of the agent holds (>= 3, kept in
its record with the microVM until it is deleted) and its socket is
``<workdir>/vsock.sock``. Streams into the guest are opened with
:func:`dial` (Firecracker's hybrid vsock handshake,
:mod:`fc_macos.guest.hybrid_vsock`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fc_macos.guest.hybrid_vsock import VsockDialError, dial

#: The device's socket inside the microVM's work directory.
SOCKET_NAME = "vsock.sock"
#: CIDs 0-2 are reserved (hypervisor, local, host).
FIRST_GUEST_CID = 3


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
    """The device as the microVM record and MicroVMInfo show it."""
    return {"guest_cid": guest_cid, "uds_path": str(path)}


__all__ = ["SOCKET_NAME", "VsockDialError", "allocate_cid", "device_record", "dial", "uds_path"]
