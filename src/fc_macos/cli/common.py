"""What every ``fc-macos`` command shares: the application state (home, config,
provider), the ``--json`` option, output helpers, progress printing and a way
to call the agent.

Only light modules are imported here: the CLI must start fast, so aiohttp,
asyncio, the configuration and the providers are imported inside the functions
that use them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fc_macos.cli.progress_bar import ProgressBar

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient
    from fc_macos.config import AgentEndpoint, Config
    from fc_macos.providers.base import Provider

T = TypeVar("T")


class AppState:
    """Global choices made on the command line, shared through ``ctx.obj``.
    The configuration and the provider are loaded on first use.

    Which agent every command talks to is decided here, once: the context
    named by ``context_name`` (``--context``), else ``FC_MACOS_CONTEXT``, else
    the current one (:func:`fc_macos.contexts.select`) makes the provider the
    ``remote`` one of that context; else the provider of ``--provider`` or
    config.json. ``provider_name`` overrides the current context, not a named one."""

    def __init__(self, home: Path, provider_name: str | None = None, json: bool = False,
                 context_name: str | None = None, context_env: str | None = None) -> None:
        self.home = home
        self.provider_name = provider_name
        self.context_name = context_name
        self.context_env = context_env
        self.json = json
        self._config: Config | None = None
        self._provider: Provider | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from fc_macos.config import Config

            self._config = Config.load(self.home)
            if self.provider_name:
                self._config.provider = self.provider_name
        return self._config

    @property
    def provider(self) -> Provider:
        if self._provider is None:
            from fc_macos import contexts
            from fc_macos.providers import get_provider

            named = self.context_name or self.context_env
            context = None if self.provider_name and not named else contexts.select(
                self.home, self.context_name, self.context_env)
            if context is not None:
                from fc_macos.providers.remote import RemoteProvider

                self._provider = RemoteProvider(self.home, self.config, context)
            else:
                self._provider = get_provider(self.config.provider, self.home, self.config)
        return self._provider

    def endpoint(self) -> AgentEndpoint:
        """The agent endpoint of the provider: a context's (with its pinned certificate),
        else the one setup saved (ConfigError, hint: run setup, when missing)."""
        return self.provider.endpoint()

    def call_agent(self, work: Callable[[AgentClient], Awaitable[T]]) -> T:
        """Run ``work(client)`` against the saved agent endpoint and return its result."""
        import asyncio

        from fc_macos.agent.client import AgentClient

        endpoint = self.endpoint()

        async def run() -> T:
            async with AgentClient.from_endpoint(endpoint, home=self.home) as client:
                return await work(client)

        return asyncio.run(run())


pass_state = click.make_pass_decorator(AppState)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        state = ctx.find_object(AppState)
        if state is not None:
            state.json = True
    return value


json_option = click.option(
    "--json", "as_json", is_flag=True, expose_value=False, callback=_set_json, is_eager=True,
    help="Print machine-readable JSON instead of text.",
)


def emit(state: AppState, data: Any, text: str | Callable[[], None] | None = None) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text`` (a string or a printer)."""
    if state.json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif callable(text):
        text()
    elif text is not None:
        click.echo(text)
    else:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


JSON_TRANSFER_EVERY_S = 1.0


class ClickProgress:
    """The library's Progress printed for people, or as JSON lines with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._bars: dict[str, ProgressBar] = {}
        self._reported_at: dict[str, float] = {}

    def _event(self, event: str, **fields: str | int | None) -> None:
        click.echo(json.dumps({"event": event, **fields}))

    def step(self, name: str, description: str) -> None:
        if self.as_json:
            self._event("step", name=name, description=description)
        else:
            click.echo(f"==> {description}")

    def done(self, name: str, detail: str = "") -> None:
        if self.as_json:
            self._event("done", name=name, detail=detail)
        else:
            click.echo(f"    done{': ' + detail if detail else ''}")

    def skip(self, name: str, reason: str) -> None:
        if self.as_json:
            self._event("skip", name=name, reason=reason)
        else:
            click.echo(f"--- {name}: {reason} (skipped)")

    def info(self, message: str) -> None:
        if self.as_json:
            self._event("info", message=message)
        else:
            click.echo(f"    {message}")

    def transfer(self, name: str, done: int, total: int | None) -> None:
        """A bar on stderr when it is a terminal; with --json a ``transfer``
        line at most every second and at the end; otherwise nothing."""
        finished = total is not None and done >= total
        if self.as_json:
            now = time.monotonic()
            if finished or now - self._reported_at.get(name, 0.0) >= JSON_TRANSFER_EVERY_S:
                self._reported_at[name] = now
                self._event("transfer", name=name, done=done, total=total)
            if finished:
                self._reported_at.pop(name, None)
            return
        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = ProgressBar(f"    {name}")
        bar(done, total)
        if finished:
            bar.finish()
            del self._bars[name]


def print_error(state: AppState | None, code: str, message: str, hint: str | None) -> None:
    """The one place errors reach the user: stderr, plus a JSON object on stdout with --json."""
    if state is not None and state.json:
        click.echo(json.dumps({"error": code, "message": message, "hint": hint}))
    click.secho(f"Error: {message}", fg="red", err=True)
    if hint:
        click.echo(f"Hint: {hint}", err=True)

