"""The packaged Firecracker spec and validation against it."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from fc_macos.errors import ValidationError
from fc_macos.firecracker import SPEC, SPEC_VERSION, FirecrackerClient, match_operation, operations, validate_body
from fc_macos.firecracker.spec import OPEN_DEFINITIONS, definitions, swagger_to_draft4, validator

REPO = Path(__file__).resolve().parents[2]
YAML_PATH = Path(os.environ.get("FC_MACOS_FIRECRACKER_YAML", str(Path(__file__).resolve().parents[2] / "third_party" / "firecracker" / "firecracker-api.yaml")))
needs_yaml = pytest.mark.skipif(
    not YAML_PATH.is_file(),
    reason=f"Firecracker's YAML spec is not at {YAML_PATH}; set FC_MACOS_FIRECRACKER_YAML to its path to run this",
)


@pytest.fixture(scope="module")
def yaml_spec() -> dict[str, Any]:
    return yaml.safe_load(YAML_PATH.read_text(encoding="utf-8"))


def _packaged_text() -> str:
    return resources.files("fc_macos.firecracker").joinpath("firecracker-api.json").read_text(encoding="utf-8")


@needs_yaml
def test_packaged_json_holds_the_same_data_as_the_yaml(yaml_spec: dict[str, Any]) -> None:
    # JSON keys are strings; the YAML's response codes (200:) are ints, so compare as JSON data.
    assert json.loads(_packaged_text()) == json.loads(json.dumps(yaml_spec))
    assert SPEC == json.loads(json.dumps(yaml_spec))


@needs_yaml
def test_packaged_json_is_exactly_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("gen_firecracker_spec", REPO / "scripts" / "gen_firecracker_spec.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.convert(YAML_PATH.read_text(encoding="utf-8")) == _packaged_text()


@needs_yaml
def test_every_yaml_endpoint_has_a_client_method(yaml_spec: dict[str, Any]) -> None:
    implemented = FirecrackerClient.operation_methods()
    seen = []
    for path, item in yaml_spec["paths"].items():
        for method, op in item.items():
            assert op["operationId"] in implemented, f"no client method for {method.upper()} {path}"
            fn = getattr(FirecrackerClient, implemented[op["operationId"]])
            assert inspect.iscoroutinefunction(fn)
            seen.append((method.upper(), path))
    assert sorted(seen) == sorted((op.method, op.path) for op in operations())


def test_spec_version() -> None:
    assert SPEC_VERSION == "1.16.1" == SPEC["info"]["version"]


def test_operations_lists_method_path_id_and_body() -> None:
    ops = operations()
    assert len(ops) == 38
    assert ("GET", "/", "describeInstance", None) in ops
    assert ("PUT", "/drives/{drive_id}", "putGuestDriveByID", "Drive") in ops
    assert ("PATCH", "/balloon/hinting/stop", "stopBalloonHinting", None) in ops
    method, path, op_id, body = ops[0]  # plain 4-tuples
    assert (method, path, op_id, body) == ("GET", "/", "describeInstance", None)


@pytest.mark.parametrize(
    ("method", "path", "template", "params"),
    [
        ("put", "/drives/rootfs", "/drives/{drive_id}", {"drive_id": "rootfs"}),
        ("PATCH", "/network-interfaces/eth0?x=1", "/network-interfaces/{iface_id}", {"iface_id": "eth0"}),
        ("GET", "/", "/", {}),
        ("GET", "", "/", {}),
        ("GET", "version", "/version", {}),
        ("PATCH", "/balloon/hinting/start", "/balloon/hinting/start", {}),
        ("PUT", "/pmem/p_1", "/pmem/{id}", {"id": "p_1"}),
    ],
)
def test_match_operation_maps_concrete_paths(method: str, path: str, template: str, params: dict[str, str]) -> None:
    found = match_operation(method, path)
    assert found is not None
    assert found.operation.path == template and found.params == params


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/drives/x"), ("GET", "/drives/x"), ("PUT", "/drives/a/b"), ("GET", "/nope")])
def test_match_operation_returns_none_for_unknown(method: str, path: str) -> None:
    assert match_operation(method, path) is None


def test_all_definitions_compile_and_carry_no_swagger_only_keys() -> None:
    text = json.dumps(definitions())
    assert '"readOnly"' not in text and '"example"' not in text
    for name in definitions():
        validator(name)


def test_vendor_extensions_are_ignored_but_properties_named_like_them_are_kept() -> None:
    schema = {
        "type": "object",
        "x-rust-type": "Foo",
        "properties": {"x-field": {"type": "string", "x-note": "n", "example": "e"}},
        "required": ["x-field"],
    }
    assert swagger_to_draft4(schema, "Foo") == {
        "type": "object",
        "properties": {"x-field": {"type": "string"}},
        "required": ["x-field"],
        "additionalProperties": False,
    }


GOOD = [
    ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 1024}),
    ("PATCH", "/machine-config", {"vcpu_count": 4}),  # Firecracker takes a partial update here
    ("PUT", "/boot-source", {"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"}),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": "r.ext4", "is_root_device": True, "is_read_only": False}),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02"}),
    ("PUT", "/actions", {"action_type": "InstanceStart"}),
    ("PATCH", "/vm", {"state": "Paused"}),
    ("PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": "vm.state", "mem_file_path": "vm.mem"}),
    ("PUT", "/snapshot/load", {"snapshot_path": "vm.state", "mem_backend": {"backend_type": "File", "backend_path": "vm.mem"},
                               "track_dirty_pages": False, "resume_vm": True}),
    ("PUT", "/vsock", {"guest_cid": 3, "uds_path": "./v.sock"}),
    ("PUT", "/mmds", {"anything": [1, {"goes": None}]}),
    ("PUT", "/mmds/config", {"network_interfaces": ["eth0"], "version": "V2", "ipv4_address": "169.254.169.254"}),
    ("PUT", "/logger", {}),
    ("PUT", "/logger", {"level": "debug", "log_path": "/l"}),  # "The possible values are case-insensitive."
    ("PUT", "/metrics", {"metrics_path": "/m", "emit_id": "x"}),  # MetricsConfig does not deny unknown fields
    ("PATCH", "/balloon/hinting/start", None),  # the body parameter is required: false
    ("PATCH", "/balloon/hinting/stop", None),
    ("GET", "/machine-config", None),
    # TokenBucket is not closed in Firecracker (TokenBucketConfig has no deny_unknown_fields).
    ("PUT", "/serial", {"rate_limiter": {"size": 1, "refill_time": 1, "later_field": 0}}),
]


@pytest.mark.parametrize(("method", "path", "body"), GOOD)
def test_valid_bodies_pass_unchanged(method: str, path: str, body: Any) -> None:
    before = json.dumps(body)
    found = validate_body(method, path, body)
    assert found.operation.method == method.upper()
    assert json.dumps(body) == before  # no defaults filled in


BAD = [
    # (method, path, body, words the message must contain, words the hint must contain)
    ("PUT", "/machine-config", {"vcpu_count": 33, "mem_size_mib": 128}, ["vcpu_count", "32", "33"], ["Number of vCPUs"]),
    ("PUT", "/machine-config", {"vcpu_count": 2}, ["missing", "mem_size_mib"], ["Memory size of VM"]),
    ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 128, "vcpus": 2}, ["unknown", "vcpus"], ["vcpu_count"]),
    ("PATCH", "/machine-config", {"memory": 1}, ["unknown", "memory"], ["mem_size_mib"]),
    ("PUT", "/boot-source", {"kernel_image_path": 7}, ["kernel_image_path", "a string"], ["kernel image"]),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "is_root_device": "yes"}, ["is_root_device", "true or false"], []),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "is_root_device": True, "io_engine": "Uring"}, ["io_engine", "Sync", "Async"], ["IO engine"]),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "is_root_device": True, "rate_limiter": {"ops": {"size": 1}}},
     ["rate_limiter.ops.refill_time"], ["milliseconds"]),
    ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "is_root_device": True, "rate_limiter": {"iops": {}}},
     ["rate_limiter.iops"], ["bandwidth", "ops"]),
    ("PUT", "/drives/rootfs", {"drive_id": "data", "is_root_device": False}, ["drive_id", "data", "rootfs"], ["same"]),
    ("PUT", "/drives/root-fs", {"drive_id": "root-fs", "is_root_device": True}, ["drive_id", "root-fs"], ["'_'"]),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 10}, ["mtu", "68"], ["MTU"]),
    ("PUT", "/mmds/config", {"network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"}, ["ipv4_address", "10.0.0.1"], ["link-local"]),
    ("PUT", "/actions", {"action_type": "Reboot"}, ["action_type", "InstanceStart"], []),
    ("PUT", "/actions", None, ["needs a JSON body", "InstanceActionInfo"], []),
    ("PUT", "/machine-config", None, ["needs a JSON body"], []),  # the spec omits required: true; Firecracker still needs one
    ("GET", "/", {}, ["takes no body"], []),
    ("DELETE", "/drives/rootfs", None, ["no operation", "DELETE"], ["/drives/{drive_id}"]),
    ("PUT", "/snapshot/load", {"snapshot_path": "s", "mem_file_path": "m", "mem_backend": {"backend_type": "File", "backend_path": "m"}},
     ["exactly one", "mem_backend"], []),
    ("PUT", "/snapshot/load", {"snapshot_path": "s", "mem_backend": {"backend_type": "File", "backend_path": "m"},
                               "network_overrides": [{"iface_id": "eth0"}]}, ["network_overrides[0].host_dev_name"], []),
    ("PUT", "/vsock", {"guest_cid": 3}, ["uds_path"], ["UNIX domain socket"]),
    ("PUT", "/mmds", [1, 2], ["a JSON object"], []),
    ("PUT", "/logger", {"level": "verbose"}, ["level", "Warning", "any case", "verbose"], ["case-insensitive"]),
    ("PUT", "/logger", {"log_path": "/l", "colour": True}, ["unknown", "colour"], ["show_level"]),
]


@pytest.mark.parametrize(("method", "path", "body", "in_message", "in_hint"), BAD)
def test_invalid_bodies_name_the_field_and_the_rule(
    method: str, path: str, body: Any, in_message: list[str], in_hint: list[str]
) -> None:
    with pytest.raises(ValidationError) as info:
        validate_body(method, path, body)
    err = info.value
    for word in in_message:
        assert word in err.message
    for word in in_hint:
        assert word in (err.hint or "")
    assert err.hint


def test_unknown_fields_get_their_own_code() -> None:
    with pytest.raises(ValidationError) as info:
        validate_body("PUT", "/boot-source", {"kernel_image_path": "/k", "initrd": "/i"})
    assert info.value.code == "unknown_field"


def test_closed_and_open_definitions() -> None:
    defs = definitions()
    assert defs["Drive"]["additionalProperties"] is False
    assert defs["MmdsContentsObject"]["additionalProperties"] is True  # the spec's own choice
    for name in OPEN_DEFINITIONS:
        assert "additionalProperties" not in defs[name]
