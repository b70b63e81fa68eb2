"""The deliberate public API of fc_macos.guest and fc_macos.guest.protocol (fc-agent and
the images build on it): changes to it must be seen here."""

from __future__ import annotations

import subprocess
import sys

import fc_macos.guest as guest
import fc_macos.guest.protocol as protocol
from fc_macos.errors import FcMacosError

GUEST = ["ARCHES", "BIN_DIR", "GUEST_AGENT_PORT", "PROTOCOL_VERSION", "binary_path", "normalize_arch"]

PROTOCOL = [
    "CHECKSUMS", "ExecEvent", "ExecExit", "ExecOutput", "ExecResult", "Frame", "FrameDecoder", "FrameType",
    "GUEST_AGENT_PORT",
    "GetItem", "GetStream", "GuestAgentError", "GuestBadRequest", "GuestChecksumMismatch", "GuestCommandNotFound",
    "GuestConnection", "GuestConnectionClosed", "GuestConnectionRefused", "GuestExists", "GuestIOError",
    "GuestNotADirectory", "GuestNotExecutable", "GuestNotFound", "GuestPermissionDenied", "GuestProtocolError",
    "GuestStat", "LocalTreeWriter", "MAX_FRAME", "OutputTooLarge", "PROTOCOL_VERSION", "PutSession",
    "TransferResult", "TreeEntry", "encode_frame", "encode_json", "error_from_response", "iter_local_tree",
    "open_hybrid_vsock", "open_tcp", "open_unix", "read_frame",
]


def test_guest_all_is_locked() -> None:
    assert sorted(guest.__all__) == sorted(GUEST)
    assert (guest.GUEST_AGENT_PORT, guest.PROTOCOL_VERSION) == (10240, 1)


def test_protocol_all_is_locked_and_resolves() -> None:
    assert sorted(protocol.__all__) == sorted(PROTOCOL)
    for name in PROTOCOL:
        assert getattr(protocol, name) is not None, name
    assert issubclass(protocol.GuestAgentError, FcMacosError)


def test_importing_fc_macos_guest_stays_light() -> None:
    code = "import sys, fc_macos.guest; print('asyncio' in sys.modules, 'aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
