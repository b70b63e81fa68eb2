"""GET /v1/host: the agent machine's CPUs, memory, disk and load, and the agent's
own version, pid and uptime; the machine's CPU % over the last interval."""

from __future__ import annotations

import os
import time
from pathlib import Path

import fastjsonschema
from aiohttp.test_utils import TestClient

from fc_macos import __version__
from fc_macos.agent.host_stats import MachineCPU
from fc_macos.agent.settings import AgentSettings
from tests.agent.conftest import AUTH


def meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def test_host_reports_the_machine_and_the_agent(client: TestClient, settings: AgentSettings) -> None:
    assert (await client.get("/v1/host")).status == 401
    resp = await client.get("/v1/host", headers=AUTH)
    assert resp.status == 200
    host = await resp.json()
    doc = await (await client.get("/openapi.json", headers=AUTH)).json()
    schema = doc["paths"]["/v1/host"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    fastjsonschema.compile({**schema, "components": doc["components"]})(host)

    assert host["cpus"] == os.cpu_count()
    assert host["memory"]["total_mib"] == round(meminfo_kib("MemTotal") / 1024, 1)
    assert 0 < host["memory"]["used_mib"] < host["memory"]["total_mib"]
    assert host["disk"]["path"] == str(settings.state_dir)
    stat = os.statvfs(settings.state_dir)
    assert abs(host["disk"]["total_mib"] - stat.f_blocks * stat.f_frsize / 2**20) < 1
    assert host["disk"]["used_mib"] + host["disk"]["free_mib"] <= host["disk"]["total_mib"] + 1
    assert len(host["load"]) == 3 and all(v >= 0 for v in host["load"])
    assert 0 <= host["cpu_percent"] <= 100
    assert host["agent"]["version"] == __version__ and host["agent"]["pid"] == os.getpid()  # served in-process
    assert 0 < host["agent"]["uptime_s"] <= host["uptime_s"]
    assert abs(host["agent"]["started_at"] + host["agent"]["uptime_s"] - time.time()) < 60


def test_machine_cpu_is_over_the_last_interval(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: 200 busy of 1000 since boot
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 100 0 100 700 100 0 0 0 0 0\n")
    cpu = MachineCPU(stat)
    assert cpu.percent() == 20.0  # no earlier sample: the average since boot
    time.sleep(0.6)
    stat.write_text("cpu  190 0 100 710 100 0 0 0 0 0\n")  # then 90 busy of 100
    assert cpu.percent() == 90.0
