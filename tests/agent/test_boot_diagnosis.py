"""boot_diagnosis on real-looking outputs: the hint fits the cause, a panic's
excerpt keeps what explains it, long lines are cut, and missing files are
no output (the agent's boot tests show it end to end)."""

from __future__ import annotations

from pathlib import Path

from fc_macos.agent import boot_diagnosis as diagnosis
from fc_macos.firecracker.launcher import VMMPaths

PANIC_CONSOLE = """\
[    1.67] /dev/root: Can't open blockdev
[    1.67] VFS: Cannot open root device "vda" or unknown-block(0,0): error -6
[    1.67] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
[    1.68] Call Trace:
[    1.68]  dump_stack_lvl+0x44/0x5c
[    1.69] Rebooting in 1 seconds..
"""


def output(console: str = "", vmm: str = "") -> diagnosis.BootOutput:
    return diagnosis.BootOutput(console=console, vmm=vmm)


def test_the_hint_fits_the_cause() -> None:
    no_root = diagnosis.hint_for(output(PANIC_CONSOLE), 256)
    assert "could not mount its root filesystem" in no_root and "--initrd" in no_root and "root=" in no_root
    memory = diagnosis.hint_for(output(vmm="qemu: cannot set up guest memory 'ram': Cannot allocate memory"), 4096)
    assert "could not give the microVM 4096 MiB" in memory and "--memory" in memory
    assert "give the microVM 64 MiB" in diagnosis.hint_for(output(), 64, fault="Cannot create vmm (os error 12)")
    elf = diagnosis.hint_for(output(), 256, fault="Kernel Loader: failed to load ELF kernel image")
    assert "uncompressed ELF vmlinux" in elf
    other = diagnosis.hint_for(output("[ 1.0] Kernel panic - not syncing: Attempted to kill init!"), 256)
    assert "the guest kernel panicked (Kernel panic - not syncing: Attempted to kill init!)" in other
    assert diagnosis.hint_for(output("all fine"), 256, default="the default") == "the default"


def test_a_panic_excerpt_keeps_the_lines_before_the_panic_and_the_last() -> None:
    excerpt = diagnosis.panic_excerpt(PANIC_CONSOLE.strip())
    assert excerpt.splitlines() == [
        "[    1.67] /dev/root: Can't open blockdev",
        '[    1.67] VFS: Cannot open root device "vda" or unknown-block(0,0): error -6',
        "[    1.67] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
        "  ...",
        "[    1.69] Rebooting in 1 seconds..",
    ]
    assert diagnosis.panicked("no panic here") is None


def test_capture_reads_the_work_directory_and_cuts_long_lines(tmp_path: Path) -> None:
    paths = VMMPaths(tmp_path)
    assert diagnosis.capture(paths) == output()  # nothing there: no output, no error
    paths.serial_log.write_text(PANIC_CONSOLE)
    paths.stderr.write_text("x" * 1000 + "\n")
    captured = diagnosis.capture(paths)
    assert captured.console == diagnosis.panic_excerpt(PANIC_CONSOLE.strip())
    assert len(captured.vmm) == diagnosis.LINE_CHARS and captured.vmm.endswith("...")
    message = diagnosis.with_output("it failed", captured)
    assert message.startswith("it failed\nLast console lines:\n  [    1.67]") and "\nLast VMM lines:\n  xxx" in message
