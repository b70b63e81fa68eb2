"""Errors of the guest agent channel, all under :class:`GuestAgentError`.

    FcMacosError
    └── GuestAgentError               the guest agent refused or failed an operation (.code = its code)
        ├── GuestProtocolError        the bytes on the wire make no sense (bad frame, wrong order)
        │   └── GuestConnectionClosed the connection ended in the middle of an operation
        ├── GuestBadRequest           bad_request, unsupported_version, unknown_op
        ├── GuestNotFound             not_found (a path or working directory in the guest)
        ├── GuestNotADirectory        not_a_directory
        ├── GuestPermissionDenied     permission_denied
        ├── GuestIOError              io_error
        ├── GuestChecksumMismatch     checksum_mismatch (a file changed on the way)
        ├── GuestCommandNotFound      command_not_found (exit code 127, like a shell)
        ├── GuestNotExecutable        not_executable (exit code 126)
        ├── GuestConnectionRefused    connection_refused (nothing listens on the guest port)
        ├── GuestExists               exists (the destination is in the way)
        └── OutputTooLarge            GuestConnection.run collected more than max_output (client side)

:func:`error_from_response` turns a guest's ``{"ok": false, "error", "message"}`` into the
right class, with a hint saying what to do. ``.code`` stays the guest's own code (so an
HTTP layer can choose a status from it), ``.message`` its message.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import FcMacosError


class GuestAgentError(FcMacosError):
    """An operation of the guest agent failed; ``code`` is the guest's error code."""

    code = "guest_agent"


class GuestProtocolError(GuestAgentError):
    code = "guest_protocol"


class GuestConnectionClosed(GuestProtocolError):
    code = "guest_connection_closed"


class GuestBadRequest(GuestAgentError):
    code = "bad_request"


class GuestNotFound(GuestAgentError):
    code = "not_found"


class GuestNotADirectory(GuestAgentError):
    code = "not_a_directory"


class GuestPermissionDenied(GuestAgentError):
    code = "permission_denied"


class GuestIOError(GuestAgentError):
    code = "io_error"


class GuestChecksumMismatch(GuestAgentError):
    code = "checksum_mismatch"


class GuestCommandNotFound(GuestAgentError):
    code = "command_not_found"
    exit_code = 127


class GuestNotExecutable(GuestAgentError):
    code = "not_executable"
    exit_code = 126


class GuestConnectionRefused(GuestAgentError):
    code = "connection_refused"


class GuestExists(GuestAgentError):
    code = "exists"


class OutputTooLarge(GuestAgentError):
    """:meth:`GuestConnection.run <fc_macos.guest.protocol.GuestConnection.run>` collected
    more than its ``max_output`` bytes of one stream."""

    code = "output_too_large"


_CLASSES: dict[str, type[GuestAgentError]] = {
    "bad_request": GuestBadRequest,
    "unsupported_version": GuestBadRequest,
    "unknown_op": GuestBadRequest,
    "not_found": GuestNotFound,
    "not_a_directory": GuestNotADirectory,
    "permission_denied": GuestPermissionDenied,
    "io_error": GuestIOError,
    "checksum_mismatch": GuestChecksumMismatch,
    "command_not_found": GuestCommandNotFound,
    "not_executable": GuestNotExecutable,
    "connection_refused": GuestConnectionRefused,
    "exists": GuestExists,
}

HINTS: dict[str, str] = {
    "bad_request": "this is a bug in the client of the guest agent: report it with the message",
    "unsupported_version": "the guest agent in the microVM is from another fc-macos release: "
    "restart the microVM so that it gets this release's guest agent",
    "unknown_op": "the guest agent in the microVM is older than this fc-macos: restart the microVM "
    "so that it gets this release's guest agent",
    "not_found": "check the path inside the guest (`fc-macos exec --name NAME -- ls -la DIR`)",
    "not_a_directory": "give a directory that exists in the guest",
    "permission_denied": "the guest agent runs as root: the path may be on a read-only filesystem",
    "io_error": "check the guest's console log (`fc-macos microvm logs --name NAME`) for disk or "
    "memory trouble",
    "checksum_mismatch": "the data changed on the way or the file changed while it was copied: "
    "copy it again",
    "command_not_found": "check the command's name, or give its full path "
    "(`fc-macos exec --name NAME -- sh -c 'echo $PATH'` shows the search path)",
    "not_executable": "make the file executable in the guest (chmod +x) or run it through its "
    "interpreter (sh FILE)",
    "connection_refused": "start the service in the guest first, listening on that port "
    "(on 127.0.0.1 or 0.0.0.0)",
    "exists": "remove or rename what is in the way in the guest, or copy to another place",
}


def error_from_response(body: Mapping[str, Any]) -> GuestAgentError:
    """The typed error for a guest's ``{"ok": false, "error": CODE, "message": TEXT}``.

    Unknown codes (a newer guest agent) become a plain :class:`GuestAgentError` with that code.
    """
    code = str(body.get("error") or "guest_agent")
    message = str(body.get("message") or f"the guest agent answered {code}")
    cls = _CLASSES.get(code, GuestAgentError)
    return cls(message, hint=HINTS.get(code), code=code)


__all__ = [
    "GuestAgentError",
    "GuestBadRequest",
    "GuestChecksumMismatch",
    "GuestCommandNotFound",
    "GuestConnectionClosed",
    "GuestConnectionRefused",
    "GuestExists",
    "GuestIOError",
    "GuestNotADirectory",
    "GuestNotExecutable",
    "GuestNotFound",
    "GuestPermissionDenied",
    "GuestProtocolError",
    "OutputTooLarge",
    "error_from_response",
]
