"""The agent checks every request against its own OpenAPI document.

:func:`contract_middleware` finds the operation of the matched route in the
document ``GET /openapi.json`` serves and, before the handler runs, checks:

* every path and query parameter the operation declares, against the
  parameter's ``schema`` (after turning the text into the declared type:
  ``integer``, ``number``, ``boolean`` as ``true``/``false``/``1``/``0``);
  a required query parameter that is missing is refused too;
* the body, when the operation's ``requestBody`` has ``application/json``
  content: malformed JSON, a missing required body, and any value the schema
  rejects (wrong JSON type, unknown field under ``additionalProperties:
  false``, out of range ...).

A failed check is a 400 ``ValidationError`` that names the parameter or field
and says what it accepts (``query parameter follow must be an integer, got
'banana'``, hint ``follow: one of 0, 1``; an unknown field is
``unknown_field``). The schemas are compiled with fastjsonschema (JSON Schema
draft 7, the subset the document uses). Handlers still parse what they get
(:mod:`fc_macos.agent.wire`) for the rules a schema cannot state (unique drive
ids, paths inside the image directories); the types are checked here, once,
from the same schema the document states, so the document and the check
cannot drift.

:func:`complete_responses` adds to the document the answers the agent's
machinery gives for every operation: 400 where the operation has parameters
or a body, 401 unless it is public (``security: []``), 413 where it takes a
JSON body (read whole, up to the app's ``client_max_size``), and 500
(``internal``: the agent failed unexpectedly), all with the ``Error`` schema.

A new route declares itself in the OpenAPI document only (``PATHS`` of
:mod:`fc_macos.agent.openapi` or a module merged into it):

* ``parameters``: each ``{"name", "in": "path" | "query", "required",
  "schema"}``; the handler may then trust ``request.query[...]`` to parse as
  the declared type (it still converts the text itself);
* ``requestBody``: ``{"required": bool, "content": {"application/json":
  {"schema": ...}}}``; the handler reads it with
  :func:`fc_macos.agent.http_errors.read_json` (already parsed and checked); a
  body of another media type (a tar stream) is left alone;
* ``responses``: the statuses the handler itself answers (201, 404, 409 ...)
  with ``_error(...)``; the common ones above are added for it. A rule across
  fields goes into the schema too where JSON Schema can say it (``if``/``then``,
  as ``MicroVMSpec``'s snapshot rule): schemathesis
  (``tests/agent/test_contract_fuzz.py``) sends every request the schema
  allows and fails on a 400 for one of them.

A route served but not documented is not checked (and a test fails:
``tests/agent/test_openapi.py`` compares the two).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import fastjsonschema
from aiohttp import web

from fc_macos.agent.http_errors import Handler, read_json
from fc_macos.errors import ValidationError

JSON = "application/json"
_REF = "#/components/schemas/"
_ERROR = {"$ref": _REF + "Error"}
_TRUE, _FALSE = ("true", "1"), ("false", "0")

Check = Callable[[Any], Any]


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ERROR}}}


COMMON_RESPONSES = {
    "400": _error("a path or query parameter or the body does not match this document (error invalid, "
                  "unknown_field or malformed_json), or the request is refused for what it asks"),
    "401": _error("missing or wrong token"),
    "413": _error("request body too large"),
    "500": _error("the agent failed unexpectedly (error internal; see fc-agent's log)"),
}  # fmt: skip


def complete_responses(doc: dict[str, Any]) -> dict[str, Any]:
    """Add :data:`COMMON_RESPONSES` to each operation of ``doc`` where they
    apply, keeping any the operation states itself (in place; returned)."""
    for item in doc["paths"].values():
        for op in item.values():
            responses = op.setdefault("responses", {})
            wanted = ["500"]
            if op.get("parameters") or "requestBody" in op:
                wanted.append("400")
            if op.get("security", doc.get("security")) != []:
                wanted.append("401")
            if JSON in op.get("requestBody", {}).get("content", {}):
                wanted.append("413")  # read whole (client_max_size); a streamed body has no such limit
            for status in wanted:
                responses.setdefault(status, COMMON_RESPONSES[status])
    return doc


_TYPE_WORDS = {"object": "a JSON object", "array": "a JSON array", "integer": "an integer", "number": "a number",
               "string": "a string", "boolean": "true or false", "null": "null"}  # fmt: skip


def describe(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    """What ``schema`` accepts, in a few words (for hints): ``integer from 1 to 32``."""
    if "$ref" in schema:
        return describe(schemas.get(schema["$ref"].removeprefix(_REF), {}), schemas)
    if "oneOf" in schema:
        return " or ".join(describe(s, schemas) for s in schema["oneOf"])
    if "enum" in schema:
        return "one of " + ", ".join("null" if v is None else str(v) for v in schema["enum"])
    if "const" in schema:
        return f"exactly {schema['const']!r}"
    kind = schema.get("type", "any value")
    text = " or ".join(_TYPE_WORDS.get(k, str(k)) for k in kind) if isinstance(kind, list) else _TYPE_WORDS.get(kind, str(kind))
    if kind == "object" and "properties" in schema:
        text += " with fields " + ", ".join(schema["properties"])
    if kind == "array" and "items" in schema:
        text += " of " + describe(schema["items"], schemas)
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    if lo is not None and hi is not None:
        text += f" from {lo} to {hi}"
    elif lo is not None:
        text += f" of at least {lo}"
    elif hi is not None:
        text += f" of at most {hi}"
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    if schema.get("minLength"):
        text += ", not empty"
    return text




def _refused(
    where: str, exc: fastjsonschema.JsonSchemaValueException, components: dict[str, Any], *, name: str = "", prefix: str = ""
) -> ValidationError:
    """The 400 for ``exc`` (a value at ``where`` failed its schema): what is
    wrong in the message, what the schema accepts in the hint. ``name`` names
    the value in the hint (default: the failing field, else ``where``)."""
    schemas = components.get("schemas", {})
    field = prefix + (exc.name or "data").removeprefix("data")
    field = field.lstrip(".")
    what = f"{where} field {field}" if field else where
    definition = exc.definition if isinstance(exc.definition, dict) else {}
    branches = definition.get(exc.rule or "", None)
    if exc.rule in ("oneOf", "anyOf") and exc.value is not None and isinstance(branches, list):
        for branch in branches:  # the one branch the value was meant for: its own complaint
            if branch != {"type": "null"}:
                try:
                    _compile(branch, components)(exc.value)
                except fastjsonschema.JsonSchemaValueException as inner:
                    return _refused(where, inner, components, name=name, prefix=field)
    if exc.rule == "additionalProperties":
        known = definition.get("properties", {})
        unknown = sorted(set(exc.value) - set(known)) if isinstance(exc.value, dict) else []
        return ValidationError(f"unknown field(s) in {what}: {', '.join(unknown)}",
                               hint=f"allowed fields: {', '.join(known)}", code="unknown_field")  # fmt: skip
    if exc.rule == "type":
        kinds = definition.get("type")
        words = [_TYPE_WORDS.get(str(k), str(k)) for k in (kinds if isinstance(kinds, list) else [kinds])]
        rest = "must be " + " or ".join(words)
    elif exc.rule == "const":
        rest = f"must be {json.dumps(definition.get('const'))}"
    elif exc.rule == "not" and isinstance(definition.get("not"), dict):
        rest = f"must not be {describe(definition['not'], schemas)}"
    else:
        rest = exc.message.removeprefix(exc.name or "data").strip()
    shown = repr(exc.value)
    got = f", got {shown if len(shown) <= 80 else shown[:77] + '...'}"
    hint = definition.get("description") if exc.rule in ("const", "pattern") else None
    return ValidationError(f"{what} {rest}{got}", hint=hint or f"{name or field or where}: {describe(definition, schemas)}")


@dataclass(frozen=True)
class _Parameter:
    name: str
    where: str  # "path" or "query"
    required: bool
    schema: dict[str, Any]
    check: Check


class Operation:
    """One documented operation's checks (compiled from its schemas)."""

    def __init__(self, op: dict[str, Any], components: dict[str, Any]) -> None:
        self.components = components
        self.schemas: dict[str, Any] = components.get("schemas", {})
        self.parameters = [
            _Parameter(p["name"], p["in"], bool(p.get("required")), p.get("schema", {}),
                       _compile(p.get("schema", {}), components))
            for p in op.get("parameters", ()) if p["in"] in ("path", "query")
        ]  # fmt: skip
        body = op.get("requestBody", {})
        json_body = body.get("content", {}).get(JSON)
        self.body_required = bool(body.get("required"))
        self.body_schema: dict[str, Any] = {} if json_body is None else json_body.get("schema", {})
        self.body_check = None if json_body is None else _compile(json_body.get("schema", {}), components)

    async def check(self, request: web.Request) -> None:
        """Raise ValidationError unless ``request`` matches this operation."""
        for param in self.parameters:
            source = request.match_info if param.where == "path" else request.query
            raw = source.get(param.name)
            label = f"{param.where} parameter {param.name}"
            if raw is None:
                if param.required:
                    raise ValidationError(
                        f"query parameter {param.name} is required",
                        hint=f"{param.name}: {describe(param.schema, self.schemas)}",
                    )
                continue
            try:
                param.check(_typed(raw, param.schema))
            except fastjsonschema.JsonSchemaValueException as exc:
                raise _refused(label, exc, self.components, name=param.name) from None
        if self.body_check is None:
            return
        if not (await request.read()).strip():
            if self.body_required:
                raise ValidationError(
                    "this request needs a JSON body", hint=f"send {describe(self.body_schema, self.schemas)}"
                )
            return
        body = await read_json(request)  # JSON null is a body too (and no object)
        try:
            self.body_check(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _refused("request body", exc, self.components) from None


def _typed(raw: str, schema: dict[str, Any]) -> Any:
    """The text of a parameter as its schema's type (unchanged when it does not
    parse: the schema check then names the type it wanted)."""
    kind = schema.get("type")
    if kind is None and "enum" in schema and all(isinstance(v, int) for v in schema["enum"]):
        kind = "integer"
    if kind == "integer" and re.fullmatch(r"[+-]?\d{1,18}", raw):
        return int(raw)
    if kind == "number":
        try:
            return float(raw) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", raw) else raw
        except ValueError:
            return raw
    if kind == "boolean" and raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    return raw


def query_flag(request: web.Request, key: str) -> bool:
    """Boolean query parameter ``key`` (absent: false), for a handler whose
    operation declares it ``boolean``: the middleware has refused any other text."""
    return request.query.get(key, "false").lower() in _TRUE


def _compile(schema: dict[str, Any], components: dict[str, Any]) -> Check:
    return fastjsonschema.compile({**schema, "components": components})  # type: ignore[no-any-return]


def _template(resource: web.AbstractResource) -> str:
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", resource.canonical)  # {path:.*} -> {path}


class Contract:
    """The operations of an OpenAPI document, compiled when first used."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._compiled: dict[tuple[str, str], Operation | None] = {}
        self._templates: dict[web.AbstractResource, str] = {}

    def operation(self, method: str, path: str) -> Operation | None:
        key = (method.lower(), path)
        if key not in self._compiled:
            op = self.doc["paths"].get(path, {}).get(key[0])
            self._compiled[key] = None if op is None else Operation(op, self.doc.get("components", {}))
        return self._compiled[key]

    def for_request(self, request: web.Request) -> Operation | None:
        """The operation ``request``'s route serves (None: undocumented)."""
        resource = request.match_info.route.resource
        if resource is None:
            return None
        path = self._templates.get(resource)
        if path is None:
            path = self._templates[resource] = _template(resource)
        return self.operation(request.method, path)


def contract_middleware(contract: Contract) -> Callable[..., Any]:
    """Middleware that checks each request against ``contract`` before its
    handler runs (put it after the token check: a request without a token is
    a 401 whatever it holds)."""

    @web.middleware
    async def check_contract(request: web.Request, handler: Handler) -> web.StreamResponse:
        op = contract.for_request(request)
        if op is not None:
            await op.check(request)
        return await handler(request)

    return check_contract


__all__ = ["COMMON_RESPONSES", "Contract", "complete_responses", "contract_middleware", "describe", "query_flag"]
