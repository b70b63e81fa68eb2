"""The ``local`` provider against the real fc-agent (a subprocess) with the test VMM
as its Firecracker binary: setup, idempotence, locking, agent start/stop, doctor
and bad input. Booting guests end to end lives in tests/cli/test_local_flow.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fc_macos.cli.main import cli
from fc_macos.agent_sync import BlockingAgent
from fc_macos.config import AgentEndpoint, Config
from fc_macos.errors import AgentAuthError, ConfigError, ConflictError, SetupError
from fc_macos.providers import get_provider
from fc_macos.images.digest import sha256_file
from fc_macos.providers.base import SetupOptions
from fc_macos.providers.firecracker_release import FIRECRACKER_SHA256
from fc_macos.providers.local import LocalProvider, check_kvm
from tests.helpers.firecracker_mirror import publish_release
from tests.helpers.http_files import serving
from tests.helpers.progress import RecordingProgress

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"

pytestmark = pytest.mark.skipif(not check_kvm().ok, reason="the local provider needs a usable /dev/kvm")


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    files = {"kernel": src / "vmlinux", "rootfs": src / "rootfs.ext4"}
    for kind, path in files.items():
        path.write_bytes(kind.encode() * 100)
    return files


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    home = tmp_path / "home"
    prov = LocalProvider(home=home, config=Config(provider="local"))
    yield prov
    prov.vm_stop(force=True)


def _options(images: dict[str, Path], **extra: object) -> SetupOptions:
    return SetupOptions(firecracker_bin=TEST_VMM, kernel=images["kernel"], rootfs=images["rootfs"], **extra)  # type: ignore[arg-type]


def test_registry_builds_the_local_provider(tmp_path: Path) -> None:
    prov = get_provider("local", tmp_path, Config(provider="local"))
    assert isinstance(prov, LocalProvider) and prov.name == "local"
    assert get_provider("tart", tmp_path, Config(provider="tart")).name == "tart"
    with pytest.raises(ConfigError):
        get_provider("qemu", tmp_path, Config())


def test_setup_starts_the_agent_and_a_rerun_is_a_no_op(provider: LocalProvider, images: dict[str, Path]) -> None:
    first = RecordingProgress()
    endpoint = provider.setup(_options(images), first)
    assert AgentEndpoint.load(provider.home) == endpoint
    assert endpoint.provider == "local"
    with BlockingAgent.from_endpoint(endpoint) as agent:
        info = agent.info()
    assert info["firecracker_bin"] == str(provider.run_dir / "bin" / "firecracker")
    assert Path(info["firecracker_bin"]).read_bytes() == TEST_VMM.read_bytes()
    installed = Path(info["state_dir"]) / "images"
    assert (installed / "vmlinux").read_bytes() == images["kernel"].read_bytes()
    assert (installed / "rootfs.ext4").read_bytes() == images["rootfs"].read_bytes()
    rootfs_size = images["rootfs"].stat().st_size
    copied = [(done, total) for name, done, total in first.transfers if name == "rootfs.ext4"]
    assert copied[-1] == (rootfs_size, rootfs_size) and all(total == rootfs_size for _, total in copied)
    assert [done for done, _ in copied] == sorted(done for done, _ in copied)  # the copy's bytes, in order
    assert {"firecracker", "vmlinux"} <= {name for name, _, _ in first.transfers}
    status = provider.vm_status()
    assert (status.state, status.running, status.agent_ok) == ("running", True, True)
    pid = status.details["pid"]

    again = RecordingProgress()
    assert provider.setup(_options(images), again) == endpoint
    assert {"install-firecracker", "install-agent", "install-images", "write-token", "start-agent"} <= again.of("skip")
    assert again.of("done") == {"check-kvm", "check-agent"}  # checks only
    assert again.transfers == []  # nothing copied
    assert provider.vm_status().details["pid"] == pid

    forced = provider.setup(_options(images, force=True), RecordingProgress())
    assert forced.token != endpoint.token
    assert provider.vm_status().details["pid"] != pid
    with pytest.raises(AgentAuthError), BlockingAgent(forced.url, endpoint.token) as stale:
        stale.info()  # the old token is gone


def test_new_images_replace_old_ones_and_a_lone_kernel_drops_the_initrd(
    provider: LocalProvider, images: dict[str, Path], tmp_path: Path
) -> None:
    initrd = tmp_path / "src" / "initrd.img"
    initrd.write_bytes(b"initrd")
    provider.setup(_options(images, initrd=initrd), RecordingProgress())
    installed = provider.run_dir / "state" / "images"
    assert (installed / "initrd.img").read_bytes() == b"initrd"
    new_kernel = tmp_path / "src" / "vmlinux-2"
    new_kernel.write_bytes(b"another kernel")
    progress = RecordingProgress()
    provider.setup(SetupOptions(firecracker_bin=TEST_VMM, kernel=new_kernel), progress)
    assert "install-images" in progress.of("done")
    assert (installed / "vmlinux").read_bytes() == b"another kernel"
    assert not (installed / "initrd.img").exists()  # it belonged to the old kernel
    assert (installed / "rootfs.ext4").read_bytes() == images["rootfs"].read_bytes()


def test_skip_assets_sets_up_without_images_and_doctor_says_so(provider: LocalProvider) -> None:
    progress = RecordingProgress()
    provider.setup(SetupOptions(firecracker_bin=TEST_VMM, skip_assets=True), progress)
    assert "install-images" in progress.of("skip")
    assert provider.vm_status().agent_ok
    checks = {c.name: c for c in provider.doctor()}
    assert not checks["images"].ok and "--images DIR" in (checks["images"].fix or "")
    assert checks["agent"].ok and checks["firecracker"].ok


def test_vm_stop_and_start_keep_the_endpoint(provider: LocalProvider, images: dict[str, Path]) -> None:
    endpoint = provider.setup(_options(images), RecordingProgress())
    report = provider.vm_stop()
    stopped = report.status
    assert (stopped.state, stopped.running, stopped.agent_ok) == ("stopped", False, False)
    assert report.message == "stopped fc-agent"
    again = provider.vm_stop()  # a no-op when stopped
    assert (again.status.state, again.message) == ("stopped", "fc-agent is not running")
    names = {c.name: c for c in provider.doctor()}
    assert not names["agent"].ok and "fc-macos vm start" in (names["agent"].fix or "")
    started = provider.vm_start(RecordingProgress())
    assert started.agent_ok
    assert provider.endpoint() == endpoint
    assert all(c.ok for c in provider.doctor()), provider.doctor()
    log = "".join(provider.vm_logs())
    assert log.count("starting fc-agent") == 2


def test_vm_shell_runs_a_local_command_and_returns_its_exit_code(provider: LocalProvider, tmp_path: Path) -> None:
    assert provider.vm_shell(["sh", "-c", "exit 3"]) == 3
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "--provider", "local",
                                      "vm", "shell", "--", "sh", "-c", "exit 4"])
    assert result.exit_code == 4


def test_vm_start_before_setup_says_run_setup(provider: LocalProvider) -> None:
    with pytest.raises(ConfigError) as info:
        provider.vm_start(RecordingProgress())
    assert "setup" in (info.value.hint or "")
    assert provider.vm_status().state == "missing"


def test_missing_kernel_file_fails_before_anything_is_made(provider: LocalProvider, images: dict[str, Path], tmp_path: Path) -> None:
    options = SetupOptions(firecracker_bin=TEST_VMM, kernel=tmp_path / "nope" / "vmlinux", rootfs=images["rootfs"])
    with pytest.raises(SetupError) as info:
        provider.setup(options, RecordingProgress())
    assert info.value.step == "install-images"
    assert "kernel file" in info.value.message and "--kernel" in (info.value.hint or "")
    assert AgentEndpoint.saved(provider.home) is None
    assert not (provider.run_dir / "state" / "images" / "rootfs.ext4").exists()
    assert provider.vm_status().running is False


def test_the_firecracker_binary_must_run_as_firecracker(provider: LocalProvider, images: dict[str, Path], tmp_path: Path) -> None:
    not_firecracker = tmp_path / "firecracker"
    not_firecracker.write_text("#!/bin/sh\necho hello\n")
    with pytest.raises(SetupError) as info:
        provider.setup(SetupOptions(firecracker_bin=not_firecracker, kernel=images["kernel"]), RecordingProgress())
    assert info.value.step == "install-firecracker"
    assert "does not run as Firecracker ('--version' said: hello, exit 0)" in info.value.message
    assert "--firecracker-bin" in (info.value.hint or "")
    with pytest.raises(SetupError) as missing:
        provider.setup(SetupOptions(firecracker_bin=tmp_path / "nope"), RecordingProgress())
    assert missing.value.step == "install-firecracker" and "is not a file" in missing.value.message


def test_a_second_setup_racing_the_first_is_a_conflict(provider: LocalProvider, images: dict[str, Path]) -> None:
    provider.home.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys\n"
         f"fd = os.open({str(provider.home / 'setup.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConflictError) as info:
            provider.setup(_options(images), RecordingProgress())
        assert f"another setup is running (pid {holder.pid})" == info.value.message
        assert AgentEndpoint.saved(provider.home) is None
    finally:
        holder.communicate("")
    provider.setup(_options(images), RecordingProgress())  # free again


def test_cli_setup_json_lines_doctor_and_vm_status(tmp_path: Path, images: dict[str, Path]) -> None:
    home = tmp_path / "cli-home"
    runner = CliRunner()
    base = ["--home", str(home), "--provider", "local"]
    try:
        result = runner.invoke(cli, [*base, "setup", "--json", "--firecracker-bin", str(TEST_VMM),
                                     "--kernel", str(images["kernel"]), "--rootfs", str(images["rootfs"])])
        assert result.exit_code == 0, result.output
        events = [json.loads(line) for line in result.output.splitlines()]
        assert events[-1]["event"] == "result" and events[-1]["provider"] == "local"
        assert {"step", "done"} <= {e["event"] for e in events}
        assert Config.load(home).provider == "local"  # remembered: no --provider needed now
        status = json.loads(runner.invoke(cli, ["--home", str(home), "vm", "status", "--json"]).output)
        assert status["agent_ok"] is True and status["provider"] == "local"
        doctor = runner.invoke(cli, ["--home", str(home), "doctor", "--json"])
        assert doctor.exit_code == 0 and json.loads(doctor.output)["ok"] is True
        stop = runner.invoke(cli, ["--home", str(home), "vm", "stop"])
        assert stop.exit_code == 0
        unreachable = runner.invoke(cli, ["--home", str(home), "microvm", "list"])
        assert unreachable.exit_code == 1
        assert "Hint: check it with 'fc-macos vm status'; start it with 'fc-macos vm start'" in unreachable.output
        doctor = runner.invoke(cli, ["--home", str(home), "doctor"])
        assert doctor.exit_code == 1 and "fix: run 'fc-macos vm start'" in doctor.output
    finally:
        runner.invoke(cli, ["--home", str(home), "vm", "stop", "--force"])


def _image_set(directory: Path, *, initrd: bool = True) -> Path:
    """A hand-made image set as 'fc-macos images build' leaves it (files + manifest.json)."""
    from fc_macos.images.digest import sha256_file

    directory.mkdir(parents=True)
    names = ["vmlinux", "rootfs.ext4", *(["initrd.img"] if initrd else [])]
    for name in names:
        (directory / name).write_bytes(name.encode() * 50)
    manifest = {"format": 1, "arch": "x86_64", "source": "debian", "kernel_format": "elf", "inputs": {},
                "files": {name: sha256_file(directory / name) for name in names}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_images_dir_installs_the_whole_set_and_doctor_says_where_it_came_from(
    provider: LocalProvider, tmp_path: Path
) -> None:
    built = _image_set(tmp_path / "built")
    progress = RecordingProgress()
    provider.setup(SetupOptions(firecracker_bin=TEST_VMM, images=built), progress)
    installed = provider.run_dir / "state" / "images"
    for name in ("vmlinux", "initrd.img", "rootfs.ext4", "manifest.json"):
        assert (installed / name).read_bytes() == (built / name).read_bytes(), name
    images = {c.name: c for c in provider.doctor()}["images"]
    assert images.ok and "built by 'fc-macos images build --source debian' (x86_64" in images.detail
    again = RecordingProgress()
    provider.setup(SetupOptions(firecracker_bin=TEST_VMM, images=built), again)
    assert "install-images" in again.of("skip")

    no_initrd = _image_set(tmp_path / "online-like", initrd=False)
    provider.setup(SetupOptions(firecracker_bin=TEST_VMM, images=no_initrd), RecordingProgress())
    assert not (installed / "initrd.img").exists()  # it belonged to the other kernel


def test_a_kernel_from_a_set_with_an_initrd_is_refused_without_it(provider: LocalProvider, tmp_path: Path) -> None:
    built = _image_set(tmp_path / "built")
    options = SetupOptions(firecracker_bin=TEST_VMM, kernel=built / "vmlinux", rootfs=built / "rootfs.ext4")
    with pytest.raises(SetupError) as info:
        provider.setup(options, RecordingProgress())
    assert info.value.step == "install-images"
    assert "boots with the initrd of its image set" in info.value.message
    assert f"fc-macos setup --images {built}" in (info.value.hint or "")
    assert f"--initrd {built / 'initrd.img'}" in (info.value.hint or "")
    provider.setup(SetupOptions(firecracker_bin=TEST_VMM, kernel=built / "vmlinux", initrd=built / "initrd.img",
                                rootfs=built / "rootfs.ext4"), RecordingProgress())
    images = {c.name: c for c in provider.doctor()}["images"]
    assert images.ok and "files given to 'fc-macos setup" in images.detail


def test_vm_stop_says_that_microvms_keep_running_and_force_stops_them(
    provider: LocalProvider, images: dict[str, Path]
) -> None:
    from fc_macos.agent.wire import MicroVMSpec

    endpoint = provider.setup(_options(images), RecordingProgress())
    with BlockingAgent.from_endpoint(endpoint) as agent:
        agent.run(lambda c: c.create_microvm(MicroVMSpec(name="keep", start=False)))
    report = provider.vm_stop()
    assert report.message.startswith("stopped fc-agent; 1 microVM(s) keep running without it: keep")
    result = CliRunner().invoke(cli, ["--home", str(provider.home), "--provider", "local", "vm", "start"])
    assert result.exit_code == 0, result.output
    with BlockingAgent.from_endpoint(endpoint) as agent:
        assert [(vm.name, vm.state) for vm in agent.list_microvms()] == [("keep", "created")]
    result = CliRunner().invoke(cli, ["--home", str(provider.home), "--provider", "local", "vm", "stop", "--force"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Stopped fc-agent and 1 microVM(s): keep.\n")


def test_another_providers_endpoint_is_refused(provider: LocalProvider, images: dict[str, Path]) -> None:
    provider.setup(_options(images), RecordingProgress())
    result = CliRunner().invoke(cli, ["--home", str(provider.home), "--provider", "tart", "microvm", "list"])
    assert result.exit_code == 1
    assert "belongs to the 'local' provider, not 'tart': 'tart' is not set up" in result.output
    assert "Hint: drop --provider tart to use the 'local' agent, or run 'fc-macos --provider tart setup'" in result.output


def test_offline_setup_without_images_offers_the_debian_build(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: as good as offline
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(SetupError) as info:
        provider.setup(SetupOptions(firecracker_bin=TEST_VMM), RecordingProgress())
    assert info.value.step == "install-images" and "cannot build guest images" in info.value.message
    hint = info.value.hint or ""
    assert "'fc-macos images build --source debian --out DIR', then 'fc-macos setup --images DIR'" in hint


def test_without_firecracker_bin_the_one_on_path_is_installed_once(
    provider: LocalProvider, images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "path-bin"
    bin_dir.mkdir()
    (bin_dir / "firecracker").symlink_to(TEST_VMM)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    progress = RecordingProgress()
    provider.setup(SetupOptions(kernel=images["kernel"], rootfs=images["rootfs"]), progress)
    done = {name: detail for kind, name, detail in progress.events if kind == "done"}
    assert done["install-firecracker"] == f"{bin_dir / 'firecracker'} (on PATH) -> {provider.run_dir / 'bin' / 'firecracker'}"
    assert (provider.run_dir / "bin" / "firecracker").read_bytes() == TEST_VMM.read_bytes()
    again = RecordingProgress()
    provider.setup(SetupOptions(kernel=images["kernel"], rootfs=images["rootfs"]), again)
    assert "install-firecracker" in again.of("skip")


def test_without_firecracker_anywhere_setup_downloads_the_release_with_progress(
    provider: LocalProvider, images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release path end to end, from a local mirror: a tarball whose sha256 is not
    the pinned one installs nothing (through the CLI, the mirror from the environment);
    with the pinned sum it is installed, its bytes reported, and kept for the next setup."""
    paths = os.environ["PATH"].split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join(d for d in paths if not (Path(d) / "firecracker").exists()))
    arch = os.uname().machine
    tarball = publish_release(tmp_path / "www", TEST_VMM, arch)
    installed = provider.run_dir / "bin" / "firecracker"
    with serving(tmp_path / "www") as mirror:
        result = CliRunner().invoke(
            cli, ["--home", str(provider.home), "--provider", "local", "setup", "--kernel", str(images["kernel"]),
                  "--rootfs", str(images["rootfs"])], env={"FC_MACOS_FIRECRACKER_MIRROR": mirror})
        assert result.exit_code == 1, result.output
        assert f"checksum mismatch for {mirror}/{tarball.parent.name}/{tarball.name}" in result.output
        assert "Hint: pass --firecracker-bin" in result.output
        assert not installed.exists() and not (provider.home / "downloads" / tarball.name).exists()

        monkeypatch.setitem(FIRECRACKER_SHA256, arch, sha256_file(tarball))
        progress = RecordingProgress()
        options = SetupOptions(firecracker_mirror=mirror, kernel=images["kernel"], rootfs=images["rootfs"])
        provider.setup(options, progress)
    done = {name: detail for kind, name, detail in progress.events if kind == "done"}
    assert done["install-firecracker"].endswith(f"sha256 verified, in {installed}")
    assert installed.read_bytes() == TEST_VMM.read_bytes() and installed.stat().st_mode & 0o777 == 0o755
    size, binary_size = tarball.stat().st_size, TEST_VMM.stat().st_size
    assert (tarball.name, size, size) in progress.transfers
    assert ("firecracker", binary_size, binary_size) in progress.transfers
    assert sha256_file(provider.home / "downloads" / tarball.name) == sha256_file(tarball)
    again = RecordingProgress()  # installed already: no download (the mirror is gone)
    provider.setup(options, again)
    assert "install-firecracker" in again.of("skip") and again.transfers == []
