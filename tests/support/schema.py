"""Enough JSON Schema to check answers against an OpenAPI document's schemas (no dependency).

Supports ``$ref`` (to ``#/components/schemas/...``), ``type``, ``properties``, ``required``,
``additionalProperties`` (false or a schema), ``items``, ``minItems``, ``maxItems``,
``minimum`` and ``enum``; anything else in a schema is an error, so a schema never
silently checks less than it says.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SchemaError", "validate"]

_KNOWN = {
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "enum",
    "description",
}
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


class SchemaError(AssertionError):
    pass


def _isType(value: Any, kind: str | list[str]) -> bool:
    if isinstance(kind, list):  # OpenAPI 3.1: one of several types ("string" or "null")
        return any(_isType(value, k) for k in kind)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def validate(value: Any, schema: dict[str, Any], document: dict[str, Any], where: str = "$") -> None:
    """Raise :class:`SchemaError` naming the first place ``value`` breaks ``schema``."""
    unknown = set(schema) - _KNOWN
    if unknown:
        raise SchemaError(f"{where}: schema keywords this checker does not know: {sorted(unknown)}")
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        validate(value, document["components"]["schemas"][name], document, where)
        return
    kind = schema.get("type")
    if kind is not None and not _isType(value, kind):
        raise SchemaError(f"{where}: {value!r} is not of type {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        raise SchemaError(f"{where}: {value!r} < {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise SchemaError(f"{where}: {name} is required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                validate(item, properties[name], document, f"{where}.{name}")
            elif extra is False:
                raise SchemaError(f"{where}: {name} is not allowed")
            elif isinstance(extra, dict):
                validate(item, extra, document, f"{where}.{name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            raise SchemaError(f"{where}: {len(value)} items is out of bounds")
        for i, item in enumerate(value):
            if "items" in schema:
                validate(item, schema["items"], document, f"{where}[{i}]")
