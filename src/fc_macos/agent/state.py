"""The agent's persistent state: one record per microVM, beside its files.

Each microVM's record is ``<state-dir>/microvms/<name>/microvm.json``, in its
own work directory (as Docker keeps each container's config in the
container's directory), rewritten atomically (temporary file, fsync,
rename) when it changes, so a ``kill -9`` of the agent leaves the old or the
new record, never a torn one, and a damaged record costs only its own
microVM. ``<state-dir>/state.json`` is a small index that can always be
rebuilt: ``{"version": 2, "next_index": N}`` (the next automatic name).

:class:`RecordStore` is the whole interface: :meth:`~RecordStore.create`
(the work directory and the first record, before anything of the microVM can
run), :meth:`~RecordStore.save`, :meth:`~RecordStore.delete`,
:meth:`~RecordStore.load_all` and :meth:`~RecordStore.save_index`. Records
are plain dicts owned by :mod:`fc_macos.agent.manager`.

:meth:`~RecordStore.load_all` never refuses to start: a damaged or missing
``state.json`` is set aside (``state.json.damaged``) and rebuilt; a work
directory whose record is missing or unreadable is reported as damaged, with
the reason, and left as it is (its files are the user's). An agent upgraded
from version 1 (every record inside ``state.json``) writes each record into
its work directory and keeps the old file as ``state.json.v1``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

from fc_macos.agent.disk_space import raise_if_full
from fc_macos.errors import ConflictError
from fc_macos.fsutil import write_json_atomic

log = logging.getLogger("fc_agent.state")

STATE_VERSION = 2
RECORD_NAME = "microvm.json"
#: Work directories being deleted are renamed to ``.trash-<name>-...`` first;
#: new ones are made as ``.new-<name>-...`` with their record, then renamed into place.
TRASH_PREFIX = ".trash-"
NEW_PREFIX = ".new-"


@dataclass
class Loaded:
    """What :meth:`RecordStore.load_all` found: valid JSON ``records`` by name,
    ``damaged`` work directories (name -> why), and the index's ``next_index``."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)
    next_index: int = 1


