"""Structured output on both wires: JSON that fits the schema, JSON that breaks it on demand."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from .helpers import (
    GPT,
    WEATHER_SCHEMA,
    anthropic_body,
    anthropic_tokens,
    openai_body,
    openai_tokens,
    parse_sse,
)

OPENAI = "/chat/completions"
ANTHROPIC = "/messages"
WEATHER = Draft202012Validator(WEATHER_SCHEMA)


def json_schema_format(schema: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": schema, "strict": strict},
    }


async def test_openai_json_schema_answer_fits_unary_and_streamed(client: httpx.AsyncClient) -> None:
    body = openai_body("Weather in Lyon", response_format=json_schema_format(WEATHER_SCHEMA))
    answer = (await client.post(OPENAI, json=body)).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop"
    text = choice["message"]["content"]
    assert WEATHER.is_valid(orjson.loads(text))

    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    events = parse_sse((await client.post(OPENAI, json=stream)).text)
    tokens = openai_tokens(events)
    assert "".join(tokens) == text  # the same request, the same JSON
    assert tokens[0] == '{"'  # a key split across deltas, as a model writes it
    assert events[-2].json()["usage"]["completion_tokens"] == len(tokens)
    assert answer["usage"]["completion_tokens"] == len(tokens)


async def test_openai_json_invalid_directive_breaks_the_schema(client: httpx.AsyncClient) -> None:
    body = openai_body("Lyon [[json:invalid]]", response_format=json_schema_format(WEATHER_SCHEMA))
    text = (await client.post(OPENAI, json=body)).json()["choices"][0]["message"]["content"]
    value = orjson.loads(text)  # still JSON...
    assert not WEATHER.is_valid(value)  # ...that does not fit
    assert "city" not in value  # the first required property is left out


async def test_json_invalid_naming_a_model_breaks_only_that_models_answer(
    client: httpx.AsyncClient,
) -> None:
    prompt = f"Lyon [[json:invalid:{GPT}]]"
    schema = json_schema_format(WEATHER_SCHEMA)
    named = openai_body(prompt, response_format=schema)
    other = openai_body(prompt, model="deepseek-v3.2", response_format=schema)
    broken = (await client.post(OPENAI, json=named)).json()["choices"][0]["message"]["content"]
    fitting = (await client.post(OPENAI, json=other)).json()["choices"][0]["message"]["content"]
    assert not WEATHER.is_valid(orjson.loads(broken))
    assert WEATHER.is_valid(orjson.loads(fitting))
    wrong = openai_body("Lyon [[json:broken]]", response_format=schema)
    refused = await client.post(OPENAI, json=wrong)
    assert refused.status_code == 400 and "[[json:invalid:MODEL]]" in refused.text


async def test_openai_json_object(client: httpx.AsyncClient) -> None:
    body = openai_body("Answer in JSON please", response_format={"type": "json_object"})
    text = (await client.post(OPENAI, json=body)).json()["choices"][0]["message"]["content"]
    assert isinstance(orjson.loads(text), dict)
    broken = openai_body("JSON please [[json:invalid]]", response_format={"type": "json_object"})
    text = (await client.post(OPENAI, json=broken)).json()["choices"][0]["message"]["content"]
    assert not isinstance(orjson.loads(text), dict)


async def test_max_tokens_cuts_json_short(client: httpx.AsyncClient) -> None:
    body = openai_body("Lyon", response_format=json_schema_format(WEATHER_SCHEMA), max_tokens=5)
    choice = (await client.post(OPENAI, json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(choice["message"]["content"])


@pytest.mark.parametrize(
    ("response_format", "messages_text", "fragment", "param"),
    [
        (
            {"type": "xml"},
            "x",
            "Supported values are: 'text', 'json_object', and 'json_schema'",
            "response_format.type",
        ),
        ({"type": "json_object"}, "no such word", "must contain the word 'json'", "messages"),
        (
            {"type": "json_schema"},
            "x",
            "'response_format.json_schema'",
            "response_format.json_schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "x",
            "'response_format.json_schema.name'",
            "response_format.json_schema.name",
        ),
        (
            json_schema_format({"type": "object", "properties": {"a": {"type": "string"}}}),
            "x",
            "Invalid schema for response_format 'weather': In context=(), 'additionalProperties' "
            "is required to be supplied and to be false.",
            "response_format.json_schema.schema",
        ),
        (
            json_schema_format(
                {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "additionalProperties": False,
                }
            ),
            "x",
            "'required' is required to be supplied and to be an array including every key in "
            "properties. Missing 'a'.",
            "response_format.json_schema.schema",
        ),
        (
            json_schema_format({"type": "array", "items": {"type": "string"}}),
            "x",
            "schema must be a JSON Schema of 'type: \"object\"'",
            "response_format.json_schema.schema",
        ),
        (
            json_schema_format({"type": "strng"}, strict=False),
            "x",
            "'strng' is not a valid JSON Schema type",
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_openai_invalid_response_formats_are_400(
    client: httpx.AsyncClient,
    response_format: dict[str, Any],
    messages_text: str,
    fragment: str,
    param: str,
) -> None:
    body = openai_body(messages_text, response_format=response_format)
    response = await client.post(OPENAI, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["param"] == param


async def test_json_invalid_needs_a_format_it_can_break(client: httpx.AsyncClient) -> None:
    response = await client.post(OPENAI, json=openai_body("x [[json:invalid]]"))
    assert response.status_code == 400
    assert "asks for no JSON output format" in response.json()["error"]["message"]
    anything = openai_body(
        "x [[json:invalid]]", response_format=json_schema_format({}, strict=False)
    )
    response = await client.post(OPENAI, json=anything)
    assert response.status_code == 400
    assert "accepts any JSON value" in response.json()["error"]["message"]


@pytest.mark.parametrize("field", ["output_config", "output_format"])
async def test_anthropic_structured_output(client: httpx.AsyncClient, field: str) -> None:
    spec: dict[str, Any] = {"type": "json_schema", "schema": WEATHER_SCHEMA}
    value: dict[str, Any] = {"format": spec} if field == "output_config" else spec
    body = {**anthropic_body("Weather in Lyon"), field: value}
    message = (await client.post(ANTHROPIC, json=body)).json()
    assert message["stop_reason"] == "end_turn"
    [block] = message["content"]
    assert block["type"] == "text"
    assert WEATHER.is_valid(orjson.loads(block["text"]))
    events = parse_sse((await client.post(ANTHROPIC, json={**body, "stream": True})).text)
    assert "".join(anthropic_tokens(events)) == block["text"]
    broken = {**anthropic_body("Lyon [[json:invalid]]"), field: value}
    text = (await client.post(ANTHROPIC, json=broken)).json()["content"][0]["text"]
    assert not WEATHER.is_valid(orjson.loads(text))


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (
            {"output_config": {"format": {"type": "json"}}},
            "output_config.format.type: Input should be 'json_schema'",
        ),
        (
            {"output_config": {"format": {"type": "json_schema"}}},
            "output_config.format.schema: Field required",
        ),
        (
            {
                "output_format": {
                    "type": "json_schema",
                    "schema": {"type": "object", "properties": []},
                }
            },
            "output_format.schema: JSON schema is invalid",
        ),
    ],
)
async def test_anthropic_invalid_output_formats_are_400(
    client: httpx.AsyncClient, extra: dict[str, Any], fragment: str
) -> None:
    response = await client.post(ANTHROPIC, json=anthropic_body("x", **extra))
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_same_request_same_json_other_request_other_values(client: httpx.AsyncClient) -> None:
    fmt = json_schema_format(WEATHER_SCHEMA)
    one = [
        (await client.post(OPENAI, json=openai_body("Lyon", response_format=fmt))).json()
        for _ in range(2)
    ]
    other = (
        await client.post(OPENAI, json=openai_body("Oslo", model=GPT, response_format=fmt))
    ).json()
    texts = [answer["choices"][0]["message"]["content"] for answer in (*one, other)]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]
