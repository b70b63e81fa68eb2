"""The agent's own OpenAPI 3.1 document (``GET /openapi.json``).

It lists exactly the routes :mod:`fc_macos.agent.app` serves (a test checks
both directions) and describes bodies with JSON Schema, generated from the
limits in :mod:`fc_macos.agent.wire` so the two cannot drift. The agent
checks every request against this document (:mod:`fc_macos.agent.contract`,
which also adds the 400/401/413/500 every operation may answer); a new route
declares its parameters, body and statuses here (see that module's docstring).
"""

from __future__ import annotations

import copy
from typing import Any

from fc_macos import __version__
from fc_macos.agent import host_stats
from fc_macos.agent.wire import (
    BOOT_FIELDS, DEFAULT_BOOT_ARGS, DRIVE_ID_PATTERN, MAX_MEMORY_MIB, MAX_STOP_TIMEOUT_S, MAX_TAIL_LINES, MAX_VCPUS,
    NAME_PATTERN, STATES, MicroVMSpec,
)  # fmt: skip

#: Methods the raw relay accepts (documented one by one).
RELAY_METHODS = ("get", "put", "patch", "post", "delete")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the microVM's name",
    "schema": {"type": "string", "pattern": NAME_PATTERN.pattern,
               "description": "1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"},
}

def _restore_rule() -> dict[str, Any]:
    """A snapshot brings its own machine: the boot fields (and network, vsock,
    start) keep their defaults (:meth:`MicroVMSpec._check_restore`)."""
    defaults = MicroVMSpec().to_dict()
    kept = {f: {"const": defaults[f], "description": f"with a snapshot, {f} comes from it: leave {f} out"}
            for f in (*BOOT_FIELDS, "network", "vsock", "start")}  # fmt: skip
    return {"if": {"required": ["snapshot"], "properties": {"snapshot": {"type": "object"}}}, "then": {"properties": kept}}


#: wait: guest_agent reaches the guest agent over vsock.
WAIT_RULE = {
    "if": {"required": ["wait"], "properties": {"wait": {"const": "guest_agent"}}},
    "then": {"properties": {"vsock": {"const": True, "description": 'wait: "guest_agent" needs vsock (the default)'}}},
}

