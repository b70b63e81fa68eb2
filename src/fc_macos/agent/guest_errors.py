"""Errors of the guest channel (exec, files, ports) as fc-agent answers them.

Each carries its HTTP status (``http_status``, read by
:mod:`fc_macos.agent.http_errors`) and a code from docs/design.md. The guest
protocol client's errors (:mod:`fc_macos.guest.errors`, whose ``code`` is the
guest agent's own) are converted at the HTTP boundary by :func:`translate`:
a guest ``not_found`` becomes 404 ``guest_path_not_found`` and so on, and
the commands its hints suggest name the microVM (``--name NAME`` filled in).

    FcMacosError
    └── GuestChannelError             http_status per instance (default 502)
        └── GuestAgentNotReady        409 guest_agent_absent / _starting / _unresponsive
"""

from __future__ import annotations

from fc_macos.errors import FcMacosError
from fc_macos.guest.errors import GuestAgentError, GuestConnectionClosed, GuestProtocolError


class GuestChannelError(FcMacosError):
    """Something about the channel into a guest; ``http_status`` is its answer."""

    code = "guest_error"
    http_status = 502

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint, code=code)
        if status is not None:
            self.http_status = status


class GuestAgentNotReady(GuestChannelError):
    """The guest agent cannot take requests: absent, still starting, or not answering (409)."""

    http_status = 409


#: the guest agent's code -> (the agent's code, HTTP status)
GUEST_CODES: dict[str, tuple[str, int]] = {
    "not_found": ("guest_path_not_found", 404),
    "not_a_directory": ("guest_not_a_directory", 409),
    "permission_denied": ("guest_permission_denied", 403),
    "exists": ("guest_path_exists", 409),
    "io_error": ("guest_io_error", 502),
    "checksum_mismatch": ("guest_checksum_mismatch", 502),
    "connection_refused": ("guest_port_closed", 409),
    "bad_request": ("guest_bad_request", 400),
    "command_not_found": ("command_not_found", 404),
    "not_executable": ("not_executable", 409),
    "unsupported_version": ("guest_agent_incompatible", 502),
    "unknown_op": ("guest_agent_incompatible", 502),
}
BROKEN_HINT = "the guest agent may have been restarted or killed: try again; see the microVM's console log"


def translate(exc: GuestAgentError, name: str) -> GuestChannelError:
    """The agent's answer for the guest protocol error ``exc`` met in microVM ``name``."""
    if isinstance(exc, GuestConnectionClosed):
        return GuestChannelError(
            f"the connection to the guest agent of microVM {name!r} broke: {exc.message}",
            code="guest_agent_disconnected", hint=BROKEN_HINT,
        )  # fmt: skip
    if isinstance(exc, GuestProtocolError):
        return GuestChannelError(
            f"the guest agent of microVM {name!r} broke the protocol: {exc.message}",
            code="guest_agent_protocol", hint="this fc-agent and the guest agent in the image may differ: rebuild the image",
        )  # fmt: skip
    code, status = GUEST_CODES.get(exc.code, ("guest_error", 502))
    hint = (exc.hint or "see the guest's console log").replace("--name NAME", f"--name {name}")
    return GuestChannelError(exc.message, code=code, status=status, hint=hint)


__all__ = ["GUEST_CODES", "GuestAgentNotReady", "GuestChannelError", "translate"]
