"""The lifecycle part of the agent's OpenAPI document: start and restart a
microVM, and the agent's snapshots (:mod:`fc_macos.agent.lifecycle_routes`).
:func:`fc_macos.agent.openapi.document` merges it in."""

from __future__ import annotations

import copy
from typing import Any

from fc_macos.agent.openapi import NAME_PARAM, _error, _json, _nullable, _ref
from fc_macos.agent.wire import DEFAULT_WAIT_TIMEOUT_S, MAX_STOP_TIMEOUT_S, MAX_WAIT_TIMEOUT_S, WAIT_FOR

WAIT_PROPERTIES: dict[str, Any] = {
    "wait": {"oneOf": [{"type": "null"}, {"enum": list(WAIT_FOR)}], "default": "guest_agent",
             "description": "guest_agent (the default): answer once the guest agent is ready; null: once booted"},
    "wait_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_TIMEOUT_S,
                       "default": DEFAULT_WAIT_TIMEOUT_S},
}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "StartRequest": {"type": "object", "additionalProperties": False, "properties": WAIT_PROPERTIES},
    "RestartRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **WAIT_PROPERTIES,
            "force": {"type": "boolean", "default": False, "description": "kill at once instead of a graceful stop"},
            "timeout_s": {"type": "number", "minimum": 0, "maximum": MAX_STOP_TIMEOUT_S, "default": 10,
                          "description": "how long the graceful stop may take before the kill"},
        },
    },  # fmt: skip
    "Snapshot": {
        "type": "object",
        "required": ["snapshot_path", "mem_path", "microvm", "created_at", "disk", "snapshot_bytes", "mem_bytes"],
        "properties": {
            "snapshot_path": {"type": "string", "description": "the VM state file"},
            "mem_path": _nullable("string") | {"description": "the guest memory file; null for a file no record names"},
            "microvm": _nullable("string") | {"description": "the microVM that made it (null: unknown)"},
            "created_at": _nullable("number"),
            "disk": _nullable("string") | {"description": "the disk a restore boots on (the maker's rootfs copy)"},
            "disk_exists": {"type": "boolean"},
            "vsock": _nullable("boolean") | {"description": "whether the microVM that made it had a vsock device "
                                             "(null: unknown)"},
            "snapshot_bytes": _nullable("integer") | {"description": "null: the file is gone"},
            "mem_bytes": _nullable("integer"),
        },
    },
    "SnapshotList": {
        "type": "object",
        "required": ["directory", "snapshots"],
        "properties": {"directory": {"type": "string", "description": "where bare snapshot names live"},
                       "snapshots": {"type": "array", "items": _ref("Snapshot")}},
    },  # fmt: skip
    "SnapshotRemoved": {
        "type": "object",
        "required": ["removed"],
        "properties": {"removed": {"type": "array", "items": {"type": "string"}}},
    },
}

AUTH = {"401": _error("missing or wrong token")}
START_ERRORS = {
    "400": _error("invalid request body"),
    **AUTH,
    "404": _error("no microVM of that name (the hint suggests close names), or its kernel, initrd or a drive "
                  "file is gone (file_not_found)"),
    "413": _error("request body too large"),
    "422": _error("boot_failed: a boot step failed, or the guest died or panicked before its guest agent "
                  "answered (step wait_guest_agent; the microVM is then failed and the message keeps the "
                  "console's last lines)"),
    "504": _error("guest_agent_timeout: its guest agent was not ready within wait_timeout_s (it keeps running)"),
    "507": _error("no_space: the agent's disk is too full to record or boot it (free and needed in the message)"),
}  # fmt: skip

PATHS: dict[str, Any] = {
    "/v1/microvms/{name}/start": {
        "post": {
            "operationId": "startMicroVM",
            "summary": "boot a stopped (or failed) microVM again from its own disk with its recorded spec, "
            "network lease, vsock CID and published ports",
            "parameters": [NAME_PARAM],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("StartRequest")}}},
            "responses": {
                "200": _json(_ref("MicroVMInfo"), "the running microVM"),
                **START_ERRORS,
                "409": _error("running (it runs already: restart it, or stop it first), disk_missing (its rootfs "
                              "copy is gone), restored_microvm (a snapshot restore has no disk of its own), "
                              "unbootable_record (its recorded spec no longer validates), port_in_use"),
            },
        }
    },
    "/v1/microvms/{name}/restart": {
        "post": {
            "operationId": "restartMicroVM",
            "summary": "stop the microVM if it runs (gracefully, or at once with force), then start it again",
            "parameters": [NAME_PARAM],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("RestartRequest")}}},
            "responses": {
                "200": _json(_ref("MicroVMInfo"), "the running microVM"),
                **START_ERRORS,
                "409": _error("still booting, disk_missing, restored_microvm, unbootable_record or port_in_use"),
            },
        }
    },
    "/v1/snapshots": {
        "get": {
            "operationId": "listSnapshots",
            "summary": "the snapshots the agent's microVMs made (and the other files of its snapshot directory)",
            "responses": {"200": _json(_ref("SnapshotList"), "every snapshot"), **AUTH},
        },
        "delete": {
            "operationId": "deleteSnapshot",
            "summary": "remove a snapshot: its state file and its memory file",
            "parameters": [
                {"name": "path", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1},
                 "description": "the state file: a name in the snapshot directory or the path 'GET /v1/snapshots' lists"},
            ],  # fmt: skip
            "responses": {
                "200": _json(_ref("SnapshotRemoved"), "the files removed"),
                "400": _error("no path"),
                **AUTH,
                "404": _error("snapshot_not_found, or not_a_snapshot: a path outside the snapshot directory that no "
                              "record names (never removed)"),
            },
        },
    },
}

CREATE_ERRORS = {
    "409": _error("a microVM of that name exists, port_in_use, guest_agent_absent with wait (the microVM runs), "
                  "or disk_in_use: the snapshot's microVM (or another restore of it) runs on its disk"),
    "422": _error("a boot step failed (error boot_failed, with step; the message keeps the console's and VMM's "
                  "last lines), or with wait the guest died or panicked at boot (step wait_guest_agent)"),
}  # fmt: skip


SPEC_PROPERTIES: dict[str, Any] = {
    "balloon_mib": _nullable("integer") | {"minimum": 0, "description": "install a memory balloon of this target "
                                           "size (MiB, at most memory_mib) before the start; null: none"},
}  # fmt: skip


def merge(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the lifecycle's paths, schemas and spec fields to ``doc`` (in place; returned)."""
    doc["components"]["schemas"].update(copy.deepcopy(SCHEMAS))
    doc["components"]["schemas"]["MicroVMSpec"]["properties"].update(copy.deepcopy(SPEC_PROPERTIES))
    doc["paths"].update(copy.deepcopy(PATHS))
    doc["paths"]["/v1/microvms"]["post"]["responses"].update(copy.deepcopy(CREATE_ERRORS))
    return doc


__all__ = ["PATHS", "SCHEMAS", "merge"]
