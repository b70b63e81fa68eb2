"""Private copies of writable drives: made in the work directory, read-only
drives left in place, a spec that names the copy already (recorded after a
boot) kept as it is."""

from __future__ import annotations

from pathlib import Path

from fc_macos.agent.drive_copies import copy_path, copy_writable
from fc_macos.agent.wire import DriveSpec


async def test_writable_drives_are_copied_and_read_only_ones_are_not(tmp_path: Path) -> None:
    image = tmp_path / "data.img"
    image.write_bytes(b"original")
    workdir = tmp_path / "vm"
    workdir.mkdir()
    drives = (DriveSpec("data", str(image)), DriveSpec("ro", str(image), read_only=True))
    attached = await copy_writable(drives, workdir)
    assert attached == (DriveSpec("data", str(copy_path(workdir, "data"))), drives[1])
    copy_path(workdir, "data").write_bytes(b"changed by the guest")
    assert image.read_bytes() == b"original"

    again = await copy_writable(attached, workdir)  # the recorded spec, booted again
    assert again == attached and copy_path(workdir, "data").read_bytes() == b"changed by the guest"
