"""The agent's persistent state: ``<state-dir>/state.json``.

One JSON object ``{"version": 1, "next_index": N, "microvms": {name: record}}``,
rewritten atomically (temporary file, fsync, rename) at every change, so a
``kill -9`` of the agent leaves either the old or the new state, never a torn
file. Records are plain dicts owned by :mod:`fc_macos.agent.manager`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fc_macos.errors import ConfigError
from fc_macos.fsutil import write_json_atomic

STATE_VERSION = 1


class StateStore:
    """Load and save ``state.json``. ``save`` is atomic; ``load`` of a missing
    file gives the empty state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return empty_state()
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the agent state {self.path}: {exc}",
                hint=f"move {self.path} away and restart fc-agent (running microVMs will no longer be listed)",
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("microvms"), dict):
            raise ConfigError(
                f"{self.path} is not an fc-agent state file",
                hint=f"move {self.path} away and restart fc-agent",
            )
        data.setdefault("next_index", 1)
        return data

    def save(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.path, {**state, "version": STATE_VERSION}, mode=0o600)


def empty_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "next_index": 1, "microvms": {}}
