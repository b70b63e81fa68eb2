"""The guest channel's part of the agent's OpenAPI document: exec, files,
tunnel and published ports (:mod:`fc_macos.agent.guest_routes`), and the spec
and info fields they add. :func:`fc_macos.agent.openapi.document` merges it in."""

from __future__ import annotations

import copy
from typing import Any

from fc_macos.agent.openapi import NAME_PARAM, _error, _json, _nullable, _ref
from fc_macos.agent.wire import DEFAULT_WAIT_TIMEOUT_S, GUEST_AGENT_STATES, MAX_WAIT_TIMEOUT_S, WAIT_FOR


#: An IPv4 or IPv6 address (what :func:`fc_macos.agent.wire.parse_host_addr` takes).
IP_ADDRESS: dict[str, Any] = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}

PATH_PARAM = {"name": "path", "in": "query", "required": True, "description": "an absolute path inside the guest",
              "schema": {"type": "string", "pattern": "^/"}}  # fmt: skip

#: Answers every guest operation may give before it starts.
GUEST_ERRORS = {
    "401": _error("missing or wrong token"),
    "404": _error("no microVM of that name"),
    "409": _error("not_running (stopped, created, paused), guest_agent_absent (why), guest_agent_starting "
                  "(still booting) or guest_agent_unresponsive (crashed or hung)"),
    "502": _error("the guest agent broke the connection or answered out of protocol"),
}  # fmt: skip

SPEC_PROPERTIES: dict[str, Any] = {
    "vsock": {"type": "boolean", "default": True,
              "description": "a vsock device (CID unique on the agent, <workdir>/vsock.sock) and the guest agent "
              "written into the rootfs copy; leave unset with a snapshot (it brings its own devices)"},
    "ports": {"type": "array", "items": _ref("PortSpec"), "description": "ports the agent publishes while it runs"},
    "wait": {"oneOf": [{"type": "null"}, {"enum": list(WAIT_FOR)}],
             "description": "guest_agent: answer only once the guest agent is ready (504 guest_agent_timeout "
             "after wait_timeout_s; the microVM keeps running)"},
    "wait_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_TIMEOUT_S,
                       "default": DEFAULT_WAIT_TIMEOUT_S},
}  # fmt: skip

INFO_PROPERTIES: dict[str, Any] = {
    "vsock": {"oneOf": [{"type": "null"}, _ref("VsockDevice")]},
    "guest_agent": {"oneOf": [{"type": "null"}, _ref("GuestAgentState")],
                    "description": "null while the microVM does not run"},
    "ports": {"type": "array", "items": _ref("PortSpec"), "description": "ports published now"},
}  # fmt: skip

EXEC_ANSWER = {
    "exit_code": _nullable("integer") | {"description": "128+N for signal N; 127: command not found"},
    "signal": _nullable("integer"),
    "timed_out": {"type": "boolean"},
}

