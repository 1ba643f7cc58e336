"""JSON values that fit a JSON Schema (or, on purpose, do not), chosen deterministically.

The simulator answers tool calls and structured-output requests with JSON a
real model would write: an instance of the schema the client sent. Tests
check it with a real validator (``jsonschema``), so this module only has to
*generate*, never validate. Supported, which covers what tool and response
schemas use in practice:

* ``type`` (a name or a list: the first non-null one is used; absent, it is
  inferred from ``properties`` / ``items``, else a string is written);
* objects: every property in ``properties`` (below depth 6 only the
  ``required`` ones), ``additionalProperties`` never needed;
* arrays: ``items``, ``prefixItems``, ``minItems`` / ``maxItems`` (two items
  by default, never more than ``MAX_ITEMS``), ``uniqueItems``;
* strings: ``enum``, ``const``, ``minLength`` / ``maxLength``, ``format``
  (date-time, date, time, email, uri, uuid, ipv4), ``pattern`` for patterns
  one of a few candidates fits;
* numbers and integers: ``minimum`` / ``maximum`` and their exclusive forms,
  ``multipleOf``;
* ``anyOf`` / ``oneOf`` (the first non-null branch), ``allOf`` (merged),
  local ``$ref`` (``#/$defs/...``, ``#/definitions/...``).

The same schema and seed always give the same value; the seed comes from the
request, so two different requests get different (still fitting) values.
:func:`misfit` gives a value that does *not* fit, for ``[[json:invalid]]``.
:func:`strict_violation` and :func:`schema_error` are the request checks the
providers make before answering.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

MAX_DEPTH = 6  # deeper than this, objects keep only their required properties
MAX_REF_DEPTH = 16  # a recursive $ref stops here (then an empty object or string is written)
DEFAULT_ITEMS = 2
# Bounds on one value, so a schema asking for a billion items cannot exhaust memory (the
# value then breaks the schema, which no real answer could fit anyway).
MAX_ITEMS = 64
MAX_STRING = 4096
MAX_VALUES = 100_000  # values, plus characters of strings, in one instance
_WORDS = ("relay", "switch", "signal", "yard", "track", "route", "token", "answer")
_FORMATS = {
    "date-time": "2026-01-01T12:00:00Z",
    "date": "2026-01-01",
    "time": "12:00:00",
    "email": "sim@example.com",
    "uri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "ipv4": "192.0.2.1",
    "hostname": "example.com",
}
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")

Schema = Mapping[str, Any]


def _unit(seed: bytes, label: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``label``."""
    digest = hashlib.blake2b(label.encode() + seed, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class _Generator:
    """One generation: the root (for $ref), the seed, and what is left of the size budget."""

    __slots__ = ("_left", "_root", "_seed")

    def __init__(self, root: Schema, seed: bytes) -> None:
        self._root = root
        self._seed = seed
        self._left = MAX_VALUES

    def value(self, schema: object, path: str, depth: int = 0, refs: int = 0) -> object:
        self._left -= 1
        if not isinstance(schema, Mapping):
            return self._string({}, path)  # `true` / `{}`: anything fits, write a word
        ref = schema.get("$ref")
        if isinstance(ref, str) and refs < MAX_REF_DEPTH:
            return self.value(self._resolve(ref), path, depth, refs + 1)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[int(_unit(self._seed, path) * len(enum))]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self.value(_first_non_null(branches), path, depth, refs)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self.value(_merge(schema, all_of), path, depth, refs)
        kind = _kind(schema)
        if kind == "object":
            return self._object(schema, path, depth, refs)
        if kind == "array":
            return self._array(schema, path, depth, refs)
        if kind == "integer":
            return self._integer(schema, path)
        if kind == "number":
            return self._number(schema, path)
        if kind == "boolean":
            return _unit(self._seed, path) < 0.5
        if kind == "null":
            return None
        return self._string(schema, path)

    def _resolve(self, ref: str) -> object:
        if not ref.startswith("#"):
            return {}
        node: object = self._root
        for token in ref[1:].split("/")[1:] if ref != "#" else ():
            key = token.replace("~1", "/").replace("~0", "~")
            node = node.get(key, {}) if isinstance(node, Mapping) else {}
        return node

    def _object(self, schema: Schema, path: str, depth: int, refs: int) -> dict[str, object]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        required = schema.get("required")
        needed = set(required) if isinstance(required, list) else set()
        return {
            name: self.value(sub, f"{path}.{name}", depth + 1, refs)
            for name, sub in properties.items()
            if depth < MAX_DEPTH or name in needed
        }

    def _array(self, schema: Schema, path: str, depth: int, refs: int) -> list[object]:
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        low = _int(schema.get("minItems"), 0)
        high = _int(schema.get("maxItems"), max(low, len(prefix), DEFAULT_ITEMS))
        count = min(max(low, len(prefix), min(DEFAULT_ITEMS, high)), high, MAX_ITEMS)
        if self._left <= 0:  # a schema that asks for a huge value gets a short one instead
            count = 0
        items = schema.get("items", {})
        values: list[object] = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            enum = sub.get("enum") if isinstance(sub, Mapping) else None
            if schema.get("uniqueItems") is True and isinstance(enum, list) and enum:
                value = enum[i % len(enum)]  # distinct as long as the enum allows
            else:
                value = self.value(sub, f"{path}[{i}]", depth + 1, refs)
            if schema.get("uniqueItems") is True:
                for attempt in range(32):  # a fresh label gives a fresh draw
                    if value not in values:
                        break
                    value = self.value(sub, f"{path}[{i}]#{attempt}", depth + 1, refs)
            values.append(value)
        return values

    def _integer(self, schema: Schema, path: str) -> int:
        low, high = (int(bound) for bound in _bounds(schema, integer=True))
        value = low + int(_unit(self._seed, path) * (high - low + 1))
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            value = -(-value // step) * step
            if value > high:
                value -= step
        return value

    def _number(self, schema: Schema, path: str) -> float | int:
        low, high = _bounds(schema, integer=False)
        step = schema.get("multipleOf")
        if _is_number(step) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            multiple: float = (
                first + int(_unit(self._seed, path) * (max(last - first, 0) + 1))
            ) * step
            return int(multiple) if float(multiple).is_integer() else multiple
        value = round(low + _unit(self._seed, path) * (high - low), 2)
        return min(max(value, low), high)

    def _string(self, schema: Schema, path: str) -> str:
        fmt = schema.get("format")
        if fmt == "uuid":
            value = str(
                uuid.UUID(
                    bytes=hashlib.blake2b(self._seed + path.encode(), digest_size=16).digest()
                )
            )
        elif isinstance(fmt, str) and fmt in _FORMATS:
            value = _FORMATS[fmt]
        else:
            name = path.rsplit(".", 1)[-1].split("[", 1)[0] or "value"
            word = _WORDS[int(_unit(self._seed, path) * len(_WORDS))]
            value = f"simulated {name} {word}"
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            value = _matching(pattern, value)
        low = min(_int(schema.get("minLength"), 0), MAX_STRING, max(self._left, 0))
        high = _int(schema.get("maxLength"), max(low, len(value)))
        if len(value) < low:
            value += "x" * (low - len(value))
        self._left -= len(value)  # long strings spend the budget too
        return value[:high]


def _kind(schema: Schema) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _first_non_null(branches: list[object]) -> object:
    for branch in branches:
        if not (isinstance(branch, Mapping) and branch.get("type") == "null"):
            return branch
    return branches[0]


def _merge(schema: Schema, parts: list[object]) -> dict[str, Any]:
    """``allOf`` flattened into one schema: properties and required lists united."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[Any] = list(merged.get("required") or [])
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, Mapping):
                properties.update(value)
            elif key == "required" and isinstance(value, list):
                required.extend(v for v in value if v not in required)
            else:
                merged.setdefault(key, value)
    if properties:
        merged["properties"] = properties
    if required:
        merged["required"] = required
    return merged


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _bounds(schema: Schema, *, integer: bool) -> tuple[float, float]:
    """The closed range a number must fall in (1..100 when the schema sets no bound)."""
    low, high = _number_or_none(schema.get("minimum")), _number_or_none(schema.get("maximum"))
    ex_low = _number_or_none(schema.get("exclusiveMinimum"))
    ex_high = _number_or_none(schema.get("exclusiveMaximum"))
    nudge = 1 if integer else 0.01
    if ex_low is not None and (low is None or ex_low >= low):
        low = ex_low + nudge
    if ex_high is not None and (high is None or ex_high <= high):
        high = ex_high - nudge
    if low is None:
        low = 1 if high is None else min(1, high)
    if high is None:
        high = max(100, low)
    if integer:
        low, high = math.ceil(low), math.floor(high)
    return low, max(low, high)


def _number_or_none(value: object) -> float | None:
    return value if _is_number(value) else None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matching(pattern: str, fallback: str) -> str:
    """A value ``pattern`` accepts, from a few candidates; ``fallback`` if none fits."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return fallback
    for candidate in (fallback, "simulated", "SIM", "A1", "a", "1", "2026-01-01", "sim_1"):
        if compiled.search(candidate):
            return candidate
    return fallback


def instance(schema: object, seed: bytes) -> object:
    """A JSON value that fits ``schema``, fixed by ``seed``."""
    root = schema if isinstance(schema, Mapping) else {}
    return _Generator(root, seed).value(schema, "$")


# A value of each type that no other type's schema accepts (integers are numbers too).
_WRONG = {
    "object": ["not", "an", "object"],
    "array": {"not": "an array"},
    "string": 404,
    "integer": "not an integer",
    "number": "not a number",
    "boolean": "not a boolean",
    "null": "not null",
}


def misfit(schema: object, seed: bytes) -> object:
    """A JSON value that does *not* fit ``schema``; ValueError when every value fits.

    The break is one a real model makes: a required property left out, a
    property of the wrong type, or an answer of the wrong type altogether.
    """
    if not isinstance(schema, Mapping):  # `true`: every value fits
        raise ValueError("the schema accepts any JSON value")  # noqa: TRY004
    valid = instance(schema, seed)
    required = schema.get("required")
    if isinstance(valid, dict) and isinstance(required, list) and required:
        valid.pop(required[0], None)
        return valid
    properties = schema.get("properties")
    if isinstance(valid, dict) and isinstance(properties, Mapping):
        for name, sub in properties.items():
            kind = _kind(sub) if isinstance(sub, Mapping) else None
            if kind in _WRONG and name in valid:
                valid[name] = _WRONG[kind]
                return valid
    kind = _kind(schema)
    if kind in _WRONG:
        return _WRONG[kind]
    raise ValueError("the schema accepts any JSON value")


def strict_violation(schema: object, context: Sequence[str] = ()) -> str | None:
    """Why ``schema`` breaks OpenAI's strict-mode rules, in OpenAI's words; None if it keeps them.

    Strict mode wants every object closed (``additionalProperties: false``)
    and every property listed in ``required``.
    """
    if not isinstance(schema, Mapping):
        return None
    where = "context=(" + ", ".join(repr(part) for part in context) + ")"
    if _kind(schema) == "object":
        if schema.get("additionalProperties") is not False:
            return f"In {where}, 'additionalProperties' is required to be supplied and to be false."
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        missing = [name for name in properties if name not in required]
        if missing:
            return (
                f"In {where}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    children: list[tuple[tuple[str, ...], object]] = []
    for key in ("properties", "$defs", "definitions"):
        group = schema.get(key)
        if isinstance(group, Mapping):
            children.extend(((*context, key, name), sub) for name, sub in group.items())
    if "items" in schema:
        children.append(((*context, "items"), schema["items"]))
    for key in ("anyOf", "oneOf", "allOf"):
        group = schema.get(key)
        if isinstance(group, list):
            children.extend(((*context, key, str(i)), sub) for i, sub in enumerate(group))
    for path, sub in children:
        if reason := strict_violation(sub, path):
            return reason
    return None


def schema_error(schema: object) -> str | None:
    """Why ``schema`` is no valid JSON Schema (draft 2020-12), or None when it is one."""
    if not isinstance(schema, Mapping):
        return "a schema must be a JSON object"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None and not all(k in _TYPES for k in kinds):
        return f"{kind!r} is not a valid JSON Schema type (use one of {', '.join(_TYPES)})"
    # Imported here: only requests that carry a schema pay for the validator's import.
    from jsonschema import Draft202012Validator, SchemaError  # noqa: PLC0415

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return exc.message
    return None
