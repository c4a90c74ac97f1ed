"""The smallest JSON value that satisfies a JSON schema: what the mock "generates" for structured output.

A model under structured output (OpenAI `response_format: json_schema`,
Anthropic `output_config.format`) or calling a tool returns JSON that fits
the schema it was given; the mock returns the minimal such instance. It
covers what SDKs and pydantic emit: objects with their required properties,
strings (and common formats, length bounds), numbers and integers within
their bounds, booleans, nulls, enums, consts, arrays with their minimum
length, `$ref` into `$defs`/`definitions`, `anyOf`/`oneOf` (the first
choice) and `allOf` (merged). Regex `pattern`s are not solved.
"""

from __future__ import annotations

import math
from typing import Any

# Recursive schemas (a tree of nodes) end here: optional parts are left out and nullable ones are null.
_MAX_DEPTH = 12
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "mock@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "duration": "P1D",
}


def instance_of(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value valid against `schema` (a dict; `True`/`{}` accept anything, so get a string)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH * 2:
        return "mock"
    if "$ref" in schema:
        return instance_of(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for choice_key in ("anyOf", "oneOf"):
        choices = schema.get(choice_key)
        if isinstance(choices, list) and choices:
            return instance_of(_pick_choice(choices, root, depth), root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged["properties"] = {**merged.get("properties", {}), **part.get("properties", {})}
                merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                merged.setdefault("type", part.get("type"))
        return instance_of(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if kinds else "null"
        if depth > _MAX_DEPTH and "null" in schema["type"]:
            kind = "null"
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _BY_TYPE.get(kind, _string)(schema, root, depth)


def _resolve(ref: Any, root: Any) -> Any:
    """A local `$ref` (`#/$defs/Name`, `#/definitions/Name`, `#`); anything else is unconstrained."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    target = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return {}
        target = target[part]
    return target


def _pick_choice(choices: list[Any], root: Any, depth: int) -> Any:
    """The first choice, except that deep inside a recursive schema a null choice ends the recursion."""
    if depth > _MAX_DEPTH:
        for choice in choices:
            if isinstance(choice, dict) and choice.get("type") == "null":
                return choice
    return choices[0]


def _object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    value = {name: instance_of(properties.get(name, {}), root, depth + 1) for name in names}
    minimum = schema.get("minProperties")
    if isinstance(minimum, int):  # fill up from the optional properties, then with made-up names
        for name, sub in properties.items():
            if len(value) >= minimum:
                break
            value.setdefault(name, instance_of(sub, root, depth + 1))
        while len(value) < minimum:
            value[f"key{len(value)}"] = "mock"
    return value


def _array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    items: list[Any] = (
        [instance_of(sub, root, depth + 1) for sub in prefix] if isinstance(prefix, list) else []
    )
    minimum = schema.get("minItems")
    count = minimum if isinstance(minimum, int) and minimum > 0 else 0
    if count > len(items):
        element = instance_of(schema.get("items", {}), root, depth + 1)
        items.extend([element] * (count - len(items)))
    return items


def _string(schema: dict[str, Any], root: Any, depth: int) -> str:
    text = _FORMATS.get(str(schema.get("format")), "mock")
    minimum = schema.get("minLength")
    if isinstance(minimum, int) and len(text) < minimum:
        text = text + "x" * (minimum - len(text))
    maximum = schema.get("maxLength")
    if isinstance(maximum, int) and len(text) > maximum:
        text = text[:maximum]
    return text


def _number(schema: dict[str, Any], root: Any, depth: int) -> float | int:
    integer = schema.get("type") == "integer" or (
        isinstance(schema.get("type"), list) and "integer" in schema["type"]
    )
    low = schema.get("minimum")
    low_open = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    high_open = schema.get("exclusiveMaximum")
    value: float = 1
    if isinstance(low, int | float):
        value = max(value, low)
    if isinstance(low_open, int | float) and value <= low_open:
        value = math.floor(low_open) + 1 if integer else low_open + 0.5
    if isinstance(high, int | float):
        value = min(value, high)
    if isinstance(high_open, int | float) and value >= high_open:
        value = math.ceil(high_open) - 1 if integer else high_open - 0.5
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        value = math.ceil(value / multiple) * multiple
    return int(value) if integer else value


_BY_TYPE = {
    "object": _object,
    "array": _array,
    "string": _string,
    "number": _number,
    "integer": _number,
    "boolean": lambda schema, root, depth: True,
    "null": lambda schema, root, depth: None,
}
