"""A schema-driven fuzz of the real fc-agent: schemathesis reads GET /openapi.json
from an fc-agent process (the test VMM as its Firecracker, no images, one stopped
microVM 'old' in its state) and sends what the document allows and what it does
not; no answer may be a 5xx or stray from the document (status documented, body
matching its schema, content type, 4xx for a request the document refuses, no 4xx
for one it allows).

Reproducible and bounded: a fixed number of examples per operation, schemathesis's
deterministic generation (no seed, no example database), its coverage and fuzzing phases
(the stateful phase needs links the document does not declare). Two runs: one
with names drawn from the name pattern (nearly all unknown: the 404 paths), one
with every name 'old' (the stopped microVM: its state, its logs, the 409 of the
guest channel and the relay).

Left out, each for a reason:
* the WebSocket operations (console, exec's stream form, tunnel): schemathesis
  speaks plain HTTP; a 101 upgrade is not a request it can check, and the
  refusals before the handshake are the same code as the JSON routes'
  (tests/agent/test_console.py, test_guest_channel.py cover them);
* PUT /files: its body is a tar stream, which schemathesis cannot generate
  (no serializer for application/x-tar); tests/agent/test_guest_channel.py
  sends good, bad and cut-off tars;
* PUT /v1/images/{name} and PUT /v1/firecracker: a valid upload is a body whose
  length and sha256 are those its query declares, which no schema can state, so nearly every request
  schemathesis makes is rightly a 400 it would count against the document;
  tests/agent/test_image_routes.py sends good, short, long, corrupt, cut-off and
  too-large bodies, tests/agent/test_firecracker_install.py good, corrupt and
  unusable binaries;
* DELETE /v1/microvms/{name} in the pinned run only: it would delete 'old'
  for the rest of that run (the free run covers it).
One check is widened, for one operation: a create (POST /v1/microvms) that the
document allows may still be a 400 where the spec breaks a rule between two
fields that no JSON Schema can state (a balloon_mib larger than memory_mib). The
rules a schema can state (wait or ports without vsock, a snapshot with boot
fields) are in the document, so schemathesis sees them.
GET /logs is kept: with follow=1 it streams until the microVM stops, and every
microVM here is stopped or unknown, so each answer ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.agent import TOKEN, AgentProcess, agent_process

EXAMPLES_PER_OPERATION = 20
RUN_TIMEOUT_S = 420  # a generous bound on a loaded 2-core machine; a run takes ~1 minute
EXCLUDED = ["--exclude-path-regex", "/(console|tunnel)$", "--exclude-operation-id", "execStream",
            "--exclude-operation-id", "putFiles", "--exclude-operation-id", "uploadImage",
            "--exclude-operation-id", "installFirecracker"]  # fmt: skip


def seed_old(state_dir: Path) -> None:
    """state.json with one stopped microVM 'old' (and its serial log), as an earlier agent left it."""
    record = {
        "name": "old", "state": "stopped", "spec": {"name": "old", "vcpus": 1, "memory_mib": 128},
        "created_at": 1.0, "started_at": 2.0, "stopped_at": 3.0, "pid": None, "start_time": None,
        "pgid": None, "exit_status": 0, "error": None,
    }  # fmt: skip
    (state_dir / "microvms" / "old").mkdir(parents=True)
    (state_dir / "microvms" / "old" / "serial.log").write_text("line 1\nline 2\n")
    (state_dir / "state.json").write_text(json.dumps({"version": 1, "next_index": 1, "microvms": {"old": record}}))


#: schemathesis's own list for positive_data_acceptance, plus 400 (see the module docstring).
CREATE_ACCEPTANCE = '["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]'
CONFIG = f"""
[[operations]]
include-operation-id = "createMicroVM"
checks.positive_data_acceptance.expected-statuses = {CREATE_ACCEPTANCE}
"""


def schemathesis(agent: AgentProcess, work: Path, config: str = "", *, delete: bool = True) -> None:
    """Run schemathesis against ``agent`` (``config`` is added to the config file);
    fail with its report if it found anything."""
    (work / "schemathesis.toml").write_text(config + CONFIG)
    argv = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(work / "schemathesis.toml"),
        "run", f"{agent.url}/openapi.json",
        "--header", f"Authorization: Bearer {TOKEN}", "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--generation-deterministic", "--phases", "examples,coverage,fuzzing",
        "--checks", "all", "--continue-on-failure", "--request-timeout", "30", "--no-color", "--workers", "1",
        "--report-dir", str(work / "reports"), *EXCLUDED, *([] if delete else ["--exclude-operation-id", "deleteMicroVM"]),
    ]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=work)
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout[-20000:]}\n{run.stderr[-3000:]}"
    assert " passed" in run.stdout and "Tested:" in run.stdout, run.stdout[-3000:]


@pytest.fixture
def agent(short_tmp: Path) -> Iterator[AgentProcess]:
    """A fresh agent for each run (a run may delete what it finds)."""
    seed_old(short_tmp / "state")
    with agent_process(short_tmp) as running:
        yield running


def test_fuzz_finds_no_5xx_and_no_stray_answer(agent: AgentProcess, tmp_path: Path) -> None:
    schemathesis(agent, tmp_path)


def test_fuzz_of_an_existing_stopped_microvm(agent: AgentProcess, tmp_path: Path) -> None:
    schemathesis(agent, tmp_path, '[parameters]\n"path.name" = "old"\n', delete=False)
    # the pinned run really reached 'old' (were it gone, every answer would be a 404)
    assert Path(agent.state_dir / "microvms" / "old").is_dir()
