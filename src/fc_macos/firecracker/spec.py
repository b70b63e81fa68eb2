"""The Firecracker 1.16.1 API spec and request-body validation against it.

``firecracker-api.json`` is Firecracker's own Swagger 2.0 document
(``src/firecracker/swagger/firecracker.yaml`` at v1.16.1, Apache-2.0, see
``LICENSE.firecracker``/``NOTICE.firecracker``), converted verbatim to JSON by
``scripts/gen_firecracker_spec.py``. It is read once with :mod:`json`.

Bodies are checked with fastjsonschema against a draft-4 schema built from the
spec's ``definitions``. Swagger and Firecracker differ in a few places; this
module follows what Firecracker's code does, not the letter of the spec:

* Unknown fields. Swagger 2.0 allows extra properties unless told otherwise,
  but Firecracker deserialises most bodies into serde structs marked
  ``deny_unknown_fields`` and answers 400 for an extra field. So every object
  definition that lists ``properties`` is closed (``additionalProperties:
  false``) except those in :data:`OPEN_DEFINITIONS`. We read Firecracker's
  source for this (several revisions, not exactly v1.16.1): the body structs of
  boot-source, machine-config, drives, network-interfaces, pmem, vsock,
  entropy, serial, logger, mmds/config, balloon, hotplug/memory, actions, vm,
  snapshot create/load (and its memory backend), rate limiters and the CPU
  template deny unknown fields; ``TokenBucketConfig``, ``MetricsConfig``,
  ``NetworkOverride``, ``VsockOverride`` and the hinting start command do not,
  and the CPU-template modifiers were not confirmed either way, so those stay
  open and Firecracker judges them. ``MmdsContentsObject`` is free-form by the spec.
* ``Logger.level`` is matched in any case, as its description says (and serde does).
* ``PATCH /machine-config`` names ``MachineConfiguration`` but Firecracker
  takes a partial update there, so its ``required`` list is dropped.
* PUT and PATCH need a body ("Empty PUT request."), unless the spec marks the
  body parameter ``required: false`` (``PATCH /balloon/hinting/start``) or the
  operation has none. GET never takes a body.
* Path ids (``/drives/{drive_id}`` ...) must be alphanumerics and ``_``, and
  must equal the id inside the body, as Firecracker checks.
* ``PUT /snapshot/load`` needs exactly one of ``mem_backend`` and
  ``mem_file_path`` (stated in the spec's prose).

Not checked here (Firecracker answers 400 itself): semantic rules such as
"vCPU count must be 1 or even with SMT", whether files exist, and a float like
``1.0`` for an integer (fastjsonschema accepts it, serde does not).
Swagger-only keys (``x-*`` vendor extensions, ``example``, ``readOnly`` ...)
are dropped from the schema; ``default`` values are never filled in.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache, partial
from importlib import resources
from typing import Any, Callable, NamedTuple

import fastjsonschema

from fc_macos.errors import ValidationError

#: Object definitions that Firecracker does not close with ``deny_unknown_fields``
#: (or for which we could not confirm it): extra fields are left for Firecracker to judge.
OPEN_DEFINITIONS = frozenset(
    {
        "TokenBucket",  # TokenBucketConfig
        "Metrics",  # MetricsConfig
        "NetworkOverride",
        "VsockOverride",
        "BalloonStartCmd",  # StartHintingCmd
        "CpuidLeafModifier",  # CPU-template parts: not confirmed either way
        "CpuidRegisterModifier",
        "MsrModifier",
        "ArmRegisterModifier",
        "VcpuFeatures",
    }
)

#: Operations whose body is a partial update of the named definition (``required`` dropped).
PARTIAL_BODIES = frozenset({("PATCH", "/machine-config")})

#: Path parameters whose value the body must repeat in the field of the same name.
ID_PARAMS = frozenset({"drive_id", "iface_id", "id"})

ID_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")

# Keywords of Swagger's schema object that are not JSON Schema draft 4 validation keywords.
_SWAGGER_ONLY = frozenset({"example", "readOnly", "discriminator", "xml", "externalDocs"})
# Our own note on a schema whose enum is matched in any case (draft 4 ignores unknown keywords).
_ANY_CASE = "fc-macos-enum-any-case"
# Keywords whose value is a map of name -> schema.
_SCHEMA_MAPS = frozenset({"properties", "definitions", "patternProperties"})
# Keywords whose value is a schema or a list of schemas.
_SCHEMA_VALUES = frozenset({"items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"})


def _load() -> dict[str, Any]:
    text = resources.files("fc_macos.firecracker").joinpath("firecracker-api.json").read_text(encoding="utf-8")
    return json.loads(text)


#: The whole spec document, as Firecracker publishes it (``SPEC["info"]["version"]``).
SPEC: dict[str, Any] = _load()
SPEC_VERSION: str = SPEC["info"]["version"]

_METHODS = ("get", "put", "patch", "post", "delete")


class Operation(NamedTuple):
    """One method+path of the API: ``(method, path, operation_id, body)``.

    ``method`` is upper-case, ``path`` the spec's template (``/drives/{drive_id}``),
    ``body`` the name of the body's definition or ``None`` when it takes none.
    """

    method: str
    path: str
    operation_id: str
    body: str | None

    @property
    def spec(self) -> dict[str, Any]:
        """The spec's operation object (summary, description, parameters, responses)."""
        return SPEC["paths"][self.path][self.method.lower()]

    @property
    def summary(self) -> str:
        return str(self.spec.get("summary", ""))

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{(\w+)\}", self.path))

    @property
    def body_required(self) -> bool:
        """Whether a request without a body is wrong (see the module docstring)."""
        if self.method == "GET" or self.body is None:
            return False
        param = next(p for p in self.spec.get("parameters", []) if p.get("in") == "body")
        return param.get("required", True) is not False


