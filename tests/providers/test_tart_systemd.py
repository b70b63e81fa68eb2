"""TartProvider's default path on a real Tart VM: fc-agent as the systemd unit
fc-agent.service. Runs against the Tart double booted with systemd
(``TART_DOUBLE_SYSTEMD=1``): setup, the unit, logs through journalctl,
idempotence, and an agent restart that leaves microVMs running."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fc_macos.agent.client import AgentClient
from fc_macos.agent.wire import MicroVMSpec
from fc_macos.config import AgentEndpoint
from fc_macos.errors import AgentError
from fc_macos.providers import tart_host
from tests.doubles.tart_double.state import pid_alive
from tests.helpers.progress import RecordingProgress
from tests.providers.tart_world import World, agent_health, agent_info, tart_world

VM = "fc-systemd"


class SystemdWorld(World):
    @property
    def unit_file(self) -> Path:
        return self.root / tart_host.UNIT_FILE.lstrip("/")

    def main_pid(self) -> int:
        """The agent's main pid as the double's systemd recorded it."""
        return int((self.root / "run-systemd" / "double" / "fc-agent.service.pid").read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdWorld]:
    with tart_world(tmp_path_factory.mktemp("tart-systemd"), VM, SystemdWorld, TART_DOUBLE_SYSTEMD="1") as w:
        yield w


def _wait_agent(endpoint: AgentEndpoint) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            agent_info(endpoint.url, endpoint.token)
            return
        except AgentError:
            assert time.monotonic() < deadline, "fc-agent does not answer after its restart"
            time.sleep(0.3)


def test_setup_starts_the_agent_as_a_systemd_unit(world: SystemdWorld) -> None:
    assert world.progress.names("done")[-2:] == ["start-agent", "check-agent"]
    start = next(detail for kind, name, detail in world.progress.events if (kind, name) == ("done", "start-agent"))
    assert start.startswith("systemd unit fc-agent.service;"), start
    assert agent_health(world.endpoint.url)["status"] == "ok"
    assert agent_info(world.endpoint.url, world.endpoint.token)["firecracker_bin"] == \
        tart_host.FIRECRACKER
    assert pid_alive(world.main_pid())
    active = world.tart("exec", VM, "systemctl", "is-active", "fc-agent")
    assert (active.returncode, active.stdout.strip()) == (0, "active")
    wants = world.root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "fc-agent.service"
    assert wants.is_symlink()  # enabled: starts at boot
    # the detached fallback was not used
    assert not (world.root / tart_host.AGENT_PID.lstrip("/")).exists()
    assert not (world.root / tart_host.AGENT_LOG.lstrip("/")).exists()


def test_the_unit_runs_the_agent_command_and_keeps_its_children(world: SystemdWorld) -> None:
    lines = world.unit_file.read_text().splitlines()
    assert f"ExecStart={tart_host.agent_command()}" in lines
    assert "KillMode=process" in lines
    assert world.unit_file.read_text() == tart_host.systemd_unit()
    cmdline = Path(f"/proc/{world.main_pid()}/cmdline").read_bytes().split(b"\0")
    assert b"fc_macos.agent.main" in cmdline and b"--token-file" in cmdline


def test_logs_come_from_the_journal(world: SystemdWorld) -> None:
    lines = list(world.provider.vm_logs())
    assert "systemd[1]: Started fc-agent.service." in lines  # journalctl's view, not a log file
    assert any("listening" in line for line in lines), lines


def test_setup_again_changes_nothing(world: SystemdWorld) -> None:
    pid = world.main_pid()
    progress = RecordingProgress()
    assert world.provider.setup(world.options, progress) == world.endpoint
    assert set(progress.names("skip")) == {"clone-vm", "configure-vm", "start-vm", "install-firecracker",
                                           "install-agent", "install-images", "write-token", "start-agent"}
    assert world.main_pid() == pid and pid_alive(pid)


async def test_restarting_the_service_leaves_microvms_running(world: SystemdWorld) -> None:
    old_pid = world.main_pid()
    async with AgentClient.from_endpoint(world.endpoint) as agent:
        info = await agent.create_microvm(MicroVMSpec(name="keep", memory_mib=256))
    try:
        assert info.state == "running" and info.pid and pid_alive(info.pid)
        restart = world.tart("exec", VM, "sudo", "systemctl", "restart", "fc-agent")
        assert restart.returncode == 0, restart.stderr
        assert world.main_pid() != old_pid and not pid_alive(old_pid)
        _wait_agent(world.endpoint)
        assert pid_alive(info.pid)
        async with AgentClient.from_endpoint(world.endpoint) as agent:
            listed = {vm.name: vm for vm in await agent.list_microvms()}
        assert "keep" in listed, listed
        assert (listed["keep"].state, listed["keep"].pid) == ("running", info.pid)
    finally:
        async with AgentClient.from_endpoint(world.endpoint) as agent:
            await agent.delete_microvm("keep", force=True)
    assert not pid_alive(info.pid)


@pytest.mark.timeout(120)
def test_following_the_logs_streams_new_journal_lines(world: SystemdWorld) -> None:
    journal = world.root / "var" / "log" / "journal-double" / "fc-agent.service.log"
    backlog = journal.read_text().splitlines()[-10:]  # journalctl -f shows the last 10 lines first
    logs = world.provider.vm_logs(follow=True)
    try:
        assert [next(logs) for _ in backlog] == backlog
        restart = world.tart("exec", VM, "sudo", "systemctl", "restart", "fc-agent")
        assert restart.returncode == 0, restart.stderr
        after = []
        for line in logs:
            after.append(line)
            if "listening" in line:
                break
        assert [line for line in after if line.startswith("systemd[1]:")] == [
            "systemd[1]: Stopping fc-agent.service...", "systemd[1]: Stopped fc-agent.service.",
            "systemd[1]: Starting fc-agent.service...", "systemd[1]: Started fc-agent.service."]
    finally:
        logs.close()
    _wait_agent(world.endpoint)


def test_stop_then_start_brings_the_unit_back(world: SystemdWorld) -> None:
    old_pid = world.main_pid()
    stopped = world.provider.vm_stop().status
    assert (stopped.running, stopped.agent_ok) == (False, False)
    assert not pid_alive(old_pid)
    started = world.provider.vm_start(RecordingProgress())
    assert (started.running, started.agent_ok) == (True, True)
    assert pid_alive(world.main_pid()) and world.main_pid() != old_pid
    endpoint = world.provider.endpoint()
    agent_info(endpoint.url, endpoint.token)
