"""The snapshots the agent knows: which microVM made each one, and where its files live.

Snapshots are written by Firecracker (``PUT /snapshot/create`` relayed to a
paused microVM); the manager records each successful one here
(:meth:`SnapshotIndex.record`) in ``<state-dir>/snapshots.json``: the VM
state file, the memory file, the microVM that made it and the disk the
snapshot's guest uses (that microVM's rootfs copy: a restore boots on the
same file). :meth:`SnapshotIndex.list` adds the files of
``<state-dir>/snapshots`` that no record names (made by hand, or by an older
agent); :meth:`SnapshotIndex.remove` deletes a snapshot's files.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fc_macos.errors import NotFoundError
from fc_macos.fsutil import write_json_atomic

log = logging.getLogger("fc_agent.snapshots")


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot: its two files (absolute paths), who made it and when,
    the disk its guest runs on, and whether that microVM had a vsock device
    (None: not known, for a file no record names or an older agent's record)."""

    snapshot_path: str
    mem_path: str | None
    microvm: str | None
    created_at: float | None
    disk: str | None
    vsock: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotRecord:
        fields: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        if not isinstance(fields["snapshot_path"], str):
            raise TypeError("a snapshot record needs its snapshot_path")
        return cls(**fields)


def _size(path: str | None) -> int | None:
    try:
        return None if path is None else os.stat(path).st_size
    except OSError:
        return None


class SnapshotIndex:
    """``<state-dir>/snapshots.json`` plus the files of the snapshot directory.
    Use from one event loop (every change rewrites the file atomically)."""

    def __init__(self, path: Path, snapshots_dir: Path) -> None:
        self.path = path
        self.snapshots_dir = snapshots_dir

    def _load(self) -> list[SnapshotRecord]:
        try:
            data = json.loads(self.path.read_text())
            return [SnapshotRecord.from_dict(item) for item in data.get("snapshots", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring the unreadable snapshot index %s: %s", self.path, exc)
            return []

    def _save(self, records: list[SnapshotRecord]) -> None:
        write_json_atomic(self.path, {"version": 1, "snapshots": [asdict(r) for r in records]}, mode=0o600)

    def resolve(self, path: str) -> str:
        """``path`` as the agent writes snapshots: absolute paths as they are,
        bare names inside the snapshot directory."""
        return os.path.normpath(path if os.path.isabs(path) else os.path.join(self.snapshots_dir, path))

    def record(self, *, snapshot_path: str, mem_path: str, microvm: str, disk: str | None,
               vsock: bool | None = None) -> None:
        """Remember a snapshot just written (one record per state file: a
        snapshot written again over the same file replaces its record)."""
        entry = SnapshotRecord(self.resolve(snapshot_path), self.resolve(mem_path), microvm, time.time(), disk, vsock)
        records = [r for r in self._load() if r.snapshot_path != entry.snapshot_path]
        self._save([*records, entry])

    def find(self, snapshot_path: str) -> SnapshotRecord | None:
        """The record of the state file ``snapshot_path`` (a bare name or a path)."""
        wanted = self.resolve(snapshot_path)
        return next((r for r in self._load() if r.snapshot_path == wanted), None)

    def had_vsock(self, snapshot_path: str) -> bool | None:
        """Whether the microVM that made ``snapshot_path`` had a vsock device (None: not known)."""
        record = self.find(snapshot_path)
        return None if record is None else record.vsock

    def list(self) -> list[dict[str, Any]]:
        """Every known snapshot (with its files' sizes; a size is None when the
        file is gone), then the other files of the snapshot directory."""
        records = self._load()
        out = [asdict(r) | {"snapshot_bytes": _size(r.snapshot_path), "mem_bytes": _size(r.mem_path),
                            "disk_exists": r.disk is not None and os.path.isfile(r.disk)} for r in records]  # fmt: skip
        named = {p for r in records for p in (r.snapshot_path, r.mem_path) if p}
        try:
            files = sorted(p for p in self.snapshots_dir.iterdir() if p.is_file() and str(p) not in named)
        except OSError:
            files = []
        out += [asdict(SnapshotRecord(str(p), None, None, p.stat().st_mtime, None))
                | {"snapshot_bytes": p.stat().st_size, "mem_bytes": None, "disk_exists": False} for p in files]  # fmt: skip
        return out

    def remove(self, path: str) -> builtins.list[str]:
        """Delete the snapshot whose state file is ``path`` (its memory file
        too) and its record; returns the files removed. A file of the snapshot
        directory that no record names may be removed as well. NotFoundError
        when there is no such snapshot: ``snapshot_not_found``, or
        ``not_a_snapshot`` for a path outside the snapshot directory that is not
        a recorded snapshot (never removed)."""
        wanted = self.resolve(path)
        records = self._load()
        found = next((r for r in records if r.snapshot_path == wanted), None)
        if found is None:
            inside = os.path.dirname(wanted) == str(self.snapshots_dir)
            if not inside:
                raise NotFoundError(
                    f"{path!r} is not a snapshot fc-agent knows, and it is outside its snapshot directory {self.snapshots_dir}",
                    hint="list the snapshots with 'fc-macos snapshots list' (GET /v1/snapshots)",
                    code="not_a_snapshot",
                )
            if not os.path.isfile(wanted):
                raise NotFoundError(
                    f"no snapshot {path!r} in {self.snapshots_dir}",
                    hint="list the snapshots with 'fc-macos snapshots list' (GET /v1/snapshots)",
                    code="snapshot_not_found",
                )
            found = SnapshotRecord(wanted, None, None, None, None)
        removed = []
        for file in (found.snapshot_path, found.mem_path):
            if file is None:
                continue
            try:
                os.unlink(file)
                removed.append(file)
            except FileNotFoundError:
                pass
        self._save([r for r in records if r.snapshot_path != wanted])
        return removed


__all__ = ["SnapshotIndex", "SnapshotRecord"]
