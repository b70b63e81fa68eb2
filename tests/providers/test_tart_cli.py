"""TartCLI against the Tart double (and a scripted runner for what the double cannot do)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from fc_macos.errors import NotFoundError, TartError
from fc_macos.providers.tart_cli import CommandResult, TartCLI, find_tart, parse_version
from tests.doubles.tart_double.state import pid_alive
from tests.doubles.tart_double.fixtures import TartDouble

IMAGE = "ghcr.io/cirruslabs/ubuntu:latest"


class ScriptedRunner:
    """A runner at the process boundary that answers every command with one result."""

    def __init__(self, returncode: int, stdout: str = "", stderr: str = "") -> None:
        self.answer = (returncode, stdout, stderr)
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(tuple(argv), *self.answer)

    def spawn_detached(self, argv: Sequence[str], *, log_path: Path) -> int:
        raise OSError("not here")

    def interactive(self, argv: Sequence[str]) -> int:
        return self.answer[0]

    def stream(self, argv: Sequence[str]) -> Iterator[str]:
        yield from self.answer[1].splitlines(keepends=True)


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\necho 2.30.0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_tart_prefers_the_setting_then_path(tmp_path: Path) -> None:
    explicit = _executable(tmp_path / "my-tart")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    on_path = _executable(bindir / "tart")
    assert find_tart({"FC_MACOS_TART": str(explicit), "PATH": str(bindir)}) == explicit
    assert find_tart({"PATH": str(bindir)}) == on_path
    with pytest.raises(NotFoundError) as bad:
        find_tart({"FC_MACOS_TART": str(tmp_path / "missing"), "PATH": str(bindir)})
    assert "FC_MACOS_TART" in str(bad.value)


def test_find_tart_without_tart_says_how_to_install(tmp_path: Path) -> None:
    if (Path.home() / "Applications/tart.app/Contents/MacOS/tart").exists() or Path(
            "/Applications/tart.app").exists():
        pytest.skip("a real Tart app is installed on this machine")
    with pytest.raises(NotFoundError) as err:
        find_tart({"PATH": str(tmp_path)})
    assert "brew install cirruslabs/cli/tart" in (err.value.hint or "")


def test_parse_version() -> None:
    assert parse_version("2.32.1\n") == (2, 32, 1)
    assert parse_version("tart 2.27") == (2, 27, 0)
    with pytest.raises(TartError):
        parse_version("garbage")


def test_version_list_get_against_the_double(tart_double: TartDouble) -> None:
    cli = TartCLI()
    assert cli.version() == (2, 32, 1)
    assert cli.list_vms() == [] and cli.find("vm1") is None
    cli.clone(IMAGE, "vm1")
    cli.set("vm1", cpus=2, memory_mib=2048)
    assert [vm.source for vm in cli.list_all()] == ["OCI", "local"]
    found = cli.find("vm1")
    assert found is not None and (found.running, found.state) == (False, "stopped")
    info = cli.get("vm1")
    assert (info.os, info.cpus, info.memory_mib, info.running) == ("linux", 2, 2048, False)
    assert cli.ip("vm1") is None
    cli.delete("vm1")
    assert cli.find("vm1") is None


def test_vm_state_errors_carry_tarts_code_and_a_hint(tart_double: TartDouble) -> None:
    cli = TartCLI()
    with pytest.raises(TartError) as missing:
        cli.get("ghost")
    assert missing.value.tart_exit_code == 2
    assert "fc-macos setup" in (missing.value.hint or "")
    cli.clone(IMAGE, "vm1")
    with pytest.raises(TartError) as stopped:
        cli.exec("vm1", ["true"])
    assert stopped.value.tart_exit_code == 2 and "fc-macos vm start" in (stopped.value.hint or "")
    with pytest.raises(TartError) as missing_ip:
        cli.ip("ghost")
    assert missing_ip.value.tart_exit_code == 2


def test_usage_error_says_to_upgrade_tart() -> None:
    runner = ScriptedRunner(64, stderr="Error: Unknown option '--nested'")
    cli = TartCLI(program=Path("/opt/tart"), runner=runner)
    with pytest.raises(TartError) as err:
        cli.set("vm1", cpus=2)
    assert err.value.tart_exit_code == 64
    assert "brew upgrade cirruslabs/cli/tart" in (err.value.hint or "")
    assert runner.calls == [["/opt/tart", "set", "vm1", "--cpu", "2"]]


def test_missing_program_becomes_a_tart_error(tmp_path: Path) -> None:
    cli = TartCLI(program=tmp_path / "absent")
    with pytest.raises(TartError) as err:
        cli.version()
    assert "cannot run" in err.value.message


def test_run_exec_ip_stop_against_the_double(tart_double_root: TartDouble, tmp_path: Path) -> None:
    cli = TartCLI()
    cli.clone(IMAGE, "vm1")
    pid = cli.run_detached("vm1", log_path=tmp_path / "run.log")
    address = cli.ip("vm1", wait=20)
    assert address is not None and address.count(".") == 3
    assert cli.find("vm1").running  # type: ignore[union-attr]
    assert cli.exec("vm1", ["uname", "-m"]).stdout.strip() == os.uname().machine
    assert cli.exec("vm1", ["cat"], stdin="abc").stdout == "abc"
    failed = cli.exec("vm1", ["sh", "-c", "echo oops >&2; exit 3"], check=False)
    assert (failed.returncode, failed.stderr) == (3, "oops\n")
    with pytest.raises(TartError) as err:
        cli.exec("vm1", ["sh", "-c", "echo oops >&2; exit 3"])
    assert "oops" in err.value.message and err.value.tart_exit_code == 3
    assert list(cli.exec_stream("vm1", ["printf", "a\\nb\\n"])) == ["a\n", "b\n"]
    cli.stop("vm1", timeout=5)
    assert not cli.find("vm1").running  # type: ignore[union-attr]
    assert cli.ip("vm1") is None
    assert not pid_alive(pid)
