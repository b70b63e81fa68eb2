"""One real fc-agent (``--provider local``, the test VMM as Firecracker) and
one booted guest, shared by the host-side tests of exec, cp, ports and the
Python API (booting a guest under QEMU TCG takes a while).

The session fixture ``guest_world`` runs ``fc-macos setup`` into a short
home under /tmp (Unix socket paths are limited to 107 bytes), then
``fc-macos run --name box --background -p 127.0.0.1:<free port>:80`` (which
waits for the guest agent) and starts busybox httpd in the guest, serving
``/tmp/www``. Tests must leave ``box`` running; files they make in the guest
go under their own directory. At the end the agent and every microVM stop.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fc_macos.providers.local import check_kvm
from fc_macos.providers.local_agent import free_port

REPO = Path(__file__).resolve().parents[2]
TEST_VMM = REPO / "tests" / "doubles" / "firecracker_vmm.py"
#: Under QEMU TCG on a loaded host the guest kernel's TSC calibration can hang; this skips it.
BOOT_ARGS = "console=ttyS0 reboot=k panic=1 tsc_early_khz=2000000"
BOX = "box"
INDEX = b"<h1>hello from the guest</h1>\n"


@dataclass(frozen=True)
class GuestWorld:
    home: Path
    name: str
    http_port: int  # published by the agent: 127.0.0.1:http_port -> box:80

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fc_macos.cli.main", "--home", str(self.home), *args]

    def fc(self, *args: str, check: bool = True, input: bytes | None = None,
           timeout: float = 240) -> subprocess.CompletedProcess[bytes]:
        """Run the CLI; with ``check`` it must exit 0."""
        result = subprocess.run(self.argv(*args), input=input, capture_output=True, timeout=timeout)
        if check:
            assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
        return result

    def sh(self, script: str, *, timeout: float = 120) -> bytes:
        """Run a shell script in the shared guest; its stdout (it must exit 0)."""
        return self.fc("exec", "--name", self.name, "--", "/bin/sh", "-c", script, timeout=timeout).stdout


def setup_args() -> list[str]:
    from tests.helpers.guest_images import build_test_images

    images = build_test_images()
    args = ["--provider", "local", "setup", "--json", "--firecracker-bin", str(TEST_VMM),
            "--kernel", str(images.kernel), "--rootfs", str(images.rootfs)]
    if images.initrd:
        args += ["--initrd", str(images.initrd)]
    return args


@pytest.fixture(scope="session")
def guest_world() -> Iterator[GuestWorld]:
    if not check_kvm().ok:
        pytest.skip("the local provider needs a usable /dev/kvm")
    home = Path(tempfile.mkdtemp(prefix="fcw-", dir="/tmp"))
    world = GuestWorld(home, BOX, free_port())
    try:
        world.fc(*setup_args())
        started = world.fc("run", "--name", BOX, "--memory", "384", "--boot-args", BOOT_ARGS, "--background",
                           "-p", f"127.0.0.1:{world.http_port}:80", timeout=400).stdout.decode()
        assert "Guest agent: ready in " in started, started  # run --background waited for it
        assert (f"Published: 127.0.0.1:{world.http_port} -> box:80 (reach it at 127.0.0.1:{world.http_port})"
                in started), started
        info = json.loads(world.fc("microvm", "status", "--name", BOX, "--json").stdout)
        assert info["guest_agent"]["state"] == "ready", info
        world.sh(f"mkdir -p /tmp/www && printf '{INDEX.decode().strip()}\\n' > /tmp/www/index.html && "
                 "busybox httpd -p 80 -h /tmp/www")
        yield world
    finally:
        subprocess.run(world.argv("vm", "stop", "--force"), capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
