"""The agent's wire types: what a spec accepts and what it refuses."""

from __future__ import annotations

import pytest

from fc_macos.agent.wire import DEFAULT_BOOT_ARGS, MicroVMInfo, MicroVMSpec, SnapshotSpec, validate_name
from fc_macos.errors import ValidationError


def test_defaults_fill_in() -> None:
    spec = MicroVMSpec.from_dict({})
    assert spec.name is None
    assert (spec.vcpus, spec.memory_mib, spec.boot_args, spec.drives) == (1, 256, DEFAULT_BOOT_ARGS, ())


def test_round_trip_keeps_every_field() -> None:
    data = {
        "name": "web-1",
        "vcpus": 2,
        "memory_mib": 512,
        "kernel": "vmlinux",
        "initrd": "initrd.img",
        "rootfs": "rootfs.ext4",
        "boot_args": "console=ttyS0",
        "drives": [{"id": "data_1", "path": "data.ext4", "read_only": True}],
        "start": False,
        "snapshot": None,
        "network": True,
        "vsock": True,
        "ports": [{"host_port": 8080, "guest_port": 80, "host_addr": "127.0.0.1"}],
        "wait": None,
        "wait_timeout_s": 30.0,
        "balloon_mib": 64,
    }
    assert MicroVMSpec.from_dict(data).to_dict() == data
    no_vsock = {**data, "vsock": False, "ports": []}  # ports need the vsock device
    assert MicroVMSpec.from_dict(no_vsock).to_dict() == no_vsock


def test_a_balloon_is_at_most_the_memory_and_not_for_snapshots() -> None:
    assert MicroVMSpec.from_dict({}).balloon_mib is None
    assert MicroVMSpec.from_dict({"memory_mib": 128, "balloon_mib": 128}).balloon_mib == 128
    with pytest.raises(ValidationError, match=r"balloon_mib \(300\) is larger than its memory_mib \(256\)"):
        MicroVMSpec.from_dict({"balloon_mib": 300})
    with pytest.raises(ValidationError, match="balloon_mib must be an integer"):
        MicroVMSpec.from_dict({"balloon_mib": "64"})
    with pytest.raises(ValidationError, match="balloon_mib cannot be set with a snapshot"):
        MicroVMSpec.from_dict({"balloon_mib": 8, "snapshot": {"snapshot_path": "s", "mem_path": "m"}})


def test_network_is_a_boolean_and_not_for_snapshots() -> None:
    assert MicroVMSpec.from_dict({}).network is False
    with pytest.raises(ValidationError, match="network must be true or false"):
        MicroVMSpec.from_dict({"network": "yes"})
    with pytest.raises(ValidationError, match="network cannot be set with a snapshot"):
        MicroVMSpec.from_dict({"network": True, "snapshot": {"snapshot_path": "a", "mem_path": "b"}})


def test_snapshot_spec_round_trip_and_default_resume() -> None:
    spec = MicroVMSpec.from_dict({"name": "restored", "snapshot": {"snapshot_path": "web.snap", "mem_path": "web.mem"}})
    assert spec.snapshot == SnapshotSpec("web.snap", "web.mem", resume=True)
    # the client sends to_dict(): defaults of the boot fields do not count as "given"
    assert MicroVMSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("name", ["a", "web-1", "x" * 63, "0abc"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "Web", "a_b", "x" * 64, "a.b", 7])
def test_invalid_names_are_refused_with_a_hint(name: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_name(name)  # type: ignore[arg-type]
    assert info.value.hint and "lower-case" in info.value.hint


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"vcpus": 0}, "between 1 and 32"),
        ({"vcpus": 33}, "between 1 and 32"),
        ({"vcpus": True}, "integer"),
        ({"memory_mib": -5}, "between 16"),
        ({"memory_mib": 10**9}, "between 16"),
        ({"memory_mib": "512"}, "integer"),
        ({"kernel": ""}, "non-empty string"),
        ({"boot_args": 5}, "string"),
        ({"drives": {}}, "list"),
        ({"drives": [{"id": "a-b", "path": "x"}]}, "invalid drive id"),
        ({"drives": [{"id": "rootfs", "path": "x"}]}, "reserved"),
        ({"drives": [{"id": "a", "path": "x"}, {"id": "a", "path": "y"}]}, "unique"),
        ({"drives": [{"id": "a", "path": "x", "ro": True}]}, "unknown field"),
        ({"cpus": 2}, "unknown field"),
        ({"start": "no"}, "true or false"),
        ({"snapshot": "x.snap"}, "JSON object"),
        ({"snapshot": {"snapshot_path": "a"}}, "mem_path"),
        ({"snapshot": {"snapshot_path": "a", "mem_path": "b", "resume": 1}}, "true or false"),
        ({"snapshot": {"snapshot_path": "a", "mem_path": "b", "mem_file_path": "c"}}, "unknown field"),
        ({"snapshot": {"snapshot_path": "a", "mem_path": "b"}, "kernel": "vmlinux"}, "come from the snapshot"),
        ({"snapshot": {"snapshot_path": "a", "mem_path": "b"}, "vcpus": 2, "drives": [{"id": "d", "path": "x"}]},
         "vcpus, drives cannot be set"),
        ({"snapshot": {"snapshot_path": "a", "mem_path": "b"}, "start": False}, "start=false does not apply"),
        ([], "JSON object"),
    ],
)
def test_bad_specs_are_refused(body: object, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        MicroVMSpec.from_dict(body)
    assert words in info.value.message


def test_unknown_field_error_lists_the_allowed_ones() -> None:
    with pytest.raises(ValidationError) as info:
        MicroVMSpec.from_dict({"memory": 5})
    assert info.value.code == "unknown_field"
    assert info.value.hint is not None and "memory_mib" in info.value.hint


def test_info_ignores_fields_from_a_newer_agent() -> None:
    info = MicroVMInfo.from_dict(
        {"name": "a", "state": "running", "pid": 7, "vcpus": 1, "memory_mib": 128, "spec": {}, "created_at": 1.0, "new": 1}
    )
    assert info.pid == 7 and info.to_dict()["state"] == "running"


def test_request_body_carries_only_what_differs_from_the_defaults() -> None:
    assert MicroVMSpec().to_request() == {}
    spec = MicroVMSpec.from_dict({"name": "a", "vcpus": 2, "drives": [{"id": "d", "path": "x"}]})
    body = spec.to_request()
    assert body == {"name": "a", "vcpus": 2, "drives": [{"id": "d", "path": "x", "read_only": False}]}
    assert MicroVMSpec.from_dict(body) == spec
