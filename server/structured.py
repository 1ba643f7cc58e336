"""Structured output: JSON Schemas checked on arrival, and answers checked against them.

Pure: no I/O. `schema_problem` runs once per request in ``convert.py`` (a
schema that is not a valid JSON Schema is the caller's INVALID_ARGUMENT, not a
relay's 400 later); `check` runs once per answer in the relay attempt.

    >>> fmt = ResponseFormat(ResponseKind.JSON_SCHEMA, schema={
    ...     "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    >>> check(fmt, '{"n": 3}') is None
    True
    >>> check(fmt, '{"n": "three"}')
    '$.n is not of type "integer"'

What `check` says about a failure names the schema's rules and the path into
the answer, never the answer's values: it ends up in attempt records, logs
and traces, which must not carry completions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from server.domain import ResponseFormat

_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


# The drafts whose meta-schemas jsonschema-rs holds. A schema naming any other `$schema`
# is checked as 2020-12 (as jsonschema's validator_for does): jsonschema-rs would fetch
# an unknown meta-schema over the network, which a caller must never make the gateway do.
_DRAFTS = frozenset(
    {
        "http://json-schema.org/draft-04/schema",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-07/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    }
)


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why `schema` is not a valid JSON Schema (its own `$schema` draft, else 2020-12),
    or None when it is.

    Checked by jsonschema-rs, about 1 us per property: jsonschema's own check resolves
    the 2020-12 meta-schema's dynamic references at every node (about 0.7 ms each), so a
    tool with 1,000 parameters held the event loop for most of a second.
    """
    named = schema.get("$schema")
    checked = schema if isinstance(schema, dict) else dict(schema)
    if isinstance(named, str) and named.rstrip("#") not in _DRAFTS:
        checked = {key: value for key, value in schema.items() if key != "$schema"}
    try:
        jsonschema_rs.meta.validate(checked)
    except jsonschema_rs.ValidationError as error:
        path = list(error.instance_path)
        return f"at {_path(path)}: {error.message}" if path else error.message
    except (jsonschema_rs.ReferencingError, ValueError) as error:
        return f"it cannot be checked: {str(error).splitlines()[0][:200]}"
    return None


def check(fmt: ResponseFormat, text: str) -> str | None:
    """Where `text` fails `fmt` (not JSON, not an object, or against the schema), or None."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        return f"the text is not JSON ({error.msg} at character {error.pos})"
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), "a number")
        return f"the text is {kind}, not a JSON object"
    schema = fmt.schema
    if schema is None:
        return None
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    failure = best_match(validator.iter_errors(value))
    return None if failure is None else _describe(failure)


def _describe(error: ValidationError) -> str:
    """One failure, by the schema's terms: the path, the rule, and what the rule wants."""
    where = _path(error.absolute_path)
    rule = error.validator
    wanted = error.validator_value
    if rule == "required" and isinstance(error.instance, dict) and isinstance(wanted, list):
        missing = [name for name in wanted if name not in error.instance]
        if missing:
            return f"{where} lacks the required property {missing[0]!r}"
    if rule == "type":
        return f"{where} is not of type {orjson.dumps(wanted).decode()}"
    if rule == "additionalProperties":
        return f"{where} has properties the schema does not allow"
    if rule in ("enum", "const"):
        return f"{where} is not one of the values the schema allows"
    if isinstance(wanted, int | float | str | bool):
        return f"{where} fails the schema's {rule!r} rule ({wanted!r})"
    return f"{where} fails the schema's {rule!r} rule"


def _path(path: Any) -> str:
    """A JSONPath-like address into the answer: $, $.name, $.items[2]."""
    steps = [f"[{step}]" if isinstance(step, int) else f".{step}" for step in path]
    return "$" + "".join(steps)
