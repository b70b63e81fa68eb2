"""Errors of the guest channel (exec, files, ports) as fc-agent answers them.

Each carries its HTTP status (``http_status``, read by
:mod:`fc_macos.agent.http_errors`), a code from docs/design.md and a hint.
The guest agent's own error codes become these in :func:`from_guest`, with
the operation's context (a guest ``not_found`` is a missing path).

    FcMacosError
    └── GuestChannelError             http_status per instance
        ├── GuestAgentNotReady        409 guest_agent_absent / _starting / _unresponsive
        └── GuestOperationError       a guest error code, mapped (guest_path_not_found 404 ...)
"""

from __future__ import annotations

from fc_macos.errors import FcMacosError


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


class GuestOperationError(GuestChannelError):
    """The guest agent refused or failed an operation. ``guest_code`` is its own code."""

    def __init__(self, guest_code: str, message: str, *, hint: str | None = None, code: str, status: int) -> None:
        super().__init__(message, hint=hint, code=code, status=status)
        self.guest_code = guest_code


#: guest code -> (agent code, HTTP status, hint)
GUEST_CODES: dict[str, tuple[str, int, str]] = {
    "not_found": ("guest_path_not_found", 404, "check the path inside the guest (fc-macos exec --name NAME -- ls -la DIR)"),
    "not_a_directory": ("guest_not_a_directory", 409, "name a directory in the guest to copy into"),
    "permission_denied": ("guest_permission_denied", 403, "the guest agent runs as root: check the guest's mounts (read-only?)"),
    "exists": ("guest_path_exists", 409, "remove the existing path in the guest first, or copy to another name"),
    "io_error": ("guest_io_error", 502, "check the guest's disk (full? read-only?) and its console log"),
    "checksum_mismatch": ("guest_checksum_mismatch", 502, "the data changed on its way into the guest: try again"),
    "connection_refused": ("guest_port_closed", 409, "start the service in the guest first, or check its port"),
    "bad_request": ("guest_bad_request", 400, "check the request: paths in a tar must be relative and without '..'"),
    "command_not_found": ("command_not_found", 404, "check the command's name and the guest's PATH"),
    "not_executable": ("not_executable", 409, "make the file executable in the guest (chmod +x) or run it through a shell"),
    "unsupported_version": ("guest_agent_incompatible", 502, "this fc-agent and the guest agent in the image differ: rebuild the image or let fc-agent install its own"),
    "unknown_op": ("guest_agent_incompatible", 502, "this fc-agent and the guest agent in the image differ: rebuild the image or let fc-agent install its own"),
}


def from_guest(guest_code: str, message: str) -> GuestOperationError:
    """The agent's error for the guest agent's ``{"ok": false, "error", "message"}``."""
    code, status, hint = GUEST_CODES.get(guest_code, ("guest_error", 502, "see the guest's console log"))
    return GuestOperationError(guest_code, message or guest_code, hint=hint, code=code, status=status)


__all__ = ["GUEST_CODES", "GuestAgentNotReady", "GuestChannelError", "GuestOperationError", "from_guest"]
