"""TartProvider against the Tart double: setup end to end (test VMM as Firecracker, local
guest images), idempotence, the lock, VM control, doctor, and setup's failures."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.config import AgentEndpoint, Config
from fc_macos.errors import ConflictError, SetupError
from fc_macos.images.digest import sha256_file
from fc_macos.providers import tart_checks, tart_host
from fc_macos.providers.base import SetupOptions
from fc_macos.providers.firecracker_release import FIRECRACKER_SHA256, firecracker_release, install_release
from fc_macos.providers.tart import TartProvider
from fc_macos.providers.tart_guest import Guest
from tests.doubles.tart_double.fixtures import TartDouble
from tests.doubles.tart_double.state import pid_alive
from tests.helpers.firecracker_mirror import publish_release
from tests.helpers.http_files import serving
from tests.helpers.progress import RecordingProgress
from tests.providers.tart_world import TEST_VMM, World, agent_health, agent_info, tart_world

REPO = Path(__file__).resolve().parents[2]


# -- setup end to end (one VM for the module: a setup takes ~30 s here) -----------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with tart_world(tmp_path_factory.mktemp("tart-provider"), "fc-test", World) as w:
        yield w


def test_setup_runs_every_step_and_the_agent_answers_from_the_host(world: World) -> None:
    expected = ["check-tart", "check-host", "clone-vm", "configure-vm", "start-vm", "wait-ip", "wait-exec",
                "check-kvm", "inspect-vm", "install-firecracker", "install-agent", "install-images",
                "write-token", "start-agent", "check-agent"]
    assert world.progress.names("step") == expected
    assert world.progress.names("done") == expected
    address = world.provider.tart.ip("fc-test")
    assert world.endpoint.url == f"http://{address}:8080"
    saved = AgentEndpoint.load(world.home)
    assert saved == world.endpoint
    assert stat.S_IMODE((world.home / "agent.json").stat().st_mode) == 0o600
    assert agent_health(world.endpoint.url)["status"] == "ok"
    info = agent_info(world.endpoint.url, world.endpoint.token)
    assert info["firecracker_bin"] == "/usr/local/bin/firecracker"
    assert info["arch"] == os.uname().machine
    assert world.provider.config.vm_name == "fc-test"


def test_what_setup_installs_lands_in_the_vm_and_not_on_the_host(world: World) -> None:
    root = world.root
    token = root / "etc" / "fc-agent" / "token"
    assert token.read_text().strip() == world.endpoint.token
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert sha256_file(root / "usr-local-bin" / "firecracker") == sha256_file(TEST_VMM)
    assert (root / "usr-local-bin" / "fc-agent").read_text() == tart_host.agent_wrapper("fc_macos.agent.main")
    assert (root / "opt" / "fc-agent" / "lib" / "fc_macos" / "agent" / "main.py").is_file()
    assert (root / "opt" / "fc-agent" / "lib" / "aiohttp" / "__init__.py").is_file()
    images = root / "var" / "lib" / "fc-agent" / "images"
    assert sha256_file(images / "vmlinux") == sha256_file(world.options.kernel)  # type: ignore[arg-type]
    assert sha256_file(images / "rootfs.ext4") == sha256_file(world.options.rootfs)  # type: ignore[arg-type]
    rootfs_size = world.options.rootfs.stat().st_size  # type: ignore[union-attr]
    assert ("rootfs.ext4", rootfs_size, rootfs_size) in world.progress.transfers  # the VM's fetch, as it went
    assert {"firecracker", "vmlinux"} <= {name for name, _, _ in world.progress.transfers}
    for host_path in ("/etc/fc-agent", "/opt/fc-agent", "/usr/local/bin/fc-agent", "/var/lib/fc-agent"):
        assert not Path(host_path).exists(), host_path


def test_setup_again_changes_nothing(world: World) -> None:
    pid_file = world.root / "var" / "lib" / "fc-agent" / "agent.pid"
    agent_pid = pid_file.read_text().strip()
    progress = RecordingProgress()
    endpoint = world.provider.setup(world.options, progress)
    assert endpoint == world.endpoint
    assert set(progress.names("skip")) == {"clone-vm", "configure-vm", "start-vm", "install-firecracker",
                                           "install-agent", "install-images", "write-token", "start-agent"}
    assert pid_file.read_text().strip() == agent_pid and pid_alive(int(agent_pid))


def test_a_second_setup_racing_the_first_fails_clearly(world: World) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from fc_macos.providers.setup_steps import setup_lock\n"
         "with setup_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)", str(world.home)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConflictError) as err:
            world.provider.setup(world.options, RecordingProgress())
        assert f"pid {holder.pid}" in err.value.message
    finally:
        holder.kill()
        holder.wait()


def test_status_doctor_logs_and_shell(world: World) -> None:
    status = world.provider.vm_status()
    assert (status.exists, status.running, status.state, status.agent_ok) == (True, True, "running", True)
    assert status.agent_url == world.endpoint.url and status.details["cpus"] == 2
    checks = {check.name: check for check in world.provider.doctor()}
    assert all(check.ok for check in checks.values()), checks
    assert {"tart", "vm-exists", "vm-running", "agent", "token", "images"} <= set(checks)
    assert "files given to 'fc-macos setup" in checks["images"].detail  # the test images came as files
    assert any("listening" in line for line in world.provider.vm_logs())
    assert world.provider.vm_shell(["sh", "-c", "test -f /etc/fc-agent/token && exit 3"]) == 3


def test_stop_then_start_brings_the_agent_back(world: World) -> None:
    report = world.provider.vm_stop()
    stopped = report.status
    assert (stopped.running, stopped.state, stopped.agent_ok) == (False, "stopped", False)
    assert report.message.startswith("stopped the VM 'fc-test' and every microVM in it")
    checks = {check.name: check for check in world.provider.doctor()}
    assert not checks["vm-running"].ok and "fc-macos vm start" in (checks["vm-running"].fix or "")
    assert world.provider.vm_stop().status.state == "stopped"  # a no-op when stopped
    started = world.provider.vm_start(RecordingProgress())
    assert (started.running, started.agent_ok) == (True, True)
    endpoint = world.provider.endpoint()
    assert endpoint.url == started.agent_url and endpoint.token == world.endpoint.token
    agent_info(endpoint.url, endpoint.token)


def test_the_release_is_downloaded_here_checked_then_installed_in_the_vm(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pinned Firecracker release from a local mirror (this machine cannot reach
    GitHub): downloaded on this machine with its bytes reported, installed in the
    VM only when its sha256 is the pinned one, and not downloaded a second time."""
    progress = RecordingProgress()
    host = world.provider.open_host(world.options, progress)
    try:
        arch = host.arch()
        binary = tmp_path / "fc"
        binary.write_text("#!/bin/sh\necho Firecracker v1.16.1\n")
        tarball = publish_release(tmp_path / "www", binary, arch)
        downloads = tmp_path / "downloads"
        probe = "/usr/local/bin/fc-probe"
        with serving(tmp_path / "www") as mirror:
            url = f"{mirror}/{tarball.parent.name}/{tarball.name}"
            with pytest.raises(SetupError) as bad:
                install_release(host, probe, download_dir=downloads, progress=progress, mirror=mirror)
            assert bad.value.step == "install-firecracker" and f"checksum mismatch for {url}" in bad.value.message
            assert "--firecracker-bin" in (bad.value.hint or "") and "--firecracker-mirror" in (bad.value.hint or "")
            assert not (world.root / "usr-local-bin" / "fc-probe").exists() and list(downloads.iterdir()) == []
            with pytest.raises(SetupError) as missing:
                install_release(host, probe, download_dir=downloads, progress=progress, mirror=f"{mirror}/nothing")
            assert f"cannot download {mirror}/nothing/" in missing.value.message and "https_proxy" in (missing.value.hint or "")

            monkeypatch.setitem(FIRECRACKER_SHA256, arch, sha256_file(tarball))
            detail = install_release(host, probe, download_dir=downloads, progress=progress, mirror=mirror)
        assert detail == f"Firecracker v1.16.1 ({arch}) from {url}, sha256 verified, in {probe}"
        guest = Guest(world.provider.tart, world.provider.vm_name)
        assert guest.output(probe) == "Firecracker v1.16.1"
        size = tarball.stat().st_size
        assert (tarball.name, size, size) in progress.transfers  # the download, here
        assert ("fc-probe", binary.stat().st_size, binary.stat().st_size) in progress.transfers  # the copy to the VM
        assert sha256_file(downloads / tarball.name) == sha256_file(tarball)

        again = RecordingProgress()  # the mirror is gone: the kept tarball serves
        install_release(host, probe, download_dir=downloads, progress=again)
        assert ("info", "", f"{tarball.name}: already downloaded") in again.events
        assert tarball.name not in {name for name, _, _ in again.transfers}
    finally:
        host.close()