SCHEMAS: dict[str, Any] = {
    "PortSpec": {
        "type": "object",
        "additionalProperties": False,
        "required": ["host_port", "guest_port"],
        "properties": {
            "host_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "guest_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "host_addr": IP_ADDRESS | {"default": "0.0.0.0", "description": "an address of the agent's machine"},
        },
    },
    "PortList": {"type": "object", "required": ["ports"], "properties": {"ports": {"type": "array", "items": _ref("PortSpec")}}},
    "VsockDevice": {
        "type": "object",
        "required": ["guest_cid", "uds_path"],
        "properties": {"guest_cid": {"type": "integer", "minimum": 3}, "uds_path": {"type": "string"}},
    },
    "GuestAgentState": {
        "type": "object",
        "required": ["state", "version", "ready_s", "reason"],
        "properties": {
            "state": {"enum": list(GUEST_AGENT_STATES)},
            "version": _nullable("string"),
            "ready_s": _nullable("number") | {"description": "seconds from InstanceStart to ready"},
            "reason": _nullable("string") | {"description": "why absent, starting or unresponsive"},
            "guest": {
                "type": ["object", "null"],
                "description": "what the guest agent's last info said of its guest, while it is ready (else null)",
                "properties": {
                    "hostname": _nullable("string"),
                    "kernel": _nullable("string") | {"description": "uname release"},
                    "arch": _nullable("string"),
                    "uptime_s": _nullable("number") | {"description": "seconds since the guest booted"},
                    "addresses": {"type": "array", "items": {"type": "object", "properties": {
                        "ifname": {"type": "string"}, "family": {"enum": ["inet", "inet6"]},
                        "address": {"type": "string"}, "prefixlen": {"type": "integer"}}}},
                },
            },
        },
    },
    "ExecRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["argv"],
        "properties": {
            "argv": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "cwd": _nullable("string"),
            "stdin": _nullable("string") | {"description": "text fed to the command's stdin (then EOF)"},
            "stdin_b64": _nullable("string") | {"description": "bytes for stdin, base64"},
            "timeout_s": {"type": "number", "minimum": 0, "description": "0: none; else the command is killed"},
            "encoding": {"enum": ["utf-8", "base64"], "default": "utf-8", "description": "of stdout/stderr"},
        },
    },
    "ExecResult": {
        "type": "object",
        "required": ["exit_code", "signal", "timed_out", "stdout", "stderr"],
        "properties": {**EXEC_ANSWER, "stdout": {"type": "string"}, "stderr": {"type": "string"}},
    },
    "GuestStat": {
        "type": "object",
        "required": ["type", "mode", "size", "mtime"],
        "properties": {
            "type": {"enum": ["file", "dir", "symlink", "other"]},
            "mode": {"type": "integer"},
            "size": {"type": "integer"},
            "mtime": {"type": "number"},
            "target": _nullable("string"),
        },
    },
    "PutResult": {
        "type": "object",
        "required": ["entries", "bytes"],
        "properties": {"entries": {"type": "integer"}, "bytes": {"type": "integer"}},
    },
}

