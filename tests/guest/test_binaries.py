"""The built binaries: static ELF executables for their architecture; the aarch64 one runs
under qemu-user where it is installed."""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from fc_macos.errors import NotFoundError
from fc_macos.guest import PROTOCOL_VERSION, binary_path

EM_X86_64, EM_AARCH64 = 62, 183
PT_DYNAMIC, PT_INTERP = 2, 3


@dataclass
class Elf:
    elf_class: int
    data: int
    type: int
    machine: int
    segment_types: list[int]


def parse_elf(path: Path) -> Elf:
    raw = path.read_bytes()
    assert raw[:4] == b"\x7fELF", f"{path} is not an ELF file"
    elf_class, data = raw[4], raw[5]
    assert (elf_class, data) == (2, 1), "expected a 64-bit little-endian ELF"
    e_type, e_machine = struct.unpack_from("<HH", raw, 16)
    e_phoff, = struct.unpack_from("<Q", raw, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", raw, 54)
    segments = [struct.unpack_from("<I", raw, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)]
    return Elf(elf_class, data, e_type, e_machine, segments)


@pytest.fixture(scope="module")
def aarch64_binary() -> Path:
    try:
        return binary_path("aarch64")
    except NotFoundError:
        from fc_macos.guest.build import GuestBuildError, build

        try:
            return build("aarch64")
        except GuestBuildError as exc:
            pytest.skip(f"cannot build the aarch64 guest agent: {exc}")


@pytest.mark.parametrize(("arch", "machine"), [("x86_64", EM_X86_64), ("aarch64", EM_AARCH64)])
def test_binary_is_a_static_executable_for_its_arch(arch: str, machine: int, agent_binary: Path,
                                                    aarch64_binary: Path) -> None:
    elf = parse_elf(agent_binary if arch == "x86_64" else aarch64_binary)
    assert elf.machine == machine
    assert elf.type == 2  # ET_EXEC: not a PIE needing a loader
    assert PT_INTERP not in elf.segment_types and PT_DYNAMIC not in elf.segment_types


def test_aarch64_binary_answers_version_under_qemu(aarch64_binary: Path) -> None:
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if qemu is None:
        pytest.skip("qemu-user-static is not installed: apt-get install qemu-user-static (scripts/setup-test-host)")
    out = subprocess.run([qemu, str(aarch64_binary), "--version"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out == f"fc-guest-agent 0.1.0 (protocol {PROTOCOL_VERSION})\n"


def test_binary_path_knows_arch_aliases_and_refuses_others(agent_binary: Path) -> None:
    assert binary_path("amd64") == binary_path("x86_64")
    from fc_macos.errors import UsageError

    with pytest.raises(UsageError, match="riscv64"):
        binary_path("riscv64")


def test_binary_path_hints_at_the_build_when_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fc_macos.guest as guest

    monkeypatch.setattr(guest, "BIN_DIR", tmp_path)
    with pytest.raises(NotFoundError) as info:
        guest.binary_path("x86_64")
    assert "python -m fc_macos.guest.build" in (info.value.hint or "")


def test_build_writes_both_binaries_into_a_directory(tmp_path: Path) -> None:
    from fc_macos.guest.build import main

    assert main(["--arch", "all", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc-guest-agent-aarch64", "fc-guest-agent-x86_64"]
    assert parse_elf(tmp_path / "fc-guest-agent-aarch64").machine == EM_AARCH64


def test_build_without_sources_says_where_to_look(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fc_macos.guest.build import main

    assert main(["--arch", "x86_64", "--out", str(tmp_path), "--source", str(tmp_path)]) == 1
    assert "no guest agent sources" in capsys.readouterr().err


def test_build_without_ziglang_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from fc_macos.guest import build

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ziglang" else real(name, *a))
    with pytest.raises(build.GuestBuildError) as info:
        build.compiler()
    assert "pip install ziglang" in (info.value.hint or "")
