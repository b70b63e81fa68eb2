"""Domain errors -> HTTP status and JSON body."""

from __future__ import annotations

import pytest

from fc_macos.agent.http_errors import error_body, status_for
from fc_macos.agent.settings import parse_listen
from fc_macos.errors import (
    BootError,
    ConfigError,
    ConflictError,
    FcMacosError,
    FirecrackerAPIError,
    FirecrackerUnavailable,
    NotFoundError,
    UsageError,
    ValidationError,
)


@pytest.mark.parametrize(
    "exc, status",
    [
        (ValidationError("x"), 400),
        (UsageError("x"), 400),
        (NotFoundError("x"), 404),
        (ConflictError("x"), 409),
        (BootError("start_vmm", "x"), 422),
        (FirecrackerUnavailable("x"), 502),
        (FirecrackerAPIError(400, "bad"), 502),
        (ConfigError("x"), 500),
        (FcMacosError("x"), 500),
    ],
)
def test_status_for(exc: FcMacosError, status: int) -> None:
    assert status_for(exc) == status
    body = error_body(exc)
    assert body["message"] and body["hint"] and body["error"] == exc.code


def test_boot_error_body_names_step_and_fault_message() -> None:
    try:
        try:
            raise FirecrackerAPIError(400, "Kernel Loader: bad ELF")
        except FirecrackerAPIError as cause:
            raise BootError("start_instance", "Firecracker refused it") from cause
    except BootError as exc:
        body = error_body(exc)
    assert body["error"] == "boot_failed"
    assert body["step"] == "start_instance"
    assert body["fault_message"] == "Kernel Loader: bad ELF"


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::1]:9") == ("::1", 9)
    assert parse_listen(":7000") == ("0.0.0.0", 7000)
    for bad in ("8080", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)
