"""Helpers shared by the Firecracker API commands: relay one call to a named
microVM through the agent, after checking its body against the Firecracker
1.16.1 spec on this host (fc_macos.firecracker.spec.validate_body), so that
mistakes are reported with the field and the rule they break, without a round trip.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from fc_macos.cli.common import AppState, emit, json_option, pass_state
from fc_macos.errors import UsageError

name_option = click.option("--name", required=True, help="Name of the microVM.")


def fc_call(state: AppState, name: str, method: str, path: str, body: Any = None, *, validate: bool = True) -> Any:
    """Validate and relay one call; returns Firecracker's parsed answer (None for 204)."""
    if validate:
        from fc_macos.firecracker.spec import validate_body

        validate_body(method, path, body)
    _status, answer = state.call_agent(lambda client: client.firecracker(name, method, path, body))
    return answer


def report(state: AppState, answer: Any, done: str) -> None:
    """Print Firecracker's answer, or ``done`` (``{"ok": true}`` with --json) for a 204."""
    emit(state, answer if answer is not None else {"ok": True}, done if answer is None else None)


def vm_config(state: AppState, name: str, key: str, default: Any) -> Any:
    """One section of GET /vm/config (Firecracker has no GET for boot-source, drives ...)."""
    config = fc_call(state, name, "GET", "/vm/config") or {}
    return config.get(key) or default


def json_arg(value: str | None, what: str) -> Any:
    """An option given as JSON text, parsed (UsageError naming the option if it is not JSON)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}",
                         hint='e.g. \'{"bandwidth": {"size": 1000, "refill_time": 100}}\'') from exc


def drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


Fetch = Callable[[AppState, str], Any]


def get_from(path: str) -> Fetch:
    """Fetch: Firecracker's answer to GET ``path``."""
    return lambda state, name: fc_call(state, name, "GET", path)


def config_section(key: str, default: Any) -> Fetch:
    """Fetch: one section of GET /vm/config."""
    return lambda state, name: vm_config(state, name, key, default)


def show_command(command_name: str, summary: str, example: str, fetch: Fetch) -> click.Command:
    """A command that fetches one thing from the microVM ``--name`` and prints it."""

    @name_option
    @json_option
    @pass_state
    def command(state: AppState, name: str) -> None:
        emit(state, fetch(state, name))

    command.__doc__ = f"{summary}\n\n\b\nExample:\n  {example}"
    return click.command(command_name)(command)