PATHS: dict[str, Any] = {
    "/v1/microvms/{name}/exec": {
        "post": {
            "operationId": "execOnce",
            "summary": "run a command in the guest to its end: exit code, stdout and stderr (16 MiB each at most)",
            "parameters": [NAME_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ExecRequest")}}},
            "responses": {
                "200": _json(_ref("ExecResult"), "the command ended (127: not found, its message on stderr)"),
                "400": _error("invalid request"),
                **GUEST_ERRORS,
                "413": _error("output_too_large: more than 16 MiB on a stream (the command was killed), or too_large: "
                              "the request body is too large"),
            },
        },
        "get": {
            "operationId": "execStream",
            "summary": "WebSocket exec. First client text message: {argv, env, cwd, tty, rows, cols, stdin: bool, "
            'timeout_s}; answer {"type": "started", "pid"} or {"type": "error", error, message, hint[, exit_code]}. '
            "Binary frames: first byte the stream (0 stdin, 1 stdout, 2 stderr), then data; just the byte = EOF. "
            'Client text: {"type": "resize", rows, cols}, {"type": "signal", signal}. Last: {"type": "exit", '
            "exit_code, signal, timed_out}.",
            "parameters": [NAME_PARAM],
            "responses": {"101": {"description": "switching to the WebSocket protocol"}, **GUEST_ERRORS},
        },
    },
    "/v1/microvms/{name}/files": {
        "get": {
            "operationId": "getFiles",
            "summary": "a file or directory tree of the guest as a tar stream (its basename on top); every file's "
            "checksum (CRC-32) is checked against the guest's, and a stream that fails midway is cut off, never ended",
            "parameters": [NAME_PARAM, PATH_PARAM],
            "responses": {
                "200": {"description": "tar stream; headers Fc-Guest-Type (file, dir, symlink) and Fc-Guest-Size",
                        "content": {"application/x-tar": {}}},
                "400": _error("path is not absolute"),
                **GUEST_ERRORS,
                "404": _error("no microVM of that name, or guest_path_not_found"),
            },  # fmt: skip
        },
        "put": {
            "operationId": "putFiles",
            "summary": "unpack a tar stream into the guest directory path (files, directories, symlinks, with "
            "modes and mtimes; directories a member needs that the tar does not list are made, mode 0755, as tar "
            "does); a body cut off midway leaves nothing at the destination",
            "parameters": [NAME_PARAM, PATH_PARAM],
            "requestBody": {"required": True, "content": {"application/x-tar": {}}},
            "responses": {
                "200": _json(_ref("PutResult"), "written"),
                "400": _error("path is not absolute, bad_tar (a hard link, device, absolute or '..' member), "
                              "body_incomplete"),
                **GUEST_ERRORS,
                "403": _error("guest_permission_denied"),
                "404": _error("no microVM of that name, or guest_path_not_found (the directory)"),
            },  # fmt: skip
        },
    },
    "/v1/microvms/{name}/files/stat": {
        "get": {
            "operationId": "statFile",
            "summary": "lstat of a guest path",
            "parameters": [NAME_PARAM, PATH_PARAM],
            "responses": {
                "200": _json(_ref("GuestStat"), "the path's type, mode, size, mtime and symlink target"),
                "400": _error("path is not absolute"),
                **GUEST_ERRORS,
                "404": _error("no microVM of that name, or guest_path_not_found"),
            },
        }
    },
    "/v1/microvms/{name}/tunnel": {
        "get": {
            "operationId": "tunnel",
            "summary": "WebSocket whose binary frames are a TCP stream to host:port inside the guest",
            "parameters": [
                NAME_PARAM,
                {"name": "port", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 65535}},
                {"name": "host", "in": "query", "schema": {"type": "string", "default": "127.0.0.1"}},
            ],  # fmt: skip
            "responses": {
                "101": {"description": "switching to the WebSocket protocol"},
                "400": _error("invalid port"),
                **GUEST_ERRORS,
                "409": _error("guest_port_closed (nothing listens there), or the guest agent is not ready"),
            },
        }
    },
    "/v1/microvms/{name}/ports": {
        "get": {
            "operationId": "listPorts",
            "parameters": [NAME_PARAM],
            "responses": {"200": _json(_ref("PortList"), "the ports published now"), **GUEST_ERRORS},
        },
        "post": {
            "operationId": "addPort",
            "summary": "publish a port: the agent listens on host_addr:host_port and bridges each connection "
            "to guest_port inside the guest",
            "parameters": [NAME_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PortSpec")}}},
            "responses": {
                "201": _json(_ref("PortList"), "the ports published now"),
                "400": _error("invalid port, or an address not of the agent's machine"),
                **GUEST_ERRORS,
                "409": _error("port_in_use (naming host_addr:host_port), bad_host_addr (not an address of the agent's "
                              "machine), port_not_allowed (a low port without the right), guest_agent_absent (no vsock device), "
                              "or the microVM is not running"),
            },
        },
    },
    "/v1/microvms/{name}/ports/{host_port}": {
        "delete": {
            "operationId": "removePort",
            "parameters": [
                NAME_PARAM,
                {"name": "host_port", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 65535}},
                {"name": "host_addr", "in": "query", "schema": IP_ADDRESS,
                 "description": "only this address (default: every address of that port)"},
            ],  # fmt: skip
            "responses": {
                "204": {"description": "no longer published"},
                **GUEST_ERRORS,
                "404": _error("no microVM of that name, or port_not_published"),
            },
        }
    },
}

CREATE_ERRORS = {
    "409": _error("a microVM of that name exists, port_in_use, bad_host_addr, port_not_allowed, or guest_agent_absent "
                  "with wait (the microVM runs)"),
    "504": _error("guest_agent_timeout: wait: guest_agent and it was not ready in time (the microVM keeps running)"),
}


def merge(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the guest channel's paths, schemas and fields to ``doc`` (in place; returned)."""
    schemas = doc["components"]["schemas"]
    schemas.update(copy.deepcopy(SCHEMAS))
    schemas["MicroVMSpec"]["properties"].update(copy.deepcopy(SPEC_PROPERTIES))
    schemas["MicroVMInfo"]["properties"].update(copy.deepcopy(INFO_PROPERTIES))
    doc["paths"].update(copy.deepcopy(PATHS))
    doc["paths"]["/v1/microvms"]["post"]["responses"].update(copy.deepcopy(CREATE_ERRORS))
    return doc


__all__ = ["PATHS", "SCHEMAS", "merge"]
