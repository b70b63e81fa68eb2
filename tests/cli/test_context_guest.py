"""A microVM on a remote host, through a context: fc-agent --tls in a network namespace
(tests/helpers/remote_host.py) with the test VMM; run, exec (a WebSocket), list and rm
go over the pinned TLS connection. Boots a guest under QEMU (marked ``guest``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fc_macos.cli.main import cli
from tests.helpers.agent import GUEST_BOOT_ARGS, TEST_VMM
from tests.helpers.guest_images import build_test_images
from tests.helpers.remote_host import needs_netns, remote_host

pytestmark = [pytest.mark.guest, pytest.mark.timeout(600), needs_netns]


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env={"FC_MACOS_CONTEXT": "lab"})


def test_a_microvm_on_a_remote_host_over_tls(short_tmp: Path) -> None:
    images = build_test_images()
    home = short_tmp / "home"
    with remote_host() as host, host.agent(short_tmp / "a", "--tls", image_dirs=(images.kernel.parent,)) as agent:
        added = CliRunner().invoke(cli, ["--home", str(home), "context", "add", "lab", "--url", agent.url,
                                         "--token-file", str(agent.token_file), "--fingerprint", str(agent.fingerprint)])
        assert added.exit_code == 0, added.output
        setup = invoke(home, "setup")  # checks the agent and finds what it serves
        assert setup.exit_code == 0, setup.output
        assert f"kernel {images.kernel}" in setup.output and f"runs {TEST_VMM}" in setup.output
        run = invoke(home, "run", "--name", "far", "--memory", "128", "--boot-args", GUEST_BOOT_ARGS,
                     "--background", "--json")
        assert run.exit_code == 0, run.output
        assert json.loads(run.output)["state"] == "running"
        uname = subprocess.run([sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), "exec",
                                "--name", "far", "--", "uname", "-s"], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "FC_MACOS_CONTEXT": "lab"})  # exec needs real stdio
        assert uname.returncode == 0 and uname.stdout.strip() == "Linux", uname.stderr
        listed = json.loads(invoke(home, "microvm", "list", "--json").output)
        assert [vm["name"] for vm in listed] == ["far"]
        assert invoke(home, "microvm", "rm", "--name", "far", "--force").exit_code == 0
        assert json.loads(invoke(home, "microvm", "list", "--json").output) == []