# -- failures (each on its own fresh Tart home) ------------------------------------------------------


def _provider(tmp_path: Path) -> TartProvider:
    return TartProvider(tmp_path / "fc-home", Config(provider="tart", vm_name="fc-fail"))


def test_too_old_tart_names_the_missing_feature(tart_double: TartDouble, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TART_DOUBLE_VERSION", "2.26.3")
    with pytest.raises(SetupError) as err:
        _provider(tmp_path).setup(SetupOptions(), RecordingProgress())
    assert err.value.step == "check-tart"
    assert "tart exec" in err.value.message and "brew upgrade cirruslabs/cli/tart" in (err.value.hint or "")


def test_a_failed_first_clone_leaves_no_vm(tart_double: TartDouble, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TART_DOUBLE_FAIL_CLONE", "1")
    with pytest.raises(SetupError) as err:
        _provider(tmp_path).setup(SetupOptions(), RecordingProgress())
    assert err.value.step == "clone-vm" and "pull" in err.value.message
    rows = json.loads(tart_double("list", "--format", "json").stdout)
    assert [r["Name"] for r in rows if r["Source"] == "local"] == []


def test_a_host_without_nested_virtualization_gets_a_clear_error(tart_double: TartDouble, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TART_DOUBLE_NO_NESTED", "1")
    provider = _provider(tmp_path)
    with pytest.raises(SetupError) as err:
        provider.setup(SetupOptions(), RecordingProgress())
    assert err.value.step == "wait-ip"
    assert "M3 chip" in err.value.message and "macOS 15" in (err.value.hint or "")
    assert provider.vm_status().running is False


# -- pieces -------------------------------------------------------------------------------------------


def test_firecracker_release_is_pinned_per_architecture() -> None:
    url, sha, member = firecracker_release("aarch64")
    assert url == ("https://github.com/firecracker-microvm/firecracker/releases/download/v1.16.1/"
                   "firecracker-v1.16.1-aarch64.tgz")
    assert len(sha) == 64 and member == "release-v1.16.1-aarch64/firecracker-v1.16.1-aarch64"
    assert firecracker_release("aarch64", "http://mirror.lan/fc/")[0] == (
        "http://mirror.lan/fc/v1.16.1/firecracker-v1.16.1-aarch64.tgz")
    with pytest.raises(SetupError) as err:
        firecracker_release("riscv64")
    assert "--firecracker-bin" in (err.value.hint or "")


def test_host_checks() -> None:
    assert tart_checks.check_macos("linux").ok and "not applicable" in tart_checks.check_macos("linux").detail
    assert tart_checks.check_chip("linux").ok
    if sys.platform != "darwin":  # no sw_vers/sysctl here: the checks must fail, not pass by accident
        assert not tart_checks.check_macos("darwin").ok
        assert not tart_checks.check_chip("darwin").ok
    assert not tart_checks.check_tart_version((2, 26, 9)).ok
    assert tart_checks.check_tart_version((2, 27, 0)).ok
    assert tart_checks.nested_failure("Error: Nested virtualization is only available for Mac with the M3 chip")
    assert not tart_checks.nested_failure("Error: VM is already running!")


@pytest.mark.guest
async def test_a_microvm_boots_through_the_agent_in_the_vm(world: World) -> None:
    """The whole chain: host -> agent in the Tart VM -> test VMM (QEMU) -> guest shell."""
    import asyncio

    from fc_macos.agent.client import AgentClient
    from fc_macos.agent.wire import MicroVMSpec

    endpoint = world.provider.endpoint()
    async with AgentClient.from_endpoint(endpoint) as agent:
        info = await agent.create_microvm(MicroVMSpec(name="probe", memory_mib=256))
        try:
            assert info.state == "running"
            # the microVM's files live in the Tart VM's own state directory
            assert (world.root / "var" / "lib" / "fc-agent" / "microvms" / "probe").is_dir()
            seen = b""
            async with agent.console("probe") as console:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 180
                while b"FC-PROBE-OK" not in seen:
                    assert loop.time() < deadline, seen[-500:]
                    await console.send(b"echo FC-PROBE-$((40+2))\r" if b":/# " in seen else b"\r")
                    try:
                        chunk = await asyncio.wait_for(console.receive(), 3)
                    except asyncio.TimeoutError:
                        continue
                    assert chunk is not None
                    seen += chunk
                    seen = seen.replace(b"FC-PROBE-42", b"FC-PROBE-OK")
        finally:
            await agent.delete_microvm("probe", force=True)


def test_force_rebuilds_the_vm_from_scratch(world: World) -> None:
    from fc_macos.errors import AgentAuthError

    marker = world.root / "home" / "admin" / "marker"
    marker.write_text("old VM")
    old = world.provider.endpoint()
    progress = RecordingProgress()
    new = world.provider.setup(dataclasses.replace(world.options, force=True), progress)
    assert progress.names("skip") == []
    assert any("deleting the VM 'fc-test'" in message for kind, _, message in progress.events if kind == "info")
    assert not marker.exists()
    assert new.token != old.token
    agent_info(new.url, new.token)
    with pytest.raises(AgentAuthError):
        agent_info(new.url, old.token)