#: published ports are bridged through the guest agent, over vsock.
PORTS_RULE = {
    "if": {"required": ["ports"], "properties": {"ports": {"type": "array", "minItems": 1}}},
    "then": {"properties": {"vsock": {"const": True, "description": "published ports go through the guest agent over vsock: "
                                    "drop ports, or keep vsock (the default)"}}},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message", "hint"],
        "properties": {
            "error": {"type": "string", "description": "machine-readable code, e.g. not_found"},
            "message": {"type": "string", "description": "what went wrong"},
            "hint": _nullable("string") | {"description": "what to do next"},
            "step": {"type": "string", "description": "boot failures: the failing boot step"},
            "fault_message": {"type": "string", "description": "boot failures: Firecracker's own message"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version"],
        "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
    },
    "Info": {
        "type": "object",
        "required": ["version", "arch", "firecracker_bin", "firecracker_source", "state_dir", "image_dirs",
                     "snapshot_dir", "network", "images"],
        "properties": {
            "version": {"type": "string"},
            "arch": {"type": "string"},
            "firecracker_bin": {"type": "string", "description": "what new microVMs run"},
            "firecracker_source": {"enum": ["installed", "option"], "description": "installed: <state-dir>/bin/"
                                   "firecracker, put there by PUT /v1/firecracker (it wins over --firecracker-bin); "
                                   "option: fc-agent's --firecracker-bin"},
            "state_dir": {"type": "string"},
            "image_dirs": {"type": "array", "items": {"type": "string"}},
            "snapshot_dir": {"type": "string", "description": "relative snapshot paths resolve here"},
            "network": {
                "type": "object",
                "required": ["subnet", "tap_prefix", "nat", "hint"],
                "properties": {
                    "subnet": {"type": "string", "description": "microVM networks are /30s of this (one per microVM)"},
                    "tap_prefix": {"type": "string", "description": "TAP devices are named <tap_prefix><N>"},
                    "nat": {"enum": ["nft", "iptables", None],
                            "description": "the tool that masquerades guests out of the default route; null: no NAT"},
                    "hint": _nullable("string") | {"description": "why NAT is unavailable and what to do"},
                },
            },
            "images": {
                "type": "object",
                "required": ["kernel", "initrd", "rootfs"],
                "properties": {k: _nullable("string") for k in ("kernel", "initrd", "rootfs")},
            },
        },
    },
    "DriveSpec": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "path"],
        "properties": {
            "id": {"type": "string", "pattern": DRIVE_ID_PATTERN.pattern, "not": {"const": "rootfs"},
                   "description": "'rootfs' is the root drive's"},
            "path": {"type": "string", "minLength": 1},
            "read_only": {"type": "boolean", "default": False},
        },
    },
    "SnapshotSpec": {
        "type": "object",
        "additionalProperties": False,
        "required": ["snapshot_path", "mem_path"],
        "properties": {
            "snapshot_path": {"type": "string", "minLength": 1,
                              "description": "VM state file: a name in <state-dir>/snapshots, or an absolute path "
                              "inside it or an image dir"},
            "mem_path": {"type": "string", "minLength": 1, "description": "guest memory file, same rules"},
            "resume": {"type": "boolean", "default": True, "description": "false: the restored microVM stays paused"},
        },
    },
    "MicroVMSpec": {
        "type": "object",
        "additionalProperties": False,
        "allOf": [_restore_rule(), WAIT_RULE, PORTS_RULE],
        "properties": {
            "name": _nullable("string") | {"pattern": NAME_PATTERN.pattern},
            "vcpus": {"type": "integer", "minimum": 1, "maximum": MAX_VCPUS, "default": 1},
            "memory_mib": {"type": "integer", "minimum": 16, "maximum": MAX_MEMORY_MIB, "default": 256},
            "kernel": _nullable("string") | {"minLength": 1,
                                             "description": "bare name in an image dir, or absolute path inside one"},
            "initrd": _nullable("string") | {"minLength": 1},
            "rootfs": _nullable("string") | {"minLength": 1, "description": "copied into the microVM's work directory"},
            "boot_args": {"type": "string", "default": DEFAULT_BOOT_ARGS},
            "drives": {"type": "array", "items": _ref("DriveSpec")},
            "start": {"type": "boolean", "default": True,
                      "description": "false: configure but do not start (state created); start with a relayed "
                      "PUT /actions {\"action_type\": \"InstanceStart\"}"},
            "network": {"type": "boolean", "default": False,
                        "description": "an eth0 on its own TAP device and /30 (ip= on the kernel command line)"},
            "snapshot": {"oneOf": [{"type": "null"}, _ref("SnapshotSpec")],
                         "description": "restore this snapshot instead of booting; vcpus, memory_mib, kernel, "
                         "initrd, rootfs, boot_args and drives then come from it and must keep their defaults"},
        },
    },
    "MicroVMInfo": {
        "type": "object",
        "required": ["name", "state", "pid", "vcpus", "memory_mib", "spec", "created_at"],
        "properties": {
            "name": {"type": "string"},
            "state": {"enum": list(STATES)},
            "pid": _nullable("integer"),
            "vcpus": {"type": "integer"},
            "memory_mib": {"type": "integer"},
            "spec": _ref("MicroVMSpec"),
            "created_at": {"type": "number"},
            "started_at": _nullable("number"),
            "stopped_at": _nullable("number"),
            "uptime_s": _nullable("number"),
            "exit_status": _nullable("integer"),
            "cpu_percent": _nullable("number"),
            "memory_rss_mib": _nullable("number"),
            "socket_path": _nullable("string"),
            "error": _nullable("string"),
            "network": {"oneOf": [{"type": "null"}, _ref("MicroVMNetwork")]},
        },
    },
    "MicroVMNetwork": {
        "type": "object",
        "required": ["tap", "host_ip", "guest_ip", "mac", "netmask", "nat"],
        "properties": {
            "index": {"type": "integer", "description": "N: the microVM's /30 is 172.16.0.0/16's N-th"},
            "tap": {"type": "string", "description": "TAP device on the agent's machine"},
            "host_ip": {"type": "string", "description": "the TAP's address: the guest's gateway"},
            "guest_ip": {"type": "string"},
            "mac": {"type": "string"},
            "netmask": {"type": "string"},
            "nat": {"enum": ["nft", "iptables", None]},
            "uplink": _nullable("string") | {"description": "the interface guests are masqueraded out of"},
            "nat_hint": _nullable("string") | {"description": "why this guest has no NAT"},
        },
    },
    "MicroVMList": {
        "type": "object",
        "required": ["microvms"],
        "properties": {"microvms": {"type": "array", "items": _ref("MicroVMInfo")}},
    },
    "StopRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "force": {"type": "boolean", "default": False},
            "timeout_s": {"type": "number", "minimum": 0, "maximum": MAX_STOP_TIMEOUT_S, "default": 10},
        },
    },
}

