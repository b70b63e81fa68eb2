"""``fc-agent install-service``: the unit it writes, and enabling it through systemctl
(a stand-in ``systemctl`` program on PATH that records its arguments)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from fc_macos.agent.main import main


def args(tmp_path: Path, *more: str) -> list[str]:
    return ["install-service", "--tls", "--listen", "0.0.0.0:8443", "--state-dir", str(tmp_path / "state"),
            "--token-file", str(tmp_path / "token"), "--san", "lab.example", "--unit-file",
            str(tmp_path / "fc-agent.service"), *more]


def exec_start(unit: str) -> list[str]:
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_print_shows_the_unit_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(tmp_path, "--print")) == 0
    unit = capsys.readouterr().out
    assert not (tmp_path / "fc-agent.service").exists()
    assert "KillMode=process" in unit and "WantedBy=multi-user.target" in unit and "over HTTPS" in unit
    argv = exec_start(unit)
    assert argv[:3] == [sys.executable, "-m", "fc_macos.agent.main"]
    assert argv[3:] == ["--listen", "0.0.0.0:8443", "--token-file", str(tmp_path / "token"),
                        "--state-dir", str(tmp_path / "state"), "--firecracker-bin", "firecracker",
                        "--tls", "--san", "lab.example"]


def test_dry_run_says_what_it_would_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert f"would write {tmp_path / 'fc-agent.service'}" in out
    assert "would run: systemctl enable fc-agent" in out and "ExecStart=" in out
    assert not (tmp_path / "fc-agent.service").exists()


def test_without_systemctl_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "no systemctl" in err and "--print" in err
    assert not (tmp_path / "fc-agent.service").exists()


def fake_systemctl(bin_dir: Path, exit_code: int = 0) -> Path:
    log = bin_dir / "calls"
    bin_dir.mkdir()
    program = bin_dir / "systemctl"
    program.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                       + ("echo 'System has not been booted with systemd' >&2\n" if exit_code else "")
                       + f"exit {exit_code}\n")
    program.chmod(0o755)
    return log


def test_install_writes_the_unit_then_enables_and_restarts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    calls = fake_systemctl(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert main(args(tmp_path)) == 0
    unit = (tmp_path / "fc-agent.service").read_text()
    assert exec_start(unit)[-3:] == ["--tls", "--san", "lab.example"]
    assert (tmp_path / "fc-agent.service").stat().st_mode & 0o777 == 0o644
    assert calls.read_text().splitlines() == ["daemon-reload", "enable fc-agent", "restart fc-agent"]
    assert "journalctl -u fc-agent" in capsys.readouterr().out


def test_a_failing_systemctl_is_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    fake_systemctl(tmp_path / "bin", exit_code=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert main(args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "'systemctl daemon-reload' failed: System has not been booted with systemd" in err
    assert "systemctl enable --now fc-agent" in err
