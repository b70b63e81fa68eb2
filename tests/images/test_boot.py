"""Real boots of the offline image set under QEMU (microvm machine, TCG), the way
guest-images.md describes: kernel + initramfs + ext4 root on virtio-mmio, a shell
on the serial console, ``uname -a`` answered, ``poweroff -f`` ends QEMU."""

from __future__ import annotations

import os
import platform
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fc_macos.images.rootfs import make_ext4, populate_busybox_tree
from tests.helpers.guest_images import build_test_images

pytestmark = [
    pytest.mark.guest,
    pytest.mark.timeout(240),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the QEMU boot tests run on x86_64 hosts"),
]

PROMPT = re.compile(rb"fc-microvm:/# ")
# Under TCG on a busy machine the kernel's PIT calibration of the TSC fails and the
# boot then hangs waiting for timer ticks; giving the TSC frequency skips it.
TCG_BOOT_ARGS = "tsc_early_khz=2000000"


class Console:
    """QEMU's serial console: ``expect`` output, ``send`` lines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.seen = bytearray()

    def expect(self, pattern: re.Pattern[bytes], timeout: float = 60) -> bytes:
        """Read until ``pattern`` matches in what arrives after this call starts."""
        assert self.proc.stdout is not None
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while not pattern.search(self.seen, start):
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not select.select([self.proc.stdout], [], [], 0)[0]):
                raise AssertionError(f"no {pattern.pattern!r} on the console; it said:\n"
                                     f"{self.seen[-3000:].decode(errors='replace')}")
            if select.select([self.proc.stdout], [], [], min(left, 1.0))[0]:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk and self.proc.poll() is not None:
                    continue
                self.seen.extend(chunk)
        return bytes(self.seen[start:])

    def send(self, line: str) -> None:
        self.send_bytes(line.encode() + b"\n")

    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()


def interrupt_sleep(console: Console) -> None:
    """Ctrl+C on the serial console interrupts a foreground ``sleep 100`` at once: the
    shell has the tty as its controlling terminal and SIGINT at its default."""
    console.send("sleep 100")
    console.expect(re.compile(rb"sleep 100\r?\n"), 30)
    time.sleep(1)  # let the shell start it
    started = time.monotonic()
    console.send_bytes(b"\x03")
    console.expect(PROMPT, 30)
    assert time.monotonic() - started < 10, "the prompt came back only when sleep ended"
    console.send("echo status-$?")
    assert b"status-130" in console.expect(PROMPT, 30)


@contextmanager
def qemu_boot(kernel: Path, initrd: Path | None, rootfs: Path) -> Iterator[Console]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    command = [
        qemu, "-accel", "tcg", "-M", "microvm,rtc=on", "-m", "256", "-smp", "1",
        "-kernel", str(kernel), "-append", f"console=ttyS0 reboot=t panic=-1 root=/dev/vda rw {TCG_BOOT_ARGS}",
        "-drive", f"id=root,file={rootfs},format=raw,if=none,snapshot=on",
        "-device", "virtio-blk-device,drive=root",
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
    ]
    if initrd is not None:
        command[command.index("-append"):command.index("-append")] = ["-initrd", str(initrd)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield Console(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def test_offline_images_boot_to_a_shell_under_qemu() -> None:
    images = build_test_images()
    assert images.initrd is not None
    with qemu_boot(images.kernel, images.initrd, images.rootfs) as console:
        console.expect(re.compile(rb"Welcome to Firecracker microVM!"), 120)
        console.expect(PROMPT)
        console.send("uname -a")
        assert re.search(rb"Linux fc-microvm 6\.\S+-cloud-amd64 .*x86_64", console.expect(PROMPT, 30))
        console.send("grep -c ' /dev/pts devpts' /proc/mounts; tr '\\0' ' ' </proc/1/cmdline; echo")
        assert re.search(rb"\n1\r?\n[^\n]*/init", console.expect(PROMPT, 30))
        # /init started the guest agent: its supervisor and the server it forked.
        console.send("for i in 1 2 3 4 5 6 7 8 9 10; do [ $(pidof fc-guest-agent | wc -w) -ge 2 ] && break; sleep 1; done; "
                     "echo agents-$(pidof fc-guest-agent | wc -w); /sbin/fc-guest-agent --version")
        assert re.search(rb"agents-2\r?\nfc-guest-agent \S+ \(protocol 1\)", console.expect(PROMPT, 30))
        interrupt_sleep(console)
        # Leaving the shell gives a new one (getty is respawned), not a dead console.
        console.send("exit")
        console.expect(re.compile(rb"built-in shell.*\n.*fc-microvm:/# ", re.S), 30)
        # The loop that respawns it is itself started again by /init (PID 1), once no
        # shell it started holds the tty (PID 1 looks every 5 s).
        console.send("kill -9 $PPID; sleep 7; echo loops-$(ps -o args | grep -c '[-]-console')")
        console.expect(re.compile(rb"loops-0"), 30)
        console.send("exit")
        console.expect(re.compile(rb"built-in shell.*\n.*fc-microvm:/# ", re.S), 60)
        interrupt_sleep(console)
        console.send("poweroff -f")
        assert console.proc.wait(timeout=60) == 0


def test_without_getty_init_falls_back_to_a_shell_and_ctrl_alt_del_reboots(tmp_path: Path) -> None:
    images = build_test_images()
    tree = tmp_path / "tree"
    populate_busybox_tree(tree, Path("/bin/busybox"))
    for link in tree.rglob("getty"):
        link.unlink()
    make_ext4(tree, tmp_path / "rootfs.ext4")
    with qemu_boot(images.kernel, images.initrd, tmp_path / "rootfs.ext4") as console:
        console.expect(PROMPT, 120)
        console.send("ps | grep -c '[g]etty'; tty")
        assert re.search(rb"\n0\r?\n/dev/ttyS0", console.expect(PROMPT, 30))
        interrupt_sleep(console)
        # What the kernel does on Ctrl-Alt-Del (Firecracker's SendCtrlAltDel): SIGINT to init.
        console.send("kill -INT 1")
        console.expect(re.compile(rb"fc-microvm: reboot"), 30)
        assert console.proc.wait(timeout=60) == 0
