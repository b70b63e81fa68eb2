"""``Progress``: where long operations (setup, image builds, uploads) report what they do.

The library never prints: it tells a ``Progress``. The CLI prints it for people
or as JSON lines (``fc_macos.cli.common.ClickProgress``); :class:`NullProgress`
discards everything.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def step(self, name: str, description: str) -> None:
        """Step ``name`` starts."""

    def done(self, name: str, detail: str = "") -> None:
        """Step ``name`` finished."""

    def skip(self, name: str, reason: str) -> None:
        """Step ``name`` was already done (or not needed)."""

    def info(self, message: str) -> None:
        """A detail inside the current step."""

    def transfer(self, name: str, done: int, total: int | None) -> None:
        """``done`` bytes of a long transfer ``name`` (a download, an upload, a
        copy) so far, of ``total`` if known. Called often (the receiver
        throttles); the last call of a finished transfer has ``done == total``
        (or, with an unknown total, ``total`` set to ``done``)."""


class NullProgress:
    """A Progress that reports nothing."""

    def step(self, name: str, description: str) -> None: ...
    def done(self, name: str, detail: str = "") -> None: ...
    def skip(self, name: str, reason: str) -> None: ...
    def info(self, message: str) -> None: ...
    def transfer(self, name: str, done: int, total: int | None) -> None: ...


__all__ = ["NullProgress", "Progress"]
