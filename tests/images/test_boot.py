"""One real boot of the offline image set under QEMU (microvm machine, TCG), the
way guest-images.md describes: kernel + initramfs + ext4 root on virtio-mmio,
shell on the serial console, ``uname -a`` answered, ``poweroff -f`` ends QEMU."""

from __future__ import annotations

import os
import platform
import re
import select
import shutil
import subprocess
import time

import pytest

from tests.helpers.guest_images import build_test_images

pytestmark = [pytest.mark.guest, pytest.mark.timeout(180)]

PROMPT = re.compile(rb"fc-microvm:/# ")


def expect(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], seen: bytearray, timeout: float) -> bytes:
    """Read QEMU's serial output until ``pattern`` matches after ``len(seen)`` at call time."""
    assert proc.stdout is not None
    start = len(seen)
    deadline = time.monotonic() + timeout
    while not pattern.search(seen, start):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {pattern.pattern!r} on the console; it said:\n{seen[-3000:].decode(errors='replace')}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            seen.extend(chunk)
    return bytes(seen[start:])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the QEMU boot test runs on x86_64 hosts")
def test_offline_images_boot_to_a_shell_under_qemu() -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    images = build_test_images()
    assert images.initrd is not None
    command = [
        qemu, "-accel", "tcg", "-M", "microvm,rtc=on", "-m", "256", "-smp", "1",
        "-kernel", str(images.kernel), "-initrd", str(images.initrd),
        "-append", "console=ttyS0 reboot=t panic=-1 root=/dev/vda rw",
        "-drive", f"id=root,file={images.rootfs},format=raw,if=none,snapshot=on",
        "-device", "virtio-blk-device,drive=root",
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
    ]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None
    seen = bytearray()
    try:
        expect(proc, re.compile(rb"Welcome to Firecracker microVM!"), seen, 120)
        expect(proc, PROMPT, seen, 60)
        proc.stdin.write(b"uname -a\n")
        proc.stdin.flush()
        answer = expect(proc, re.compile(rb"Linux fc-microvm 6\.\S+-cloud-amd64 .*x86_64"), seen, 30)
        assert b"Linux" in answer
        expect(proc, PROMPT, seen, 30)
        proc.stdin.write(b"poweroff -f\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
