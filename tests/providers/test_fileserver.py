"""FileServer: serves only registered files, under an unguessable path, on one address,
and reports the bytes it sends."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fc_macos.errors import ProviderError
from fc_macos.providers.fileserver import FileServer
from tests.helpers.progress import RecordingProgress


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_serves_registered_files_with_their_digest(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    blob = tmp_path / "fire cracker.bin"
    blob.write_bytes(data)
    with FileServer("127.0.0.1") as server:
        served = server.add(blob)
        assert served.sha256 == hashlib.sha256(data).hexdigest()
        assert served.size == len(data)
        assert served.url.startswith(f"http://127.0.0.1:{server.port}/")
        assert _get(served.url) == data
        renamed = server.add(blob, name="vmlinux")
        assert renamed.url.endswith("/vmlinux") and _get(renamed.url) == data


def test_the_bytes_sent_are_reported_as_a_transfer_of_the_registered_name(tmp_path: Path) -> None:
    data = os.urandom(5 * (1 << 20) + 7)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    progress = RecordingProgress()
    with FileServer("127.0.0.1", progress=progress) as server:
        served = server.add(blob, name="rootfs.ext4")
        with urllib.request.urlopen(urllib.request.Request(served.url, method="HEAD"), timeout=10):
            pass
        assert progress.transfers == []  # a HEAD sends no bytes
        assert _get(served.url) == data
    assert progress.transfers[-1] == ("rootfs.ext4", len(data), len(data))
    assert [done for _, done, _ in progress.transfers] == [min((i + 1) << 20, len(data)) for i in range(6)]
    assert {total for _, _, total in progress.transfers} == {len(data)}


def test_everything_else_is_404(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "secret").write_text("no")
    with FileServer("127.0.0.1") as server:
        served = server.add(tmp_path / "a")
        prefix = served.url.rsplit("/", 1)[0]
        base = f"http://127.0.0.1:{server.port}"
        for url in (f"{prefix}/secret", f"{base}/a", f"{base}/", f"{prefix}/../secret", f"{prefix}x/a"):
            with pytest.raises(urllib.error.HTTPError) as err:
                _get(url)
            assert err.value.code == 404, url


def test_each_server_has_its_own_unguessable_prefix(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    with FileServer("127.0.0.1") as one, FileServer("127.0.0.1") as two:
        url_one, url_two = one.add(tmp_path / "a").url, two.add(tmp_path / "a").url
    prefix_one, prefix_two = url_one.split("/")[3], url_two.split("/")[3]
    assert prefix_one != prefix_two and len(prefix_one) >= 32


def test_listens_only_on_the_given_address_and_stops(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    server = FileServer("127.0.0.1").start()
    url = server.add(tmp_path / "a").url
    port = server.port
    other = url.replace("127.0.0.1", "127.0.0.2")
    with pytest.raises(urllib.error.URLError):
        _get(other)
    server.stop()
    server.stop()
    with pytest.raises(urllib.error.URLError):
        _get(url)
    assert port > 0


def test_bad_address_or_file_is_a_provider_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as err:
        FileServer("203.0.113.7")
    assert "gateway" in (err.value.hint or "")
    with FileServer("127.0.0.1") as server, pytest.raises(ProviderError):
        server.add(tmp_path / "missing")
