"""The image directory's part of the agent's OpenAPI document: list, upload
and delete files of ``<state-dir>/images`` and download a microVM's drive
files (:mod:`fc_macos.agent.image_routes`). :func:`fc_macos.agent.openapi.document`
merges it in."""

from __future__ import annotations

import copy
from typing import Any

from fc_macos.agent.image_store import SHA256_RE
from fc_macos.image_names import MAX_NAME, NAME_RE
from fc_macos.agent.openapi import NAME_PARAM, _error, _json, _ref
from fc_macos.agent.wire import DRIVE_ID_PATTERN

IMAGE_NAME_RULE = ("a plain file name in the agent's image directory: letters, digits, '.', '_', '+', '-', "
                   "not starting with '.' or '-' (e.g. rootfs-web.ext4)")
IMAGE_NAME_PARAM = {
    "name": "name", "in": "path", "required": True,
    "description": IMAGE_NAME_RULE,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": NAME_RE.pattern,
               "description": IMAGE_NAME_RULE},
}  # fmt: skip
SHA256_PARAM = {"name": "sha256", "in": "query", "description": "sha256 of the whole file (hex)",
                "schema": {"type": "string", "pattern": SHA256_RE.pattern}}  # fmt: skip
SIZE_PARAM = {"name": "size", "in": "query", "description": "the file's size in bytes",
              "schema": {"type": "integer", "minimum": 0}}  # fmt: skip
DRIVE_ID_PARAM = {"name": "drive_id", "in": "path", "required": True, "description": "rootfs, or a drive's id",
                  "schema": {"type": "string", "pattern": DRIVE_ID_PATTERN.pattern}}  # fmt: skip
AUTH_ERRORS = {"401": _error("missing or wrong token")}

SCHEMAS: dict[str, Any] = {
    "ImageFile": {
        "type": "object",
        "required": ["name", "path", "size", "sha256"],
        "properties": {
            "name": {"type": "string"},
            "path": {"type": "string", "description": "absolute path on the agent's machine (what a spec may name)"},
            "size": {"type": "integer"},
            "sha256": {"type": ["string", "null"], "description": "null while not known (not uploaded here and "
                       "not hashed yet)"},
        },
    },
    "ImageList": {
        "type": "object",
        "required": ["directory", "free_bytes", "images"],
        "properties": {
            "directory": {"type": "string", "description": "the agent's own image directory (uploads go here)"},
            "free_bytes": {"type": "integer", "description": "space left for uploads"},
            "images": {"type": "array", "items": _ref("ImageFile")},
        },
    },
    "StoredImage": {
        "allOf": [_ref("ImageFile")],
        "type": "object",
        "required": ["outcome", "linked_from"],
        "properties": {
            "outcome": {"enum": ["uploaded", "present", "linked"],
                        "description": "uploaded: written from the body; present: the name already held this "
                        "content; linked: another name held it and the new name is a hard link to it"},
            "linked_from": {"type": ["string", "null"]},
        },
    },
    "DriveAttach": {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "a name in an image dir, or a path inside one"},
            "read_only": {"type": "boolean", "default": False},
            "root": {"type": "boolean", "default": False, "description": "make it the root device"},
        },
    },
    "AttachedDrive": {
        "type": "object",
        "required": ["id", "path", "source", "read_only", "root"],
        "properties": {
            "id": {"type": "string"},
            "path": {"type": "string", "description": "the file Firecracker writes: the private copy unless read_only"},
            "source": {"type": "string", "description": "the image it came from"},
            "read_only": {"type": "boolean"},
            "root": {"type": "boolean"},
        },
    },
    "InsufficientStorage": {
        "allOf": [_ref("Error")],
        "type": "object",
        "required": ["needed", "free"],
        "properties": {"needed": {"type": "integer"}, "free": {"type": "integer"}},
    },
}  # fmt: skip

