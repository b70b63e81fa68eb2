"""``RecordingProgress``: a Progress (fc_macos.progress) that remembers what it was told."""

from __future__ import annotations


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.transfers: list[tuple[str, int, int | None]] = []

    def step(self, name: str, description: str) -> None:
        self.events.append(("step", name, description))

    def done(self, name: str, detail: str = "") -> None:
        self.events.append(("done", name, detail))

    def skip(self, name: str, reason: str) -> None:
        self.events.append(("skip", name, reason))

    def info(self, message: str) -> None:
        self.events.append(("info", "", message))

    def transfer(self, name: str, done: int, total: int | None) -> None:
        self.transfers.append((name, done, total))

    def names(self, kind: str) -> list[str]:
        """Step names of events of ``kind`` ("step", "done", "skip"), in order."""
        return [name for k, name, _ in self.events if k == kind]

    def of(self, kind: str) -> set[str]:
        return set(self.names(kind))
