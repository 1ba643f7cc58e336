"""Schema instances: whatever the seed, the value fits (or, from misfit, does not)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from server.simulator.instances import instance, misfit, schema_error, strict_violation

from .helpers import WEATHER_SCHEMA

SCHEMAS: dict[str, dict[str, Any]] = {
    "weather": WEATHER_SCHEMA,
    "scalars": {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "mail": {"type": "string", "format": "email"},
            "link": {"type": "string", "format": "uri"},
            "id": {"type": "string", "format": "uuid"},
            "code": {"type": "string", "pattern": "^[A-Z]+$"},
            "short": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 40},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "step": {"type": "number", "multipleOf": 0.5, "minimum": 2, "maximum": 4},
            "even": {"type": "integer", "multipleOf": 2, "minimum": 3, "maximum": 9},
            "fixed": {"const": "exactly this"},
            "maybe": {"type": ["null", "integer"]},
            "flag": {"type": "boolean"},
            "nothing": {"type": "null"},
        },
        "required": ["when", "id", "ratio", "even", "fixed"],
    },
    "combinators": {
        "type": "object",
        "properties": {
            "either": {"anyOf": [{"type": "null"}, {"type": "string", "enum": ["a", "b"]}]},
            "one": {"oneOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                    {"properties": {"y": {"type": "string"}}, "required": ["y"]},
                ]
            },
        },
        "required": ["either", "one", "both"],
    },
    "refs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            },
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["name"],
            },
        },
        "type": "object",
        "properties": {
            "path": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 3},
            "tree": {"$ref": "#/$defs/node"},
        },
        "required": ["path", "tree"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "unique": {
                "type": "array",
                "items": {"enum": [1, 2, 3]},
                "uniqueItems": True,
                "minItems": 3,
            },
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
            "none": {"type": "array", "maxItems": 0},
        },
        "required": ["unique", "pair", "none"],
    },
    "top_level_array": {
        "type": "array",
        "items": {"type": "integer", "minimum": -3, "maximum": -1},
    },
}


@pytest.mark.parametrize("name", list(SCHEMAS))
@settings(max_examples=40, deadline=None)
@given(seed=st.binary(max_size=16))
def test_instances_fit_their_schema_for_any_seed(name: str, seed: bytes) -> None:
    schema = SCHEMAS[name]
    value = instance(schema, seed)
    errors = [error.message for error in Draft202012Validator(schema).iter_errors(value)]
    assert errors == []
    assert instance(schema, seed) == value  # deterministic


@pytest.mark.parametrize(
    "name", ["weather", "scalars", "combinators", "refs", "arrays", "top_level_array"]
)
def test_misfits_do_not_fit(name: str) -> None:
    schema = SCHEMAS[name]
    assert not Draft202012Validator(schema).is_valid(misfit(schema, b"seed"))


def test_misfit_refuses_a_schema_that_accepts_everything() -> None:
    for schema in ({}, {"description": "anything"}, True):
        with pytest.raises(ValueError, match="accepts any JSON value"):
            misfit(schema, b"")


def test_seeds_change_values() -> None:
    values = {str(instance(WEATHER_SCHEMA, bytes([i]))) for i in range(20)}
    assert len(values) > 10


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {}}, "'additionalProperties' is required"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": False,
            },
            "Missing 'a'.",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "object", "properties": {}}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "In context=('properties', 'a'), 'additionalProperties' is required",
        ),
        (WEATHER_SCHEMA, None),
    ],
)
def test_strict_violations(schema: dict[str, Any], reason: str | None) -> None:
    found = strict_violation(schema)
    assert (found is None) if reason is None else (found is not None and reason in found)


def test_schema_errors() -> None:
    assert schema_error(WEATHER_SCHEMA) is None
    assert schema_error({"type": "object", "required": "city"}) == "'city' is not of type 'array'"
    assert schema_error([]) == "a schema must be a JSON object"


def test_huge_schemas_get_bounded_values() -> None:
    nested: dict[str, Any] = {"type": "string", "minLength": 10**9}
    for _ in range(8):
        nested = {"type": "array", "items": nested, "minItems": 10**6}
    value = instance(nested, b"")
    size = len(str(value))
    assert 0 < size < 10**7
