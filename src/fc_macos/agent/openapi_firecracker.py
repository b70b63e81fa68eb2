"""The Firecracker binary's part of the agent's OpenAPI document: what new
microVMs run, and installing another (:mod:`fc_macos.agent.firecracker_install`).
:func:`fc_macos.agent.openapi.document` merges it in."""

from __future__ import annotations

import copy
from typing import Any

from fc_macos.agent.openapi import _error, _json, _nullable, _ref
from fc_macos.agent.openapi_images import AUTH_ERRORS, SHA256_PARAM, SIZE_PARAM

SCHEMAS: dict[str, Any] = {
    "Firecracker": {
        "type": "object",
        "required": ["path", "source", "size", "sha256", "version"],
        "properties": {
            "path": {"type": "string", "description": "the binary new microVMs run (microVMs already running "
                     "keep theirs)"},
            "source": {"enum": ["installed", "option"], "description": "installed: <state-dir>/bin/firecracker, "
                       "put there by PUT /v1/firecracker (it wins over --firecracker-bin, also after a restart); "
                       "option: fc-agent's --firecracker-bin"},
            "size": _nullable("integer") | {"description": "null: the binary is not found"},
            "sha256": _nullable("string"),
            "version": _nullable("string") | {"description": "the first line of its --version, e.g. "
                                              "'Firecracker v1.16.1'; null: it does not answer as Firecracker"},
        },
    },
}  # fmt: skip

PATHS: dict[str, Any] = {
    "/v1/firecracker": {
        "get": {
            "operationId": "getFirecracker",
            "summary": "the Firecracker binary new microVMs run, its sha256 and version",
            "responses": {"200": _json(_ref("Firecracker"), "the binary"), **AUTH_ERRORS},
        },
        "put": {
            "operationId": "installFirecracker",
            "summary": "install the body (streamed, checked against size and sha256) as <state-dir>/bin/"
            "firecracker (0755) once its --version answers 'Firecracker v...'; new microVMs run it",
            "parameters": [SHA256_PARAM | {"required": True}, SIZE_PARAM | {"required": True}],
            "requestBody": {"required": True,
                            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "201": _json(_ref("Firecracker"), "installed"),
                "200": _json(_ref("Firecracker"), "already installed with this content; the body is not read"),
                "400": _error("invalid_sha256 or invalid_size, body_incomplete, body_too_long or checksum_mismatch: "
                              "nothing is replaced"),
                **AUTH_ERRORS,
                "413": _json(_ref("InsufficientStorage"), "no_space: size is beyond the free space"),
                "422": _error("firecracker_unusable: it does not start, or its --version does not answer "
                              "'Firecracker v...' in time (the message has what it said); nothing is replaced"),
            },
        },
    },
}  # fmt: skip


def merge(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the Firecracker binary's paths and schemas to ``doc`` (in place; returned)."""
    doc["components"]["schemas"].update(copy.deepcopy(SCHEMAS))
    doc["paths"].update(copy.deepcopy(PATHS))
    return doc


__all__ = ["PATHS", "SCHEMAS", "merge"]