class Match(NamedTuple):
    """An :class:`Operation` with the concrete values of its path parameters."""

    operation: Operation
    params: dict[str, str]


def _body_definition(op: dict[str, Any]) -> str | None:
    for param in op.get("parameters", []):
        if param.get("in") == "body":
            return str(param["schema"]["$ref"]).rsplit("/", 1)[-1]
    return None


@lru_cache(maxsize=1)
def _operations() -> tuple[Operation, ...]:
    ops = []
    for path, item in SPEC["paths"].items():
        for method in _METHODS:
            if method in item:
                op = item[method]
                ops.append(Operation(method.upper(), path, op["operationId"], _body_definition(op)))
    return tuple(ops)


def operations() -> list[Operation]:
    """Every operation of the spec, in the spec's order."""
    return list(_operations())


@lru_cache(maxsize=1)
def _patterns() -> tuple[tuple[re.Pattern[str], Operation], ...]:
    out = []
    for op in _operations():
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(op.path))
        out.append((re.compile(f"^{regex}$"), op))
    return tuple(out)


def match_operation(method: str, path: str) -> Match | None:
    """Map a concrete request (``PUT``, ``/drives/rootfs?x``) to its operation.

    The query string is ignored and a missing leading ``/`` is added. Returns
    ``None`` when the spec has no such method+path; Firecracker itself answers
    400 for those.
    """
    path = "/" + path.split("?", 1)[0].lstrip("/")
    method = method.upper()
    for regex, op in _patterns():
        if op.method == method:
            found = regex.match(path)
            if found:
                return Match(op, found.groupdict())
    return None


