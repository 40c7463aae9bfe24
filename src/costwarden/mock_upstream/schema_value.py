"""A small JSON value that a JSON schema accepts, for structured output and tool arguments.

Covers what function and response schemas use in practice (the subset OpenAI's strict mode and
Pydantic produce): types and type lists, ``enum`` and ``const``, required properties of objects,
arrays with their bounds and ``prefixItems``, ``anyOf`` / ``oneOf`` (the first branch that is not
null), ``allOf`` (merged), local ``$ref`` (``#/$defs/...``, ``#/definitions/...``, ``#``),
string lengths and common formats, numeric bounds and ``multipleOf``. Only required properties
are filled, so recursive schemas end; past ``MAX_DEPTH`` arrays are left empty. Numbers are
integers, which every numeric schema without a fractional ``multipleOf`` accepts.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 16
MAX_REF_DEPTH = 2 * MAX_DEPTH  # beyond the arrays' limit: only a schema no finite value fits reaches it
TEXT = "tok"
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "tok@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "duration": "PT1S",
}


def example_value(schema: Any) -> Any:
    """A minimal value that ``schema`` accepts."""
    return _value(schema, schema if isinstance(schema, dict) else {}, 0)


def _value(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict):
        return TEXT  # ``true`` or a malformed schema: anything goes
    schema = _resolved(schema, root, depth)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return _value(_preferred(branches, root, depth), root, depth + 1)
    kind = _type(schema)
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return TEXT


def _resolved(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    """``schema`` with its ``$ref`` and ``allOf`` folded in."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and depth < MAX_REF_DEPTH:
        target = _pointer(root, ref)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**_resolved(target, root, depth + 1), **rest} if isinstance(target, dict) else rest
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            if isinstance(part, dict):
                part = _resolved(part, root, depth + 1)
                merged.setdefault("properties", {}).update(part.get("properties", {}))
                merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
        schema = merged
    return schema


def _pointer(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        return None  # remote references are out of reach
    node: Any = root
    for token in filter(None, ref[1:].split("/")):
        key = token.replace("~1", "/").replace("~0", "~")
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _preferred(branches: list[Any], root: dict[str, Any], depth: int) -> Any:
    for branch in branches:
        if not (isinstance(branch, dict) and _type(_resolved(branch, root, depth)) == "null"):
            return branch
    return branches[0]


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or kind
        kind = kinds[0] if kinds else None
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = [name for name in required if isinstance(name, str)] if isinstance(required, list) else []
    return {name: _value(properties.get(name, {}), root, depth + 1) for name in names}


def _array(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    values = [_value(item, root, depth + 1) for item in prefix] if isinstance(prefix, list) else []
    low = _count(schema.get("minItems")) or 0
    high = _count(schema.get("maxItems"))
    wanted = max(low, 1) if depth < MAX_DEPTH else low
    if high is not None:
        wanted = min(wanted, high)
    items = schema.get("items", {})
    while len(values) < wanted:
        values.append(_value(items, root, depth + 1))
    return values


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, TEXT) if isinstance(fmt, str) else TEXT
    low = _count(schema.get("minLength")) or 0
    high = _count(schema.get("maxLength"))
    if len(text) < low:
        text += "k" * (low - len(text))
    return text[:high] if high is not None else text


def _number(schema: dict[str, Any]) -> int:
    """The smallest integer at or above the lower bounds (0 without one), on ``multipleOf``."""
    lows: list[int] = []
    minimum, exclusive = _ceiling(schema.get("minimum")), schema.get("exclusiveMinimum")
    if minimum is not None:
        lows.append(minimum + 1 if exclusive is True and minimum == schema["minimum"] else minimum)
    if (floor := _floor(exclusive)) is not None:
        lows.append(floor + 1)
    value = max(lows) if lows else 0
    step = schema.get("multipleOf")
    if isinstance(step, int) and not isinstance(step, bool) and step > 0:
        value = -(-value // step) * step
    maximum = _floor(schema.get("maximum"))
    if not lows and maximum is not None and value > maximum:
        value = maximum
    return value


def _floor(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return math.floor(value)


def _ceiling(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return math.ceil(value)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
