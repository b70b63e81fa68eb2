"""The lifecycle commands in-process (CliRunner) against a real fc-agent process
with the test VMM: run --balloon, microvm list's address column, "did you
mean", start/restart (refused while running, then on its own disk), balloon
errors that say a balloon is added before the start, snapshots list/rm and a
load refused while the original runs, rm --all with and without --force.
One guest boots (and boots again); marked ``guest``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.terminal import Terminal
from tests.helpers.agent import GUEST_BOOT_ARGS
from tests.helpers.cli_agent import agent_home, invoke
from tests.helpers.guest_images import images_without_initrd


@pytest.fixture
def home(short_tmp: Path) -> Iterator[Path]:
    with agent_home(short_tmp) as home:
        yield home


def test_rm_all_and_snapshots_list_with_nothing_there(home: Path) -> None:
    assert invoke(home, "microvm", "rm", "--all").output == "No microVMs to remove.\n"
    result = invoke(home, "snapshots", "list")
    assert result.exit_code == 0 and result.output.startswith("No snapshots in "), result.output
    result = invoke(home, "microvm", "rm")
    assert result.exit_code == 2 and "give either --name NAME or --all" in result.output


@pytest.mark.guest
@pytest.mark.timeout(900)
def test_a_whole_lifecycle(home: Path) -> None:
    result = invoke(home, "run", "--name", "web", "--memory", "128", "--balloon", "32",
                    "--boot-args", GUEST_BOOT_ARGS, "--wait-timeout", "300", "--background", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["spec"]["balloon_mib"] == 32
    balloon = json.loads(invoke(home, "balloon", "get", "--name", "web", "--json").output)
    assert balloon["amount_mib"] == 32 and balloon["deflate_on_oom"] is True

    listing = invoke(home, "microvm", "list").output
    header, row = listing.splitlines()[:2]
    assert header.split() == ["NAME", "STATE", "VCPUS", "MEMORY", "PID", "UPTIME", "ADDRESS", "AGENT", "PORTS"]
    assert row.split()[0:2] == ["web", "running"]
    assert row[header.index("ADDRESS"):].split()[0] == "-"  # no network: no address

    result = invoke(home, "microvm", "status", "--name", "wbe")
    assert result.exit_code == 1 and "Hint: did you mean 'web'? run 'fc-macos microvm list'" in result.output
    result = invoke(home, "microvm", "start", "--name", "web")
    assert result.exit_code == 1 and "is running, so it cannot be started" in result.output
    assert "fc-macos microvm restart --name web" in result.output
    result = invoke(home, "balloon", "set", "--name", "web", "--amount-mib", "8")
    assert result.exit_code == 1 and "not supported after starting" in result.output
    assert "a balloon is added before the microVM starts: 'fc-macos run --name web --balloon MiB'" in result.output

    # a snapshot: listed with its maker; loading it is refused while web runs on the disk it uses
    assert invoke(home, "actions", "pause", "--name", "web").exit_code == 0
    result = invoke(home, "snapshots", "create", "--name", "web", "--snapshot-path", "w.snap", "--mem-path", "w.mem")
    assert result.exit_code == 0, result.output
    listed = invoke(home, "snapshots", "list").output
    assert "w.snap" in listed and "w.mem" in listed and " web " in listed, listed
    result = invoke(home, "snapshots", "load", "--name", "web2", "--snapshot-path", "w.snap", "--mem-path", "w.mem")
    assert result.exit_code == 1 and "'web' (paused) made it" in result.output
    assert "stop it first ('fc-macos microvm stop --name web'" in result.output
    result = invoke(home, "snapshots", "rm", "--snapshot-path", "w.snap", "--json")
    assert [Path(p).name for p in json.loads(result.output)["removed"]] == ["w.snap", "w.mem"]

    result = invoke(home, "microvm", "rm", "--all")
    assert result.exit_code == 1 and "1 microVM(s) still run: web; nothing was removed" in result.output

    assert invoke(home, "microvm", "stop", "--name", "web", "--force").exit_code == 0
    result = invoke(home, "microvm", "start", "--name", "web", "--wait-timeout", "300", "--json")
    assert result.exit_code == 0, result.output
    started = json.loads(result.output)
    assert started["state"] == "running" and started["guest_agent"]["state"] == "ready"
    assert started["spec"]["balloon_mib"] == 32  # its own spec, balloon and all
    result = invoke(home, "microvm", "restart", "--name", "web", "--force", "--wait-timeout", "300")
    assert result.exit_code == 0 and result.output.startswith("Restarted web (pid "), result.output
    assert "Guest agent: ready" in result.output

    result = invoke(home, "microvm", "rm", "--all", "--force")
    assert result.exit_code == 0 and result.output == "Removed web.\n"
    assert invoke(home, "microvm", "list", "--json").output.strip() == "[]"


@pytest.mark.guest
@pytest.mark.timeout(600)
def test_run_background_of_a_guest_that_panics_fails_with_the_console_tail(short_tmp: Path) -> None:
    """The new user's trip (issue 8): images without their initrd; the guest panics
    ("VFS: Unable to mount root fs"): run --background must fail, not say Started."""
    with agent_home(short_tmp, (images_without_initrd(short_tmp / "bare"),)) as home:
        result = invoke(home, "run", "--name", "web", "--memory", "128", "--boot-args", GUEST_BOOT_ARGS,
                        "--wait-timeout", "300", "--background")  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "Started" not in result.output
        assert "Error: boot step 'wait_guest_agent' failed: the guest kernel panicked at boot" in result.output
        assert "VFS: Unable to mount root fs" in result.output and "Last console lines:" in result.output
        assert "Hint: the guest kernel could not mount its root filesystem" in result.output
        assert "--initrd initrd.img" in result.output
        status = invoke(home, "microvm", "status", "--name", "web").output
        assert "State:     failed" in status and "Kernel panic" in status


@pytest.mark.guest
@pytest.mark.timeout(600)
def test_run_in_the_foreground_says_when_the_guest_panicked(short_tmp: Path) -> None:
    """Attached to the console (no wait), the panic scrolls by; when the console
    closes, run fails (exit 1) saying the microVM failed and why."""
    with agent_home(short_tmp, (images_without_initrd(short_tmp / "bare"),)) as home:
        term = Terminal([sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), "run", "--name", "web",
                         "--memory", "128", "--boot-args", GUEST_BOOT_ARGS])  # fmt: skip
        try:
            term.read_until(b"Kernel panic - not syncing: VFS: Unable to mount root fs", timeout=300)
            term.read_until(b"The console of web closed", timeout=120)
            term.read_until(b"Error: microVM web failed: the guest kernel panicked (Kernel panic - not syncing: VFS")
            term.read_until(b"Hint: read its console with 'fc-macos microvm logs --name web'")
            assert term.wait() == 1
        finally:
            term.close()