def swagger_to_draft4(schema: Any, name: str | None = None) -> Any:
    """Swagger schema object -> draft-4 schema (see the module docstring)."""
    if isinstance(schema, list):
        return [swagger_to_draft4(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-") or key in _SWAGGER_ONLY:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: swagger_to_draft4(v, k if key == "definitions" else None) for k, v in value.items()}
        elif key in _SCHEMA_VALUES:
            out[key] = swagger_to_draft4(value)
        else:
            out[key] = copy.deepcopy(value)
    if "$ref" in out:
        return {"$ref": out["$ref"]}  # draft 4: siblings of $ref are ignored anyway
    if "enum" in out and "case-insensitive" in str(out.get("description", "")):
        # Logger.level: "The possible values are case-insensitive." (serde's case_insensitive).
        words = "|".join(re.escape(str(v)) for v in out.pop("enum"))
        out["pattern"] = f"^(?i:{words})$"
        out[_ANY_CASE] = [str(v) for v in schema["enum"]]
    if "properties" in out and "additionalProperties" not in out and name not in OPEN_DEFINITIONS:
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=1)
def definitions() -> dict[str, Any]:
    """The spec's definitions as draft-4 schemas, closed as Firecracker does."""
    return swagger_to_draft4({"definitions": SPEC["definitions"]})["definitions"]



def _full_match(regex: re.Pattern[str], value: str) -> bool:
    return regex.fullmatch(value) is not None

def _formats() -> dict[str, Callable[[str], bool]]:
    """Custom formats: the spec writes a regex into ``format`` (``MmdsConfig.ipv4_address``)."""
    found: dict[str, Callable[[str], bool]] = {}

    def walk(node: Any) -> None:  # noqa: C901 - a plain recursive walk
        if isinstance(node, dict):
            fmt = node.get("format")
            if isinstance(fmt, str) and any(c in fmt for c in "([|"):
                regex = re.compile(fmt)
                found[fmt] = partial(_full_match, regex)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(definitions())
    return found


@lru_cache(maxsize=None)
def validator(definition: str, *, partial: bool = False) -> Callable[[Any], Any]:
    """A compiled fastjsonschema validator for one definition (``partial``: no ``required``)."""
    defs = definitions()
    if definition not in defs:
        raise KeyError(f"the Firecracker spec has no definition {definition!r}")
    root: dict[str, Any] = {"definitions": defs}
    if partial:
        root.update({k: v for k, v in defs[definition].items() if k != "required"})
    else:
        root["$ref"] = f"#/definitions/{definition}"
    return fastjsonschema.compile(root, formats=_formats(), use_default=False)


_TYPE_WORDS = {
    "object": "a JSON object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def _field_name(exc: fastjsonschema.JsonSchemaValueException) -> str:
    return re.sub(r"^data\.?", "", exc.name or "data")


def _describe(schema: Any) -> str:
    desc = schema.get("description") if isinstance(schema, dict) else None
    return " ".join(str(desc).split()) if desc else ""


def _explain(op: Operation, path: str, exc: fastjsonschema.JsonSchemaValueException) -> ValidationError:
    where = f"{op.method} {path} body"
    field = _field_name(exc)
    schema = exc.definition if isinstance(exc.definition, dict) else {}
    props = schema.get("properties", {})
    prefix = f"{field}." if field else ""
    if exc.rule == "additionalProperties" and isinstance(exc.value, dict):
        unknown = sorted(set(exc.value) - set(props))
        return ValidationError(
            f"{where}: unknown field(s) {', '.join(prefix + u for u in unknown)} (Firecracker rejects unknown fields)",
            hint=f"allowed fields{' of ' + field if field else ''}: {', '.join(sorted(props))}",
            code="unknown_field",
        )
    if exc.rule == "required" and isinstance(exc.value, dict):
        missing = [r for r in schema.get("required", []) if r not in exc.value]
        notes = [f"{prefix}{m}: {_describe(props.get(m))}" for m in missing if _describe(props.get(m))]
        return ValidationError(
            f"{where}: missing required field(s) {', '.join(prefix + m for m in missing)}",
            hint="; ".join(notes) or f"see definition {op.body} in the Firecracker {SPEC_VERSION} API",
        )
    rule = exc.message.replace(exc.name or "data", "", 1).strip()
    if exc.rule == "type" and isinstance(schema.get("type"), str):
        rule = f"must be {_TYPE_WORDS.get(schema['type'], schema['type'])}"
    elif exc.rule == "enum":
        rule = f"must be one of {', '.join(map(str, schema.get('enum', [])))}"
    elif exc.rule == "pattern" and _ANY_CASE in schema:
        rule = f"must be one of {', '.join(schema[_ANY_CASE])} (in any case)"
    elif exc.rule == "format":
        rule = f"must match the spec's pattern {schema.get('format')}"
    what = f"field {field}" if field else "the body"
    desc = _describe(schema)
    return ValidationError(
        f"{where}: {what} {rule} (got {json.dumps(exc.value)[:200]})",
        hint=f"{field or op.body}: {desc}" if desc else f"see definition {op.body} in the Firecracker {SPEC_VERSION} API",
    )


def validate_body(method: str, path: str, body: Any) -> Match:
    """Check a request's method, path and parsed JSON ``body`` (``None``: no body).

    Returns the :class:`Match` on success. Raises
    :class:`~fc_macos.errors.ValidationError` naming the field and the rule it
    breaks (with the spec's description of the field in the hint), for an
    unknown method+path, a bad path id, a missing or unexpected body, or a body
    the definition rejects. The body is never modified.
    """
    found = match_operation(method, path)
    if found is None:
        known = sorted({op.path for op in _operations()})
        raise ValidationError(
            f"Firecracker {SPEC_VERSION} has no operation {method.upper()} {path.split('?', 1)[0]}",
            hint=f"known paths: {', '.join(known)}",
            code="unknown_operation",
        )
    op, params = found
    for name, value in params.items():
        if not ID_PATTERN.match(value):
            raise ValidationError(
                f"{op.method} {op.path}: invalid {name} {value!r}",
                hint="Firecracker ids may only contain letters, digits and '_'",
            )
    if body is None:
        if op.body_required:
            raise ValidationError(
                f"{op.method} {op.path} needs a JSON body ({op.body})",
                hint=f"{op.summary} See definition {op.body} in the Firecracker {SPEC_VERSION} API.",
            )
        return found
    if op.body is None and op.method == "GET":
        raise ValidationError(f"GET {op.path} takes no body", hint="send the request without a body")
    if op.body is None:
        return found
    try:
        validator(op.body, partial=(op.method, op.path) in PARTIAL_BODIES)(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _explain(op, path.split('?', 1)[0], exc) from exc
    for name, value in params.items():
        if name in ID_PARAMS and isinstance(body, dict) and body.get(name) != value:
            raise ValidationError(
                f"{op.method} {op.path}: body field {name} ({body.get(name)!r}) differs from the path's {value!r}",
                hint="Firecracker requires the id in the path and in the body to be the same",
            )
    if op.body == "SnapshotLoadParams" and ("mem_backend" in body) == ("mem_file_path" in body):
        raise ValidationError(
            f"{op.method} {op.path} body: give exactly one of mem_backend and mem_file_path",
            hint="mem_backend ({'backend_type': 'File', 'backend_path': ...}) is the current form; "
            "mem_file_path is deprecated",
        )
    return found


__all__ = [
    "ID_PATTERN",
    "Match",
    "OPEN_DEFINITIONS",
    "Operation",
    "SPEC",
    "SPEC_VERSION",
    "definitions",
    "match_operation",
    "operations",
    "validate_body",
    "validator",
]
