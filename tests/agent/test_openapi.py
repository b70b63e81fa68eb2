"""GET /openapi.json describes exactly the routes the app serves, and the
answers of the app match the schemas it publishes."""

from __future__ import annotations

import re
from typing import Any

import fastjsonschema
from aiohttp import web
from aiohttp.test_utils import TestClient

from fc_macos.agent.app import create_app
from fc_macos.agent.openapi import RELAY_METHODS
from fc_macos.agent.settings import AgentSettings
from tests.helpers.agent import AUTH
from tests.agent.test_app import seed_stopped


def served_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, OpenAPI-style path) for every route of the app."""
    ops = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, info
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)  # {path:.*} -> {path}
        methods = RELAY_METHODS if route.method == "*" else (route.method.lower(),)
        ops.update((m, path) for m in methods)
    return ops


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item}


async def test_document_lists_exactly_the_served_routes(client: TestClient, settings: AgentSettings) -> None:
    resp = await client.get("/openapi.json", headers=AUTH)
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    served = served_operations(create_app(settings))
    documented = documented_operations(doc)
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented operations the app does not serve"
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    return fastjsonschema.compile({**schema, "components": doc["components"]})


def response_schema(doc: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    return doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


async def test_answers_match_their_schemas(settings: AgentSettings) -> None:
    from tests.helpers.agent import serve

    seed_stopped(settings, "old")
    client = await serve(settings)
    try:
        doc = await (await client.get("/openapi.json", headers=AUTH)).json()
        checks = [
            ("/healthz", "get", "200", await client.get("/healthz")),
            ("/v1/info", "get", "200", await client.get("/v1/info", headers=AUTH)),
            ("/v1/microvms", "get", "200", await client.get("/v1/microvms", headers=AUTH)),
            ("/v1/microvms/{name}", "get", "200", await client.get("/v1/microvms/old", headers=AUTH)),
            ("/v1/microvms/{name}/stop", "post", "200", await client.post("/v1/microvms/old/stop", headers=AUTH)),
            ("/v1/microvms/{name}", "get", "404", await client.get("/v1/microvms/ghost", headers=AUTH)),
            ("/v1/microvms", "post", "400", await client.post("/v1/microvms", json={"vcpus": 0}, headers=AUTH)),
            ("/v1/microvms", "post", "404", await client.post("/v1/microvms", json={"kernel": "nope"}, headers=AUTH)),
            ("/v1/microvms", "post", "409", await client.post("/v1/microvms", json={"name": "old"}, headers=AUTH)),
            ("/v1/microvms", "post", "422", await client.post("/v1/microvms", json={"memory_mib": 64}, headers=AUTH)),
            ("/v1/microvms", "get", "401", await client.get("/v1/microvms")),
        ]
        for path, method, status, resp in checks:
            assert str(resp.status) == status, (path, method, await resp.text())
            body = await resp.json()
            validator(doc, response_schema(doc, path, method, status))(body)
        # and a schema that would reject a wrong body (the check can fail)
        info_check = validator(doc, response_schema(doc, "/v1/microvms/{name}", "get", "200"))
        try:
            info_check({"name": "x", "state": "exploded"})
        except fastjsonschema.JsonSchemaException:
            pass
        else:
            raise AssertionError("the MicroVMInfo schema accepted a bad body")
    finally:
        await client.close()


def test_spec_schema_agrees_with_wire_validation() -> None:
    from fc_macos.agent.openapi import document
    from fc_macos.agent.wire import MicroVMSpec

    doc = document()
    check = validator(doc, {"$ref": "#/components/schemas/MicroVMSpec"})
    good = {"name": "web-1", "vcpus": 2, "memory_mib": 512, "drives": [{"id": "data", "path": "d.img", "read_only": True}]}
    check(good)
    MicroVMSpec.from_dict(good)
    check(MicroVMSpec.from_dict(good).to_dict())
    for bad in ({"vcpus": 0}, {"memory_mib": 8}, {"surprise": 1}, {"drives": [{"id": "rootfs", "path": "x"}]}):
        try:
            check(bad)
        except fastjsonschema.JsonSchemaException:
            continue
        raise AssertionError(f"schema accepted {bad}")