PATHS: dict[str, Any] = {
    "/v1/images": {
        "get": {
            "operationId": "listImages",
            "summary": "the files of the agent's image directory; with sha256 and/or size, only those holding "
            "that content or size (hashing, once, candidates whose sha256 is not known yet)",
            "parameters": [SHA256_PARAM, SIZE_PARAM],
            "responses": {
                "200": _json(_ref("ImageList"), "the files"),
                "400": _error("invalid_sha256 or invalid_size (both must be given together)"),
                **AUTH_ERRORS,
            },
        },
    },
    "/v1/images/{name}": {
        "put": {
            "operationId": "uploadImage",
            "summary": "upload a file (the body, streamed; not limited by the agent's JSON body size): written "
            "to a hidden temporary file, checked against size and sha256, then renamed into place",
            "parameters": [
                IMAGE_NAME_PARAM, SHA256_PARAM | {"required": True}, SIZE_PARAM | {"required": True},
                {"name": "replace", "in": "query", "schema": {"type": "boolean", "default": False},
                 "description": "replace a file of that name with other content (refused while a microVM uses it)"},
            ],  # fmt: skip
            "requestBody": {"required": True,
                            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "201": _json(_ref("StoredImage"), "uploaded"),
                "200": _json(_ref("StoredImage"), "nothing needed sending: present (this name holds this content) "
                             "or linked (another name did); the body is not read"),
                "400": _error("invalid (a parameter the schema refuses: a path, a hidden name, a bad sha256 "
                              "or size), body_incomplete (shorter than size, or cut off), body_too_long, checksum_mismatch: "
                              "nothing is kept"),
                **AUTH_ERRORS,
                "409": _error("image_exists (other content under that name, no replace) or image_in_use"),
                "413": _json(_ref("InsufficientStorage"), "no_space: size is beyond the free space "
                             "(needed and free in bytes; the hint says how to grow the disk)"),
            },
        },
        "delete": {
            "operationId": "deleteImage",
            "parameters": [IMAGE_NAME_PARAM],
            "responses": {
                "204": {"description": "deleted"},
                "400": _error("invalid: not a plain file name"),
                **AUTH_ERRORS,
                "404": _error("image_not_found"),
                "409": _error("image_in_use: a microVM's spec names it (the message lists them)"),
            },
        },
    },
    "/v1/microvms/{name}/drives/{drive_id}": {
        "put": {
            "operationId": "attachDrive",
            "summary": "attach a drive to a microVM whose VMM runs (before start, or hot-plug after): path is "
            "resolved like a spec's; a writable drive is first copied to the microVM's work directory "
            "(drive-ID.img), so the image itself is never written",
            "parameters": [NAME_PARAM, DRIVE_ID_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DriveAttach")}}},
            "responses": {
                "200": _json(_ref("AttachedDrive"), "attached"),
                "400": _error("invalid or unknown_field (the body against DriveAttach), malformed_json, path_outside_image_dirs, or "
                              "drive_refused (Firecracker's own refusal, in the message)"),
                **AUTH_ERRORS,
                "404": _error("no microVM of that name, or file_not_found"),
                "409": _error("the microVM's VMM does not run"),
                "413": _error("request body too large"),
                "502": _error("the Firecracker API socket does not answer"),
            },
        },
        "get": {
            "operationId": "downloadDrive",
            "summary": "the file behind a microVM's drive: its private copy for the rootfs and writable drives "
            "(in its work directory), the image itself for read-only ones; Fc-Drive-Path names it",
            "parameters": [NAME_PARAM, DRIVE_ID_PARAM],
            "responses": {
                "200": {"description": "the file's bytes",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                **AUTH_ERRORS,
                "404": _error("no microVM of that name, or drive_not_found"),
                "409": _error("microvm_running: stop or pause it first"),
            },
        },
    },
}


def merge(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the image directory's paths and schemas to ``doc`` (in place; returned)."""
    doc["components"]["schemas"].update(copy.deepcopy(SCHEMAS))
    doc["paths"].update(copy.deepcopy(PATHS))
    return doc


__all__ = ["PATHS", "SCHEMAS", "merge"]