class RecordStore:
    """The records of the microVMs under ``microvms_dir`` and the index
    ``state_file``. Use from one thread at a time."""

    def __init__(self, state_file: Path, microvms_dir: Path) -> None:
        self.state_file = state_file
        self.microvms_dir = microvms_dir
        #: What was last written (or read) per name: unchanged records are not rewritten.
        self._written: dict[str, str] = {}
        self._index: str | None = None
        self._trash = count()

    def workdir(self, name: str) -> Path:
        return self.microvms_dir / name

    def record_path(self, name: str) -> Path:
        return self.workdir(name) / RECORD_NAME

    # -- writing ------------------------------------------------------------------

    def create(self, name: str, record: dict[str, Any]) -> None:
        """Make the work directory of ``name`` (mode 0700) with its first
        record, all at once for a crash (made aside, then renamed into place).
        ConflictError if the directory exists; NoSpaceError (and nothing
        left) if the disk is full."""
        workdir = self.workdir(name)
        if workdir.exists():
            raise ConflictError(
                f"the work directory {workdir} of microVM {name!r} exists already",
                hint=f"remove it ('fc-macos microvm rm --name {name}') or pick another name",
                code="already_exists",
            )
        new = self.microvms_dir / f"{NEW_PREFIX}{name}-{os.getpid()}-{next(self._trash)}"
        try:
            self.microvms_dir.mkdir(parents=True, exist_ok=True)
            new.mkdir(mode=0o700)
            write_json_atomic(new / RECORD_NAME, record, mode=0o600)
            new.rename(workdir)
            _fsync_dir(self.microvms_dir)
        except OSError as exc:
            shutil.rmtree(new, ignore_errors=True)
            raise_if_full(exc, f"the record of microVM {name!r}", self.microvms_dir)
            raise
        self._written[name] = json.dumps(record, sort_keys=True)

    def save(self, name: str, record: dict[str, Any]) -> None:
        """Write ``record`` as the record of ``name`` if it changed. The old
        record stays if this fails (NoSpaceError on a full disk). A name whose
        work directory is gone (deleted) is not written."""
        text = json.dumps(record, sort_keys=True)
        if self._written.get(name) == text:
            return
        workdir = self.workdir(name)
        if not workdir.is_dir():
            log.debug("not saving the record of %s: its work directory is gone", name)
            return
        try:
            write_json_atomic(workdir / RECORD_NAME, record, mode=0o600)
        except OSError as exc:
            raise_if_full(exc, f"the record of microVM {name!r}", workdir)
            raise
        self._written[name] = text

    def save_index(self, next_index: int) -> None:
        """Write ``state.json`` if ``next_index`` changed (NoSpaceError on a full disk)."""
        index = {"version": STATE_VERSION, "next_index": next_index}
        text = json.dumps(index, sort_keys=True)
        if self._index == text:
            return
        try:
            write_json_atomic(self.state_file, index, mode=0o600)
        except OSError as exc:
            raise_if_full(exc, "the agent's index state.json", self.state_file.parent)
            raise
        self._index = text

    def delete(self, name: str) -> None:
        """Remove the work directory of ``name`` with its record, all at once
        for a crash (renamed aside first; :meth:`load_all` finishes the job)."""
        self._written.pop(name, None)
        workdir = self.workdir(name)
        trash = self.microvms_dir / f"{TRASH_PREFIX}{name}-{os.getpid()}-{next(self._trash)}"
        try:
            workdir.rename(trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # -- reading ------------------------------------------------------------------

    def load_all(self) -> Loaded:
        """Every record under ``microvms_dir`` (migrating a version 1 state.json
        first), the damaged work directories, and the index. Never raises for
        damaged files; OSError only if the directories cannot be listed."""
        self.microvms_dir.mkdir(parents=True, exist_ok=True)
        loaded = Loaded()
        index = self._read_index()
        old_records = index.get("microvms")
        if isinstance(old_records, dict):
            self._migrate(old_records, index)
        next_index = index.get("next_index", 1)
        loaded.next_index = next_index if isinstance(next_index, int) and next_index >= 1 else 1
        for entry in sorted(self.microvms_dir.iterdir()):
            if entry.name.startswith((TRASH_PREFIX, NEW_PREFIX)):
                shutil.rmtree(entry, ignore_errors=True)  # a delete or create the agent did not finish
                continue
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            record, reason = self._read_record(entry.name)
            if record is None:
                loaded.damaged[entry.name] = reason
                log.warning("microVM %s cannot be recovered: %s (its files stay in %s)", entry.name, reason, entry)
            else:
                loaded.records[entry.name] = record
        return loaded

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            return self._set_aside(f"cannot read it: {exc}")
        if not isinstance(data, dict):
            return self._set_aside("it is not a JSON object")
        return data

    def _set_aside(self, reason: str) -> dict[str, Any]:
        aside = self.state_file.with_name(self.state_file.name + ".damaged")
        log.warning(
            "the agent's index %s is damaged (%s): kept as %s and rebuilt from the microVM work directories",
            self.state_file, reason, aside,
        )  # fmt: skip
        try:
            os.replace(self.state_file, aside)
        except OSError as exc:
            log.warning("cannot move %s aside: %s", self.state_file, exc)
        return {}

    def _migrate(self, old_records: dict[str, Any], index: dict[str, Any]) -> None:
        """Version 1 kept every record in state.json: write each into its work
        directory, keep the old file as state.json.v1, write the new index."""
        for key, record in old_records.items():
            if not isinstance(record, dict) or not isinstance(key, str) or "/" in key or key.startswith("."):
                log.warning("state.json (version 1): skipping the unreadable entry %r", key)
                continue
            workdir = self.workdir(key)
            workdir.mkdir(mode=0o700, exist_ok=True)
            write_json_atomic(workdir / RECORD_NAME, record, mode=0o600)
        backup = self.state_file.with_name(self.state_file.name + ".v1")
        write_json_atomic(backup, index, mode=0o600)
        next_index = index.get("next_index", 1)
        self.save_index(next_index if isinstance(next_index, int) and next_index >= 1 else 1)
        log.info("moved %d microVM record(s) from %s into their work directories (old file kept as %s)",
                 len(old_records), self.state_file, backup)  # fmt: skip

    def _read_record(self, name: str) -> tuple[dict[str, Any] | None, str]:
        path = self.record_path(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None, f"its record {path} is missing"
        except OSError as exc:
            return None, f"its record {path} cannot be read: {exc}"
        try:
            record = json.loads(text)
        except ValueError as exc:
            return None, f"its record {path} is not valid JSON: {exc}"
        if not isinstance(record, dict):
            return None, f"its record {path} is not a JSON object"
        if record.get("name") != name:
            return None, f"its record {path} names microVM {record.get('name')!r}"
        self._written[name] = json.dumps(record, sort_keys=True)
        return record, ""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["Loaded", "RECORD_NAME", "RecordStore", "STATE_VERSION"]
