"""JSON Schema, as OpenAI clients write it, reduced to the Schema object Gemini accepts.

Gemini's `Schema` (function parameters, `responseSchema`) is a select subset of
OpenAPI 3.0, and Google rejects a request whose schema holds a field outside it
("Unknown name ...") or a JSON Schema form it does not know (type arrays, `$ref`).
Tools written for OpenAI and Pydantic-generated response formats use exactly those
forms, so the schema is rewritten rather than forwarded: references are inlined,
`["string", "null"]` becomes `nullable`, `oneOf`/`const` become `anyOf`/`enum`, and
what Gemini has no field for (`additionalProperties`, `$schema`, `exclusiveMinimum`,
`uniqueItems`, ...) is dropped — a validation hint the model no longer sees, never
a request the provider refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Fields of Gemini's Schema object kept as they are (after their values are cleaned).
_SCALAR_FIELDS = frozenset(
    {
        "title",
        "description",
        "nullable",
        "default",
        "example",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
    }
)
_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
# Formats Gemini acts on; others have been refused by some models ("only 'enum' and
# 'date-time' are supported for STRING type"), so they are dropped.
_FORMATS = {
    "STRING": frozenset({"enum", "date-time"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}
# A reference cycle (a tree type) cannot be inlined; past this depth it ends in an
# open object, which Gemini accepts.
_MAX_DEPTH = 16


def clean_schema(schema: Mapping[str, Any], *, ordered: bool = False) -> dict[str, Any]:
    """Gemini's form of the JSON Schema `schema`.

    `ordered` adds `propertyOrdering` (the properties' order in `schema`), which
    makes Gemini write structured output's keys in the order the caller declared.
    """
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        found = schema.get(key)
        if isinstance(found, Mapping):
            defs.update(found)
    return _Cleaner(defs, ordered).clean(schema, 0, ())


class _Cleaner:
    __slots__ = ("_defs", "_ordered")

    def __init__(self, defs: Mapping[str, Any], ordered: bool) -> None:
        self._defs = defs
        self._ordered = ordered

    def clean(self, node: Any, depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(node, Mapping):
            return {}  # `true` / `{}`: anything goes, which Gemini says by saying nothing
        node = _merge_all_of(node)
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            target = self._defs.get(name)
            if name in refs or depth >= _MAX_DEPTH or not isinstance(target, Mapping):
                return {"type": "OBJECT", **_notes(node)}
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return self.clean({**target, **siblings}, depth + 1, (*refs, name))
        out: dict[str, Any] = {}
        nullable = False
        kind = node.get("type")
        if isinstance(kind, list):
            names = [t for t in kind if isinstance(t, str)]
            nullable = "null" in names
            names = [t for t in names if t != "null"]
            if len(names) > 1:
                variants = [self.clean({**node, "type": t}, depth + 1, refs) for t in names]
                out = {"anyOf": variants}
                if nullable:
                    out["nullable"] = True
                return out
            kind = names[0] if names else None
        if kind == "null":
            nullable, kind = True, None
        gemini_type = _TYPES.get(kind) if isinstance(kind, str) else None
        if gemini_type is not None:
            out["type"] = gemini_type
        for key, value in node.items():
            if key in _SCALAR_FIELDS:
                out[key] = value
        variants = node.get("anyOf", node.get("oneOf"))
        if isinstance(variants, list):
            cleaned = []
            for variant in variants:
                if isinstance(variant, Mapping) and variant.get("type") == "null":
                    nullable = True
                else:
                    cleaned.append(self.clean(variant, depth + 1, refs))
            if len(cleaned) == 1:
                out = {**cleaned[0], **out}  # the outer description wins
            elif cleaned:
                out["anyOf"] = cleaned
        if "const" in node:
            node = {**node, "enum": [node["const"]]}
        enum = node.get("enum")
        if isinstance(enum, list):
            values = [v for v in enum if v is not None]
            nullable = nullable or len(values) < len(enum)
            out["enum"] = [v if isinstance(v, str) else _text(v) for v in values]
            if "type" not in out or all(isinstance(v, str) for v in values):
                out["type"] = "STRING"
            if out["type"] != "STRING":
                out["format"] = "enum"
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), ()):
            out.setdefault("format", fmt)
        props = node.get("properties")
        if isinstance(props, Mapping) and props:
            out["properties"] = {str(k): self.clean(v, depth + 1, refs) for k, v in props.items()}
            out.setdefault("type", "OBJECT")
            if self._ordered and len(props) > 1:
                out["propertyOrdering"] = [str(k) for k in props]
            required = node.get("required")
            if isinstance(required, list):
                present = [r for r in required if isinstance(r, str) and r in props]
                if present:
                    out["required"] = present
        items = node.get("items")
        if isinstance(items, Mapping):
            out["items"] = self.clean(items, depth + 1, refs)
            out.setdefault("type", "ARRAY")
        elif isinstance(items, list) and items:
            tuple_items = [self.clean(i, depth + 1, refs) for i in items]
            out["items"] = tuple_items[0] if len(tuple_items) == 1 else {"anyOf": tuple_items}
            out.setdefault("type", "ARRAY")
        if nullable:
            out["nullable"] = True
        return out


def _merge_all_of(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """`allOf` folded into its parent: properties and required lists joined, the first
    value of any other key kept (Gemini has no intersection type)."""
    parts = node.get("allOf")
    if not isinstance(parts, list):
        return node
    merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, Mapping):
                merged["properties"] = {**value, **(merged.get("properties") or {})}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*(merged.get("required") or []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _notes(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: node[k] for k in ("title", "description") if isinstance(node.get(k), str)}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
