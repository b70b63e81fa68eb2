"""The context store (contexts.json) and :func:`fc_macos.contexts.select`, the one place
that decides which agent a command talks to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fc_macos import contexts
from fc_macos.contexts import Context, ContextStore
from fc_macos.errors import ConfigError, ConflictError, NotFoundError, UsageError

LAB = Context("lab", "https://lab:8443", "tok", "SHA256:" + "A" * 43)


def test_add_use_remove_and_select(tmp_path: Path) -> None:
    store = ContextStore(tmp_path)
    assert contexts.select(tmp_path, None, None) is None
    store.add(LAB)
    assert (tmp_path / "contexts.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConflictError, match="exists already"):
        store.add(LAB)
    store.add(Context("lab", "https://lab:9443", "tok2", LAB.fingerprint), replace=True)
    assert store.get("lab").url == "https://lab:9443"
    store.add(Context("edge", "https://edge", "t", LAB.fingerprint))
    assert [c.name for c in store.all()] == ["edge", "lab"]
    assert contexts.select(tmp_path, None, None) is None  # nothing chosen yet
    store.use("lab")
    assert contexts.select(tmp_path, None, None).name == "lab"  # type: ignore[union-attr]
    assert contexts.select(tmp_path, None, "edge").name == "edge"  # type: ignore[union-attr]
    assert contexts.select(tmp_path, "lab", "edge").name == "lab"  # type: ignore[union-attr]
    assert contexts.select(tmp_path, "default", "edge") is None
    assert store.remove("lab") is True and store.current_name() is None
    with pytest.raises(NotFoundError, match="no context named 'lab'") as caught:
        contexts.select(tmp_path, "lab", None)
    assert "context add" in (caught.value.hint or "")


def test_endpoint_of_a_context_pins_its_certificate() -> None:
    endpoint = LAB.endpoint()
    assert (endpoint.url, endpoint.token, endpoint.fingerprint, endpoint.context, endpoint.provider) == \
        (LAB.url, "tok", LAB.fingerprint, "lab", "remote")
    assert "token" not in LAB.public()


@pytest.mark.parametrize("url", ["http://lab:8080", "lab:8443", "https://", "https://lab:8443/v1", "https://lab:x"])
def test_only_https_host_port_urls_are_taken(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        contexts.check_url(url)
    assert caught.value.hint


@pytest.mark.parametrize("name", ["default", "", "a b", "-x", "x" * 64])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError):
        contexts.check_name(name)


def test_a_damaged_file_says_how_to_recover(tmp_path: Path) -> None:
    (tmp_path / "contexts.json").write_text(json.dumps({"contexts": {"lab": {"url": "x"}}}))
    with pytest.raises(ConfigError, match="damaged") as caught:
        ContextStore(tmp_path).all()
    assert "context add" in (caught.value.hint or "")
