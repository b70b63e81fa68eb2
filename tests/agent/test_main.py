"""The fc-agent command line: bad settings end with a message and an exit code."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fc_macos.agent.main import main


def test_malformed_listen_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--listen", "nope", "--token-file", str(tmp_path / "t"), "--state-dir", str(tmp_path)]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_unusable_state_dir_exits_1_with_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    code = main(["--listen", "127.0.0.1:0", "--token-file", str(tmp_path / "t"), "--state-dir", str(tmp_path / "file" / "x")])
    assert code == 1
    err = capsys.readouterr().err
    assert "state directory" in err and "Hint:" in err


def test_port_in_use_exits_1_with_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["--listen", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "t"), "--state-dir", str(tmp_path / "s")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "another fc-agent" in err
    assert (tmp_path / "t").exists()  # the token file was created on the way
