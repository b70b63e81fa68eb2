"""state.json: atomic writes, a missing file is the empty state, a broken one a ConfigError."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fc_macos.agent.state import StateStore, empty_state
from fc_macos.errors import ConfigError


def test_missing_file_is_empty_state(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "state.json").load() == empty_state()


def test_save_then_load_round_trips_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    state = {"next_index": 4, "microvms": {"a": {"name": "a", "pid": 12}}}
    store.save(state)
    store.save({**state, "next_index": 5})
    assert store.load()["next_index"] == 5
    assert store.load()["microvms"] == state["microvms"]
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("content", ["{not json", "[]", '{"microvms": []}'])
def test_broken_state_file_is_config_error_with_hint(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        StateStore(path).load()
    assert str(path) in info.value.hint
