"""Host configuration: where it lives, atomic writes, the token file's mode."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fc_macos.config import AgentEndpoint, Config, home_dir
from fc_macos.errors import ConfigError


def test_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FC_MACOS_HOME", str(tmp_path / "h"))
    assert home_dir() == tmp_path / "h"


def test_config_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    cfg = Config(provider="local", vm_name="dev", extra={"future": 1})
    cfg.save(tmp_path)
    again = Config.load(tmp_path)
    assert (again.provider, again.vm_name, again.extra) == ("local", "dev", {"future": 1})


def test_unknown_provider_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"provider": "qemu"}')
    with pytest.raises(ConfigError) as info:
        Config.load(tmp_path)
    assert "tart" in (info.value.hint or "")


def test_broken_json_says_which_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ConfigError) as info:
        Config.load(tmp_path)
    assert str(tmp_path / "config.json") in info.value.message


def test_agent_endpoint_is_private(tmp_path: Path) -> None:
    AgentEndpoint(url="http://127.0.0.1:8080", token="s3cret").save(tmp_path)
    path = tmp_path / "agent.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert AgentEndpoint.load(tmp_path) == AgentEndpoint(url="http://127.0.0.1:8080", token="s3cret")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"


def test_load_before_setup_says_to_run_setup(tmp_path: Path) -> None:
    # The README's Python example calls load() first: it must not hand back None.
    with pytest.raises(ConfigError) as info:
        AgentEndpoint.load(tmp_path)
    assert "not set up yet" in info.value.message and "fc-macos setup" in (info.value.hint or "")
    assert AgentEndpoint.saved(tmp_path) is None
    AgentEndpoint(url="http://h:1", token="t").save(tmp_path)
    assert AgentEndpoint.load(tmp_path).url == "http://h:1"
    assert AgentEndpoint.saved(tmp_path) == AgentEndpoint.load(tmp_path)
