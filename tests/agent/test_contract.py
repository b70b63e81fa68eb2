"""The agent checks requests against its OpenAPI document (fc_macos.agent.contract):
parameters and JSON bodies of the wrong type are 400s that name what is wrong and
what is accepted, and the document lists the answers every operation may give."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.contract import Contract, complete_responses, describe
from fc_macos.agent.openapi import document
from tests.agent.test_app import error_of
from tests.helpers.agent import AUTH


async def refusal(client: TestClient, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return await error_of(await client.request(method, url, headers=headers, **kwargs), 400)


@pytest.mark.parametrize(
    "url, words, hint",
    [
        ("/v1/microvms/a/logs?follow=banana", "query parameter follow must be an integer, got 'banana'", "follow: one of 0, 1"),
        ("/v1/microvms/a/logs?follow=7", "query parameter follow must be one of [0, 1], got 7", "follow: one of 0, 1"),
        ("/v1/microvms/a/logs?tail=-3", "query parameter tail must be bigger than or equal to 0", "tail: an integer from 0 to 10000000"),
        ("/v1/microvms/a/logs?source=dmesg", "query parameter source must be one of", "serial, firecracker, metrics"),
        ("/v1/microvms/a/console?scrollback=yes", "query parameter scrollback must be an integer", "one of 0, 1"),
        ("/v1/microvms/a/tunnel", "query parameter port is required", "port: an integer from 1 to 65535"),
        ("/v1/microvms/a/tunnel?port=70000", "query parameter port must be smaller than or equal to 65535", "65535"),
        ("/v1/microvms/a/files/stat?path=etc", "query parameter path must match pattern ^/", "path: a string"),
        ("/v1/microvms/Not_A_Name", "path parameter name must match pattern", "1-63 lower-case letters"),
    ],
)
async def test_parameters_of_the_wrong_type_are_400(client: TestClient, url: str, words: str, hint: str) -> None:
    body = await refusal(client, "GET", url)
    assert words in body["message"] and hint in body["hint"], body


async def test_boolean_parameters_take_true_false_1_0(client: TestClient) -> None:
    body = await refusal(client, "DELETE", "/v1/microvms/a?force=maybe")
    assert body["message"] == "query parameter force must be true or false, got 'maybe'"
    for value in ("true", "false", "1", "0", "TRUE"):  # past the check: the microVM does not exist
        resp = await client.delete(f"/v1/microvms/a?force={value}", headers=AUTH)
        assert resp.status == 404, (value, await resp.text())


@pytest.mark.parametrize(
    "url, body, code, words, hint",
    [
        ("/v1/microvms", [1, 2], "invalid", "request body must be a JSON object, got [1, 2]", "a JSON object with fields name"),
        ("/v1/microvms", "web", "invalid", "request body must be a JSON object", "request body: a JSON object"),
        ("/v1/microvms", {"vcpus": "2"}, "invalid", "request body field vcpus must be an integer, got '2'", "vcpus: an integer from 1 to 32"),
        ("/v1/microvms", {"vcpus": True}, "invalid", "field vcpus must be an integer, got True", "1 to 32"),
        ("/v1/microvms", {"surprise": 1}, "unknown_field", "unknown field(s) in request body: surprise", "allowed fields: name, vcpus"),
        ("/v1/microvms", {"snapshot": {"snapshot_path": 1, "mem_path": "m"}}, "invalid",
         "request body field snapshot.snapshot_path must be a string, got 1", "snapshot.snapshot_path: a string"),
        ("/v1/microvms", {"drives": [{"id": "d", "path": "p", "extra": 0}]}, "unknown_field",
         "unknown field(s) in request body field drives[0]: extra", "allowed fields: id, path, read_only"),
        ("/v1/microvms/a/stop", {"timeout_s": "soon"}, "invalid", "field timeout_s must be a number", "from 0 to 3600"),
        ("/v1/microvms/a/stop", {"timeout_s": 1e9}, "invalid", "field timeout_s must be smaller than or equal to 3600", "3600"),
        ("/v1/microvms/a/exec", None, "invalid", "this request needs a JSON body", "with fields argv"),
        ("/v1/microvms/a/exec", {"argv": "ls"}, "invalid", "field argv must be a JSON array, got 'ls'", "a JSON array of a string"),
        ("/v1/microvms/a/ports", {"host_port": 80, "guest_port": "80"}, "invalid", "field guest_port must be an integer", "1 to 65535"),
    ],
)  # fmt: skip
async def test_bodies_of_the_wrong_type_are_400(
    client: TestClient, url: str, body: Any, code: str, words: str, hint: str
) -> None:
    answer = await refusal(client, "POST", url, json=body) if body is not None else await refusal(client, "POST", url)
    assert answer["error"] == code and words in answer["message"] and hint in answer["hint"], answer


async def test_malformed_json_is_400_before_any_handler(client: TestClient) -> None:
    body = await refusal(client, "POST", "/v1/microvms/a/stop", data=b"{nope", headers={"Content-Type": "application/json"})
    assert body["error"] == "malformed_json"


async def test_the_token_is_checked_before_the_request(client: TestClient) -> None:
    resp = await client.get("/v1/microvms/a/logs?follow=banana")
    assert resp.status == 401


async def test_a_tar_body_is_not_read_as_json(client: TestClient) -> None:
    resp = await client.put("/v1/microvms/a/files?path=/tmp", data=b"\x00not json", headers=AUTH)
    assert resp.status == 404  # the microVM does not exist: the body reached the handler untouched


ERROR_REF = {"$ref": "#/components/schemas/Error"}


def test_every_operation_documents_the_common_answers() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            assert "500" in statuses, (method, path)
            assert ("401" in statuses) == (op.get("security") != []), (method, path)
            if op.get("parameters") or "requestBody" in op:
                assert "400" in statuses, (method, path)
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                assert "413" in statuses, (method, path)
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):  # the error shape, or one that extends it (allOf)
                    schema = answer["content"]["application/json"]["schema"]
                    if schema != ERROR_REF:
                        assert ERROR_REF in doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]["allOf"]


def test_a_new_operation_is_checked_from_its_document_entry_alone() -> None:
    doc = complete_responses({
        "paths": {"/v1/things/{n}": {"post": {
            "parameters": [{"name": "n", "in": "path", "required": True, "schema": {"type": "integer"}},
                           {"name": "dry", "in": "query", "schema": {"type": "boolean"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/T"}}}},
            "responses": {"201": {"description": "made"}},
        }}},
        "components": {"schemas": {"T": {"type": "object", "additionalProperties": False,
                                         "properties": {"size": {"type": "integer", "minimum": 1}}}}},
    })  # fmt: skip
    op = doc["paths"]["/v1/things/{n}"]["post"]
    assert set(op["responses"]) == {"201", "400", "401", "413", "500"}
    compiled = Contract(doc).operation("POST", "/v1/things/{n}")
    assert compiled is not None and compiled.body_required
    assert [p.name for p in compiled.parameters] == ["n", "dry"]
    assert Contract(doc).operation("GET", "/v1/things/{n}") is None


def test_describe_says_what_a_schema_accepts() -> None:
    schemas = document()["components"]["schemas"]
    assert describe({"type": "integer", "minimum": 1, "maximum": 32}, schemas) == "an integer from 1 to 32"
    assert describe({"type": ["string", "null"]}, schemas) == "a string or null"
    assert describe({"$ref": "#/components/schemas/StopRequest"}, schemas) == "a JSON object with fields force, timeout_s"