AUTH_ERRORS = {"401": _error("missing or wrong token")}
VM_ERRORS = {**AUTH_ERRORS, "404": _error("no microVM of that name")}


def _relay_operation(method: str) -> dict[str, Any]:
    return {
        "operationId": f"relayFirecracker{method.capitalize()}",
        "summary": f"{method.upper()} relayed verbatim to the microVM's Firecracker API socket",
        "parameters": [
            NAME_PARAM,
            {"name": "path", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": r"^([A-Za-z0-9_.~-]+(/[A-Za-z0-9_.~-]+)*)?$"},
             "description": "the Firecracker API path, e.g. machine-config or drives/rootfs (empty: GET /)"},
        ],  # fmt: skip
        "responses": {
            "default": {"description": "Firecracker's own status and body, unchanged"},
            **VM_ERRORS,
            "409": _error("the microVM is not running"),
            "502": _error("the Firecracker API socket does not answer"),
        },
    }


PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "liveness (no token needed)",
            "security": [],
            "responses": {"200": _json(_ref("Health"), "the agent runs")},
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "this document",
            "responses": {"200": {"description": "OpenAPI 3.1 document"}, **AUTH_ERRORS},
        }
    },
    "/v1/info": {
        "get": {
            "operationId": "info",
            "summary": "the agent's version, architecture, Firecracker binary and images",
            "responses": {"200": _json(_ref("Info"), "agent facts"), **AUTH_ERRORS},
        }
    },
    "/v1/host": {"get": host_stats.OPENAPI_OPERATION},
    "/v1/microvms": {
        "get": {
            "operationId": "listMicroVMs",
            "responses": {"200": _json(_ref("MicroVMList"), "every microVM"), **AUTH_ERRORS},
        },
        "post": {
            "operationId": "createMicroVM",
            "summary": "create and boot a microVM (answers once it runs), create it without starting it "
            "(start: false), or restore it from a snapshot",
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("MicroVMSpec")}}},
            "responses": {
                "201": _json(_ref("MicroVMInfo"), "the microVM: running, created (start: false), or paused "
                             "(snapshot.resume: false)"),
                "400": _error("invalid spec, malformed JSON, or a path outside the image (or snapshot) directories"),
                **AUTH_ERRORS,
                "404": _error("a kernel, initrd, rootfs, drive or snapshot file does not exist"),
                "409": _error("a microVM of that name exists"),
                "413": _error("request body too large"),
                "422": _error("a boot step failed (error boot_failed, with step)"),
                "507": _error("not enough disk space for the microVM (error no_space: free and needed in the message)"),
            },
        },
    },
    "/v1/microvms/{name}": {
        "get": {
            "operationId": "getMicroVM",
            "parameters": [NAME_PARAM],
            "responses": {"200": _json(_ref("MicroVMInfo"), "state, pid, spec, uptime, CPU and memory use"),
                          **VM_ERRORS},
        },  # fmt: skip
        "delete": {
            "operationId": "deleteMicroVM",
            "summary": "delete a microVM and its files",
            "parameters": [
                NAME_PARAM,
                {"name": "force", "in": "query", "schema": {"type": "boolean", "default": False},
                 "description": "stop a running microVM first"},
            ],  # fmt: skip
            "responses": {
                "204": {"description": "deleted"},
                **VM_ERRORS,
                "409": _error("the microVM runs and force is not set"),
            },
        },
    },
    "/v1/microvms/{name}/stop": {
        "post": {
            "operationId": "stopMicroVM",
            "summary": "stop gracefully (Ctrl+Alt+Del on x86_64, SIGTERM on aarch64), SIGKILL after timeout_s",
            "parameters": [NAME_PARAM],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("StopRequest")}}},
            "responses": {
                "200": _json(_ref("MicroVMInfo"), "the stopped microVM"),
                "400": _error("invalid stop request"),
                **VM_ERRORS,
                "409": _error("the microVM is still booting"),
            },
        }
    },
    "/v1/microvms/{name}/console": {
        "get": {
            "operationId": "attachConsole",
            "summary": "WebSocket: binary frames carry console bytes both ways; text frames are JSON control "
            'messages such as {"type": "resize", "rows": R, "cols": C}',
            "parameters": [
                NAME_PARAM,
                {"name": "scrollback", "in": "query", "schema": {"type": "integer", "enum": [0, 1], "default": 1},
                 "description": "0 skips the replay of recent output"},
            ],  # fmt: skip
            "responses": {
                "101": {"description": "switching to the WebSocket protocol"},
                **VM_ERRORS,
                "409": _error("the microVM is not running"),
            },
        }
    },
    "/v1/microvms/{name}/logs": {
        "get": {
            "operationId": "microVMLogs",
            "parameters": [
                NAME_PARAM,
                {"name": "source", "in": "query", "schema": {"enum": ["serial", "firecracker", "metrics"], "default": "serial"}},
                {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TAIL_LINES}},
                {"name": "follow", "in": "query", "schema": {"type": "integer", "enum": [0, 1], "default": 0},
                 "description": "keep streaming until the microVM stops"},
            ],  # fmt: skip
            "responses": {
                "200": {"description": "log text", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "400": _error("invalid query"),
                **VM_ERRORS,
            },
        }
    },
    "/v1/microvms/{name}/firecracker/{path}": {m: _relay_operation(m) for m in RELAY_METHODS},
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy each call), with the guest channel's
    part (:mod:`fc_macos.agent.openapi_guest`), the image directory's
    (:mod:`fc_macos.agent.openapi_images`), the lifecycle's
    (:mod:`fc_macos.agent.openapi_lifecycle`) and the Firecracker binary's
    (:mod:`fc_macos.agent.openapi_firecracker`) merged in, and the answers every
    operation may give (400, 401, 413, 500: :func:`contract.complete_responses`)."""
    from fc_macos.agent import contract, openapi_firecracker, openapi_guest, openapi_images, openapi_lifecycle

    return contract.complete_responses(openapi_firecracker.merge(openapi_lifecycle.merge(openapi_images.merge(
        openapi_guest.merge({
        "openapi": "3.1.0",
        "info": {
            "title": "fc-agent",
            "version": __version__,
            "description": "Runs Firecracker microVMs inside the Linux VM; see docs/design.md.",
        },
        "security": [{"bearer": []}],
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })))))
