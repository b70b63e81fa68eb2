"""Contexts: named fc-agents on other machines, reached over HTTPS with a pinned certificate.

``<home>/contexts.json`` (0600: it holds tokens)::

    {"current": "lab",
     "contexts": {"lab": {"url": "https://lab:8443", "token": "...", "fingerprint": "SHA256:..."}}}

Which agent a command talks to is decided in one place, :func:`select`:
``--context NAME``, else ``FC_MACOS_CONTEXT``, else the context chosen with
``fc-macos context use``; the name ``default`` (or none of these) means no
context: the provider's own agent (tart or local, from ``agent.json``). A
context's commands go through the ``remote`` provider
(:mod:`fc_macos.providers.remote`). Standard library only (the CLI's start path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fc_macos.config import AgentEndpoint, read_json
from fc_macos.errors import ConfigError, ConflictError, NotFoundError, UsageError
from fc_macos.fsutil import write_json_atomic

DEFAULT = "default"
ENV = "FC_MACOS_CONTEXT"
REMOTE_PROVIDER = "remote"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class Context:
    """One remote fc-agent: its HTTPS URL, token and pinned certificate fingerprint."""

    name: str
    url: str
    token: str
    fingerprint: str

    def endpoint(self) -> AgentEndpoint:
        return AgentEndpoint(self.url, self.token, provider=REMOTE_PROVIDER, fingerprint=self.fingerprint,
                             context=self.name)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    def public(self) -> dict[str, Any]:
        """What ``context list --json`` shows (never the token)."""
        return {"name": self.name, "url": self.url, "fingerprint": self.fingerprint}


def check_name(name: str) -> str:
    if name == DEFAULT or not NAME_RE.fullmatch(name):
        raise UsageError(f"{name!r} cannot name a context",
                         hint="use letters, digits, '.', '_' and '-' (at most 63); 'default' is the provider's own agent")
    return name


def check_url(url: str) -> tuple[str, int]:
    """(host, port) of a context URL; UsageError unless it is ``https://HOST[:PORT]``."""
    parts = urlsplit(url)
    if parts.scheme == "http":
        raise UsageError(f"{url} is plain HTTP: a context's token would cross the network in clear",
                         hint="give --url https://HOST:PORT, where an fc-agent started with --tls listens")
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"{url!r} is not an https://HOST:PORT URL", hint="e.g. --url https://lab.example:8443")
    if parts.path not in ("", "/") or parts.query:
        raise UsageError(f"{url} has a path: give only https://HOST:PORT", hint="e.g. --url https://lab.example:8443")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise UsageError(f"{url} has no valid port", hint="e.g. --url https://lab.example:8443") from exc
    return parts.hostname, port


class ContextStore:
    """The contexts saved under ``home``. Every change rewrites the file atomically."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "contexts.json"

    def _read(self) -> tuple[str | None, dict[str, Context]]:
        data = read_json(self.path) or {}
        try:
            current = data.get("current")
            contexts = {name: Context(name, str(c["url"]), str(c["token"]), str(c["fingerprint"]))
                        for name, c in dict(data.get("contexts") or {}).items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.path} is damaged ({exc})",
                              hint=f"fix it, or delete it and add the contexts again with 'fc-macos context add'") from exc
        return (str(current) if current else None), contexts

    def _write(self, current: str | None, contexts: dict[str, Context]) -> None:
        data = {"current": current,
                "contexts": {n: {"url": c.url, "token": c.token, "fingerprint": c.fingerprint}
                             for n, c in sorted(contexts.items())}}
        write_json_atomic(self.path, data, mode=0o600)

    def all(self) -> list[Context]:
        return sorted(self._read()[1].values(), key=lambda c: c.name)

    def current_name(self) -> str | None:
        """The context chosen with ``context use`` (None: the provider's own agent)."""
        return self._read()[0]

    def get(self, name: str) -> Context:
        contexts = self._read()[1]
        if name not in contexts:
            known = ", ".join(sorted(contexts)) or "none yet"
            raise NotFoundError(f"no context named {name!r} (known: {known})",
                                hint="see them with 'fc-macos context list'; add one with "
                                "'fc-macos context add NAME --url https://HOST:PORT --token-file FILE'")
        return contexts[name]

    def check_free(self, name: str) -> None:
        """ConflictError (hint: --force) if a context is called ``name``."""
        if name in self._read()[1]:
            raise ConflictError(f"a context named {name!r} exists already",
                                hint="add it with --force to replace it, or pick another name")

    def add(self, context: Context, *, replace: bool = False) -> None:
        if not replace:
            self.check_free(context.name)
        current, contexts = self._read()
        contexts[context.name] = context
        self._write(current, contexts)

    def remove(self, name: str) -> bool:
        """Forget ``name``; True if it was the current context (now none is)."""
        self.get(name)
        current, contexts = self._read()
        del contexts[name]
        was_current = current == name
        self._write(None if was_current else current, contexts)
        return was_current

    def use(self, name: str) -> None:
        """Make ``name`` the current context (``default``: none)."""
        current, contexts = self._read()
        if name != DEFAULT:
            self.get(name)
        self._write(None if name == DEFAULT else name, contexts)


def select(home: Path, flag: str | None, env: str | None) -> Context | None:
    """The context a command uses: ``flag`` (``--context``), else ``env``
    (``FC_MACOS_CONTEXT``), else the current one; None for ``default`` or
    when nothing names one. NotFoundError for an unknown name."""
    store = ContextStore(home)
    name = flag or env or store.current_name()
    if not name or name == DEFAULT:
        return None
    return store.get(name)


__all__ = ["DEFAULT", "ENV", "Context", "ContextStore", "check_name", "check_url", "select"]
