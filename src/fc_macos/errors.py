"""The one exception tree of fc-macos.

Every error the library raises derives from :class:`FcMacosError`. Foreign
exceptions (``OSError``, ``aiohttp.ClientError``, ``subprocess`` failures ...)
are converted at the boundary where they happen, with ``raise ... from exc``.

    FcMacosError                      exit code 1 unless stated
    ├── UsageError                    bad input from the user (exit code 2)
    │   └── ValidationError           a request body breaks the Firecracker/agent rules
    ├── ConfigError                   host configuration missing or unreadable
    ├── NotFoundError                 a named thing (microVM, VM, file, image) does not exist
    ├── ConflictError                 the thing exists already / is in the wrong state
    ├── BootError                     a named boot step failed (``.step``)
    ├── FirecrackerError              talking to one Firecracker process
    │   ├── FirecrackerAPIError       Firecracker answered non-2xx (``.status``, ``.fault_message``)
    │   └── FirecrackerUnavailable    its socket cannot be reached
    ├── AgentError                    talking to fc-agent
    │   ├── AgentUnreachable          no TCP connection / timeout
    │   ├── AgentAuthError            401: the token is wrong or missing
    │   ├── AgentTLSError             TLS: a certificate that is not the pinned one, HTTP/HTTPS mixed up
    │   ├── AgentRequestError         any other 4xx/5xx with the agent's JSON error body
    │   └── GuestAgentUnavailable     the guest agent in a microVM cannot serve (absent, starting, not answering)
    ├── ExecError                     a command could not start in a guest (exit code 127 not found, 126 not executable)
    ├── GuestAgentError               the guest agent's own answers (fc_macos.guest.errors: GuestNotFound ...)
    ├── ProviderError                 driving the agent's machine (the Tart VM, or this host)
    │   ├── TartError                 a ``tart`` command failed (``.tart_exit_code``, ``.stderr``)
    │   └── SetupError                a named setup step failed (``.step``)
    ├── ImageError                    building or fetching guest images
    └── NetworkError                  a microVM's TAP device, address or NAT rules on the agent's machine

Each error carries a ``hint``: the next thing the user should do. Only the CLI
prints errors and turns them into exit codes (see :attr:`FcMacosError.exit_code`).
"""

from __future__ import annotations

from typing import Any


class FcMacosError(Exception):
    """Root of every fc-macos error.

    ``message`` says what went wrong, ``hint`` what to do next. ``code`` is a
    short machine-readable identifier (``"not_found"``, ``"boot_failed"`` ...)
    used on the agent's wire format and in ``--json`` output.
    """

    exit_code = 1
    code = "error"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The wire/--json shape: ``{"error", "message", "hint"}``."""
        return {"error": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class UsageError(FcMacosError):
    exit_code = 2
    code = "bad_request"


class ValidationError(UsageError):
    code = "invalid"


class ConfigError(FcMacosError):
    code = "config"


class NotFoundError(FcMacosError):
    code = "not_found"


class ConflictError(FcMacosError):
    code = "conflict"


class NoSpaceError(FcMacosError):
    """The disk is too full for what was asked (the agent answers 507)."""

    code = "no_space"


class BootError(FcMacosError):
    """A boot step failed; ``step`` names it (e.g. ``"configure_boot_source"``)."""

    code = "boot_failed"

    def __init__(self, step: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"boot step '{step}' failed: {message}", hint=hint)
        self.step = step


class FirecrackerError(FcMacosError):
    code = "firecracker"


class FirecrackerAPIError(FirecrackerError):
    """Firecracker answered with a non-2xx status.

    ``fault_message`` is Firecracker's own text (from ``{"fault_message"}`` or,
    for HTTP-level failures, ``{"error"}``); ``body`` keeps the raw response text.
    """

    code = "firecracker_api"

    def __init__(self, status: int, fault_message: str, *, body: str = "", hint: str | None = None) -> None:
        super().__init__(f"Firecracker answered {status}: {fault_message}", hint=hint)
        self.status = status
        self.fault_message = fault_message
        self.body = body


class FirecrackerUnavailable(FirecrackerError):
    code = "firecracker_unavailable"


class AgentError(FcMacosError):
    code = "agent"


class AgentUnreachable(AgentError):
    code = "agent_unreachable"


class AgentAuthError(AgentError):
    code = "unauthorized"


class AgentTLSError(AgentError):
    """The TLS connection to fc-agent cannot be trusted or made: the agent's
    certificate is not the pinned one, or one side speaks HTTPS and the other not."""

    code = "agent_tls"


class AgentRequestError(AgentError):
    """The agent answered with an error body ``{"error", "message", "hint"}``."""

    def __init__(self, status: int, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=code)
        self.status = status
        if 400 <= status < 500 and status not in (401, 403):
            # The user asked for something wrong (unknown microVM, bad size ...).
            self.exit_code = 1


class GuestAgentUnavailable(AgentError):
    """The guest agent of a microVM cannot serve a request; ``code`` says why:
    ``guest_agent_absent`` (not in the image, or ``vsock: false``),
    ``guest_agent_starting`` (still booting), ``guest_agent_unresponsive``
    (it crashed or hangs), ``guest_agent_timeout`` (not ready in time)."""

    code = "guest_agent_unavailable"


#: Shell conventions for a command that could not start.
EXEC_EXIT_CODES = {"command_not_found": 127, "not_executable": 126}


class ExecError(FcMacosError):
    """A command could not start in a guest (no such command, not executable,
    no such working directory). ``exit_code`` follows the shell's convention:
    127 not found, 126 not executable, else 1."""

    code = "exec_failed"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=code)
        self.exit_code = EXEC_EXIT_CODES.get(self.code, 1)


class ProviderError(FcMacosError):
    code = "provider"


class TartError(ProviderError):
    """A ``tart`` command failed. ``tart_exit_code`` is Tart's own exit code."""

    code = "tart"

    def __init__(self, message: str, *, tart_exit_code: int | None = None, stderr: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.tart_exit_code = tart_exit_code
        self.stderr = stderr


class SetupError(ProviderError):
    """A setup step failed; ``step`` names it (e.g. ``"install-agent"``)."""

    code = "setup_failed"

    def __init__(self, step: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"setup step '{step}' failed: {message}", hint=hint)
        self.step = step


class ImageError(FcMacosError):
    code = "image"


class NetworkError(FcMacosError):
    """Setting up or removing a microVM's network (TAP device, addresses, NAT rules)."""

    code = "network"


__all__ = [
    "AgentAuthError",
    "AgentError",
    "AgentRequestError",
    "AgentTLSError",
    "AgentUnreachable",
    "BootError",
    "ConfigError",
    "ConflictError",
    "ExecError",
    "FcMacosError",
    "FirecrackerAPIError",
    "FirecrackerError",
    "FirecrackerUnavailable",
    "GuestAgentUnavailable",
    "ImageError",
    "NetworkError",
    "NoSpaceError",
    "NotFoundError",
    "ProviderError",
    "SetupError",
    "TartError",
    "UsageError",
    "ValidationError",
]
