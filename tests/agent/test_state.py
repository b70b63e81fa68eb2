"""The record store: one atomic record per microVM in its work directory, a
rebuildable index, damaged files named (never fatal, never deleted), and the
move from a version 1 state.json."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fc_macos.agent.state import RECORD_NAME, RecordStore
from fc_macos.errors import ConflictError


def store_in(tmp_path: Path) -> RecordStore:
    return RecordStore(tmp_path / "state.json", tmp_path / "microvms")


def record(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "state": "stopped", "spec": {"name": name}, "created_at": 1.0, **extra}


def test_nothing_there_loads_as_empty(tmp_path: Path) -> None:
    loaded = store_in(tmp_path).load_all()
    assert (loaded.records, loaded.damaged, loaded.next_index) == ({}, {}, 1)


def test_records_round_trip_beside_the_files_and_leave_no_temporary_files(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.load_all()
    store.create("a", record("a"))
    store.save("a", record("a", pid=12))
    store.create("b", record("b"))
    store.save_index(4)
    loaded = store_in(tmp_path).load_all()
    assert loaded.records == {"a": record("a", pid=12), "b": record("b")}
    assert loaded.next_index == 4 and loaded.damaged == {}
    assert sorted(p.name for p in (tmp_path / "microvms" / "a").iterdir()) == [RECORD_NAME]
    assert stat.S_IMODE((tmp_path / "microvms" / "a" / RECORD_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "microvms" / "a").stat().st_mode) == 0o700
    assert json.loads((tmp_path / "state.json").read_text()) == {"version": 2, "next_index": 4}


def test_unchanged_record_is_not_rewritten(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.create("a", record("a"))
    path = tmp_path / "microvms" / "a" / RECORD_NAME
    inode = path.stat().st_ino
    store.save("a", record("a"))
    assert path.stat().st_ino == inode
    store.save("a", record("a", pid=3))
    assert path.stat().st_ino != inode


def test_create_refuses_an_existing_work_directory_and_keeps_it(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    (tmp_path / "microvms" / "a").mkdir(parents=True)
    (tmp_path / "microvms" / "a" / "rootfs.ext4").write_text("user data")
    with pytest.raises(ConflictError):
        store.create("a", record("a"))
    assert (tmp_path / "microvms" / "a" / "rootfs.ext4").read_text() == "user data"


def test_delete_removes_the_work_directory_and_a_half_done_delete_is_finished_at_load(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.create("a", record("a"))
    store.delete("a")
    store.delete("a")  # idempotent
    assert list((tmp_path / "microvms").iterdir()) == []
    # a delete killed after its rename: the trash goes at the next load, nothing is listed
    (tmp_path / "microvms" / ".trash-b-1-0").mkdir()
    (tmp_path / "microvms" / ".trash-b-1-0" / RECORD_NAME).write_text(json.dumps(record("b")))
    loaded = store_in(tmp_path).load_all()
    assert loaded.records == {} and loaded.damaged == {}
    assert list((tmp_path / "microvms").iterdir()) == []


@pytest.mark.parametrize("content", ["{not json", "[]", ""])
def test_damaged_index_is_set_aside_and_every_record_still_loads(tmp_path: Path, content: str) -> None:
    store = store_in(tmp_path)
    store.create("a", record("a"))
    (tmp_path / "state.json").write_text(content)
    loaded = store_in(tmp_path).load_all()
    assert loaded.records == {"a": record("a")} and loaded.next_index == 1
    assert (tmp_path / "state.json.damaged").read_text() == content
    assert not (tmp_path / "state.json").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "is missing"), ("{torn", "not valid JSON"), ("[1]", "not a JSON object"),
     (json.dumps(record("other")), "names microVM 'other'")],
)  # fmt: skip
def test_damaged_record_is_named_with_the_reason_and_its_files_kept(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    store = store_in(tmp_path)
    store.create("good", record("good"))
    store.create("bad", record("bad"))
    path = tmp_path / "microvms" / "bad" / RECORD_NAME
    (tmp_path / "microvms" / "bad" / "rootfs.ext4").write_text("user data")
    path.unlink()
    if content is not None:
        path.write_text(content)
    loaded = store_in(tmp_path).load_all()
    assert loaded.records == {"good": record("good")}
    assert list(loaded.damaged) == ["bad"] and reason in loaded.damaged["bad"]
    assert (tmp_path / "microvms" / "bad" / "rootfs.ext4").read_text() == "user data"


def test_version_1_state_moves_into_the_work_directories(tmp_path: Path) -> None:
    old = {"version": 1, "next_index": 7, "microvms": {"a": record("a", pid=5), "gone": record("gone"), "junk": [1]}}
    (tmp_path / "microvms" / "a").mkdir(parents=True)
    (tmp_path / "microvms" / "a" / "rootfs.ext4").write_text("disk")
    (tmp_path / "state.json").write_text(json.dumps(old))
    loaded = store_in(tmp_path).load_all()
    assert loaded.records == {"a": record("a", pid=5), "gone": record("gone")}
    assert loaded.next_index == 7 and loaded.damaged == {}
    assert (tmp_path / "microvms" / "a" / "rootfs.ext4").read_text() == "disk"
    assert json.loads((tmp_path / "state.json.v1").read_text()) == old
    assert json.loads((tmp_path / "state.json").read_text()) == {"version": 2, "next_index": 7}
    again = store_in(tmp_path).load_all()  # and once moved, it stays moved
    assert again.records == loaded.records and again.next_index == 7
