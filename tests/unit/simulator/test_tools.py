"""Tool calls on both wires over real sockets: shapes, streams, choices, round trips, refusals."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from server.simulator import RelaySimulator

from .helpers import (
    GPT,
    SONNET,
    WEATHER_SCHEMA,
    anthropic_body,
    anthropic_stream_blocks,
    anthropic_tools,
    openai_body,
    openai_stream_calls,
    openai_tools,
    parse_sse,
)

OPENAI = "/chat/completions"
ANTHROPIC = "/messages"
WEATHER = Draft202012Validator(WEATHER_SCHEMA)


def fits(arguments: object) -> bool:
    return WEATHER.is_valid(arguments)


# --- OpenAI ---------------------------------------------------------------------------


async def test_openai_tool_call_unary(client: httpx.AsyncClient) -> None:
    body = openai_body("Weather in Lyon? [[tool:get_weather]]", tools=openai_tools("get_weather"))
    answer = (await client.post(OPENAI, json=body)).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert isinstance(call["function"]["arguments"], str)  # JSON text, as OpenAI sends it
    assert fits(orjson.loads(call["function"]["arguments"]))


async def test_openai_parallel_calls_stream_interleaved_and_split_mid_token(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    tools = openai_tools("get_weather", "get_time")
    prompt = "Lyon and Oslo [[tools:get_weather,get_weather,get_time]]"
    unary = (await client.post(OPENAI, json=openai_body(prompt, tools=tools))).json()
    body = openai_body(prompt, tools=tools, stream=True, stream_options={"include_usage": True})
    events = parse_sse((await client.post(OPENAI, json=body)).text)

    deltas = [
        (delta["index"], delta)
        for event in events[:-1]
        for choice in event.json()["choices"]
        for delta in choice["delta"].get("tool_calls") or []
    ]
    firsts = [delta for _, delta in deltas if "id" in delta]
    assert [d["index"] for d in firsts] == [0, 1, 2]
    assert all(d["type"] == "function" and d["function"]["arguments"] == "" for d in firsts)
    # Interleaved by index: index 0's fragments do not all come before index 1's.
    order = [index for index, delta in deltas if "id" not in delta]
    assert order != sorted(order)
    # Split mid-token: the first fragment of each call ends inside its first key.
    first_fragment = next(d["function"]["arguments"] for i, d in deltas if i == 0 and "id" not in d)
    assert first_fragment.startswith('{"') and not first_fragment.endswith('"')

    calls = openai_stream_calls(events)
    assert [(c["id"], c["name"], c["arguments"]) for c in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in unary["choices"][0]["message"]["tool_calls"]
    ]
    assert len({c["id"] for c in calls}) == 3
    assert all(fits(orjson.loads(c["arguments"])) for c in calls[:2])
    assert calls[0]["arguments"] != calls[1]["arguments"]  # each call draws its own values
    finish = [c["finish_reason"] for e in events[:-1] for c in e.json()["choices"]]
    assert finish[-1] == "tool_calls"
    usage = events[-2].json()["usage"]
    assert usage["completion_tokens"] == unary["usage"]["completion_tokens"]
    # One token per first delta and per non-empty fragment: what the stream carried.
    sent = sum(1 for _, d in deltas if "id" in d or d["function"]["arguments"])
    assert usage["completion_tokens"] == sent
    stats = await simulator.wait_idle()
    assert stats.model(GPT).tokens_sent == 2 * sent


async def test_openai_empty_arguments(client: httpx.AsyncClient) -> None:
    tools = [*openai_tools("get_weather"), *openai_tools("get_time", schema=None)]
    prompt = "now? [[tools:get_weather:empty,get_time]]"
    message = (await client.post(OPENAI, json=openai_body(prompt, tools=tools))).json()
    calls = message["choices"][0]["message"]["tool_calls"]
    # `:empty` sends "" (as several OpenAI-compatible relays do); no parameters sends "{}".
    assert [c["function"]["arguments"] for c in calls] == ["", "{}"]

    events = parse_sse(
        (await client.post(OPENAI, json=openai_body(prompt, tools=tools, stream=True))).text
    )
    fragments = [
        delta["function"]["arguments"]
        for event in events[:-1]
        for choice in event.json()["choices"]
        for delta in choice["delta"].get("tool_calls") or []
        if delta["index"] == 0
    ]
    assert fragments == ["", ""]  # the first delta, then one empty fragment
    assert [c["arguments"] for c in openai_stream_calls(events)] == ["", "{}"]


@pytest.mark.parametrize(
    ("extra", "prompt", "names"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            "hi",
            ["get_time"],
        ),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            "[[tool:get_weather]] [[tool:get_time]]",
            ["get_time"],
        ),
        ({"tool_choice": "required"}, "hi", ["get_weather"]),
        ({"tool_choice": "none"}, "[[tool:get_weather]]", []),
        ({"tool_choice": "auto"}, "hi", []),
        ({"parallel_tool_calls": False}, "[[tools:get_time,get_weather]]", ["get_time"]),
    ],
)
async def test_openai_tool_choice(
    client: httpx.AsyncClient, extra: dict[str, Any], prompt: str, names: list[str]
) -> None:
    body = openai_body(prompt, tools=openai_tools("get_weather", "get_time"), **extra)
    choice = (await client.post(OPENAI, json=body)).json()["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    assert [c["function"]["name"] for c in calls] == names
    assert choice["finish_reason"] == ("tool_calls" if names else "stop")
    assert (choice["message"]["content"] is None) == bool(names)


async def test_openai_round_trip_ends_in_text_quoting_the_result(client: httpx.AsyncClient) -> None:
    tools = openai_tools("get_weather")
    first = openai_body("Weather in Lyon? [[tool:get_weather]]", tools=tools)
    call = (await client.post(OPENAI, json=first)).json()["choices"][0]["message"]["tool_calls"][0]
    follow = openai_body("unused", tools=tools)
    follow["messages"] = [
        *first["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "21 degrees and sunny"},
    ]
    for stream in (False, True):
        response = await client.post(OPENAI, json={**follow, "stream": stream})
        if stream:
            events = parse_sse(response.text)
            text = "".join(
                c["delta"].get("content") or "" for e in events[:-1] for c in e.json()["choices"]
            )
            assert events[-2].json()["choices"][0]["finish_reason"] == "stop"
            assert openai_stream_calls(events) == []
        else:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"]
            assert choice["finish_reason"] == "stop"
            assert "tool_calls" not in choice["message"]
        assert text.startswith(
            'Simulated answer from gpt-4.1 given tool result "21 degrees and sunny": '
        )


def _openai(**fields: Any) -> dict[str, Any]:
    return {"model": GPT, "messages": [{"role": "user", "content": "x"}], **fields}


def _call(call_id: str = "call_1", arguments: object = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}


TOOL = openai_tools("f")


@pytest.mark.parametrize(
    ("body", "fragment", "param"),
    [
        (_openai(tools={"a": 1}), "Invalid type for 'tools'", "tools"),
        (_openai(tools=[]), "empty array", "tools"),
        (
            _openai(tools=[{"type": "web", "function": {}}]),
            "Supported values are: 'function'",
            "tools[0].type",
        ),
        (_openai(tools=[{"type": "function"}]), "'tools[0].function'", "tools[0].function"),
        (
            _openai(tools=[{"type": "function", "function": {"name": "bad name"}}]),
            "does not match pattern",
            "tools[0].function.name",
        ),
        (_openai(tools=[*TOOL, *TOOL]), "defined twice", "tools"),
        (
            _openai(tools=openai_tools("f", schema={"type": "string"})),
            "schema must be a JSON Schema of 'type: \"object\"'",
            "tools[0].function.parameters",
        ),
        (
            _openai(tools=openai_tools("f", schema={"type": "object", "properties": 5})),
            "Invalid schema for function 'f'",
            "tools[0].function.parameters",
        ),
        (
            _openai(
                tools=[
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "strict": True,
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {"type": "string"}},
                            },
                        },
                    }
                ]
            ),
            "'additionalProperties' is required to be supplied and to be false",
            "tools[0].function.parameters",
        ),
        (_openai(tool_choice="auto"), "only allowed when 'tools' are specified", "tool_choice"),
        (_openai(tools=TOOL, tool_choice="always"), "Supported values are: 'none'", "tool_choice"),
        (
            _openai(tools=TOOL, tool_choice={"type": "function", "function": {"name": "g"}}),
            "no function named 'g'",
            "tool_choice.function.name",
        ),
        (_openai(parallel_tool_calls=True), "only allowed when 'tools'", "parallel_tool_calls"),
        (
            {
                "model": GPT,
                "tools": TOOL,
                "messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}],
            },
            "must be a response to a preceeding message with 'tool_calls'",
            "messages.[0].role",
        ),
        (
            {
                "model": GPT,
                "tools": TOOL,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [_call()]},
                    {"role": "tool", "tool_call_id": "call_2", "content": "r"},
                ],
            },
            "'tool_call_id' of 'call_2' not found",
            "messages[2].tool_call_id",
        ),
        (
            {
                "model": GPT,
                "tools": TOOL,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [_call("call_1"), _call("call_2")]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "r"},
                    {"role": "user", "content": "and?"},
                ],
            },
            "did not have response messages: call_2",
            "messages.[1].role",
        ),
        (
            {
                "model": GPT,
                "tools": TOOL,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [_call(arguments={"a": 1})]},
                ],
            },
            "expected a string, but got an object instead",
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
async def test_openai_invalid_tool_requests_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str, param: str
) -> None:
    response = await client.post(OPENAI, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


@pytest.mark.parametrize(
    ("prompt", "tools", "fragment"),
    [
        (
            "[[tool:nope]]",
            ["get_weather"],
            "no offered tool is named 'nope' (offered: get_weather)",
        ),
        ("[[tool:get_weather]]", [], "the request offers no tools"),
        ("[[tools:]]", ["get_weather"], "is not a tool name"),
        ("[[tool:get_weather:loud]]", ["get_weather"], "the only call mode is NAME:empty"),
    ],
)
async def test_tool_directives_that_cannot_apply_are_400(
    client: httpx.AsyncClient, prompt: str, tools: list[str], fragment: str
) -> None:
    extra: dict[str, Any] = {"tools": openai_tools(*tools)} if tools else {}
    response = await client.post(OPENAI, json=openai_body(prompt, **extra))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("simulator directive [[")
    assert fragment in response.json()["error"]["message"]


async def test_openai_tool_stream_faults_cut_after_steps(client: httpx.AsyncClient) -> None:
    prompt = "x [[tool:get_weather]] [[sim fault=sse_error after=3]]"
    body = openai_body(prompt, tools=openai_tools("get_weather"), stream=True)
    events = parse_sse((await client.post(OPENAI, json=body)).text)
    assert "error" in events[-1].json()
    deltas = [
        d
        for e in events[:-1]
        for c in e.json()["choices"]
        for d in c["delta"].get("tool_calls") or []
    ]
    assert len(deltas) == 3  # the first delta and two fragments, then the error


# --- Anthropic ------------------------------------------------------------------------


async def test_anthropic_tool_use_unary(client: httpx.AsyncClient) -> None:
    body = anthropic_body(
        "Weather in Lyon? [[tool:get_weather]]", tools=anthropic_tools("get_weather")
    )
    message = (await client.post(ANTHROPIC, json=body)).json()
    assert message["stop_reason"] == "tool_use"
    [block] = message["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_01")
    assert block["name"] == "get_weather"
    assert fits(block["input"])  # an object, not a string, on this wire


async def test_anthropic_parallel_tool_use_streamed(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    tools = anthropic_tools("get_weather", "get_time")
    prompt = "Lyon and Oslo [[tools:get_weather,get_time]]"
    unary = (await client.post(ANTHROPIC, json=anthropic_body(prompt, tools=tools))).json()
    events = parse_sse(
        (await client.post(ANTHROPIC, json=anthropic_body(prompt, tools=tools, stream=True))).text
    )
    names = [e.event for e in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    starts = [e.json() for e in events if e.event == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "tool_use"),
        (1, "tool_use"),
    ]
    for index in (0, 1):
        partials = [
            e.json()["delta"]["partial_json"]
            for e in events
            if e.event == "content_block_delta" and e.json()["index"] == index
        ]
        assert partials[0] == ""  # Anthropic opens each tool input with an empty delta
        assert len(partials) > 2
    blocks = anthropic_stream_blocks(events)
    assert [(b["id"], b["name"], orjson.loads(b["partial_json"])) for b in blocks] == [
        (b["id"], b["name"], b["input"]) for b in unary["content"]
    ]
    assert all(fits(orjson.loads(b["partial_json"])) for b in blocks)
    delta = next(e.json() for e in events if e.event == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == unary["usage"]["output_tokens"]
    stats = await simulator.wait_idle()
    assert stats.model(SONNET).output_tokens == 2 * unary["usage"]["output_tokens"]


async def test_anthropic_empty_input(client: httpx.AsyncClient) -> None:
    tools = anthropic_tools("get_weather")
    prompt = "now [[tool:get_weather:empty]]"
    message = (await client.post(ANTHROPIC, json=anthropic_body(prompt, tools=tools))).json()
    assert message["content"][0]["input"] == {}
    events = parse_sse(
        (await client.post(ANTHROPIC, json=anthropic_body(prompt, tools=tools, stream=True))).text
    )
    partials = [
        e.json()["delta"]["partial_json"] for e in events if e.event == "content_block_delta"
    ]
    assert partials == [""]
    assert anthropic_stream_blocks(events)[0]["partial_json"] == ""  # a client must make it {}


@pytest.mark.parametrize(
    ("choice", "prompt", "names"),
    [
        ({"type": "tool", "name": "get_time"}, "hi", ["get_time"]),
        ({"type": "any"}, "hi", ["get_weather"]),
        ({"type": "none"}, "[[tool:get_weather]]", []),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            "[[tools:get_time,get_weather]]",
            ["get_time"],
        ),
    ],
)
async def test_anthropic_tool_choice(
    client: httpx.AsyncClient, choice: dict[str, Any], prompt: str, names: list[str]
) -> None:
    body = anthropic_body(
        prompt, tools=anthropic_tools("get_weather", "get_time"), tool_choice=choice
    )
    message = (await client.post(ANTHROPIC, json=body)).json()
    assert [b["name"] for b in message["content"] if b["type"] == "tool_use"] == names
    assert message["stop_reason"] == ("tool_use" if names else "end_turn")


async def test_anthropic_round_trip(client: httpx.AsyncClient) -> None:
    tools = anthropic_tools("get_weather")
    first = anthropic_body("Weather in Lyon? [[tool:get_weather]]", tools=tools)
    content = (await client.post(ANTHROPIC, json=first)).json()["content"]
    follow = {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": content},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": content[0]["id"],
                        "content": [{"type": "text", "text": "21 degrees"}],
                    }
                ],
            },
        ],
    }
    message = (await client.post(ANTHROPIC, json=follow)).json()
    assert message["stop_reason"] == "end_turn"
    [block] = message["content"]
    assert block["text"].startswith(
        'Simulated answer from claude-sonnet-4-20250514 given tool result "21 degrees": '
    )
    # A tool_result's text in the same message can ask for the next call.
    follow["messages"][-1]["content"].append({"type": "text", "text": "again [[tool:get_weather]]"})
    again = (await client.post(ANTHROPIC, json=follow)).json()
    assert again["stop_reason"] == "tool_use"


def _anthropic(messages: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "model": SONNET,
        "max_tokens": 100,
        "messages": messages or [{"role": "user", "content": "x"}],
        **fields,
    }


USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
TOOLS = anthropic_tools("f")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_anthropic(tools=[{"name": "f"}]), "tools.0.custom.input_schema: Field required"),
        (
            _anthropic(tools=[{"name": "f", "input_schema": {"type": "array"}}]),
            "Input should be 'object'",
        ),
        (
            _anthropic(tools=[{"name": "f g", "input_schema": {"type": "object"}}]),
            "String should match pattern",
        ),
        (_anthropic(tools=[*TOOLS, *TOOLS]), "Tool names must be unique."),
        (
            _anthropic(tools=[{"name": "f", "input_schema": {"type": "object", "required": 3}}]),
            "JSON schema is invalid",
        ),
        (
            _anthropic(tool_choice={"type": "auto"}),
            "tool_choice may only be specified while providing tools",
        ),
        (
            _anthropic(tools=TOOLS, tool_choice={"type": "all"}),
            "does not match any of the expected tags",
        ),
        (_anthropic(tools=TOOLS, tool_choice={"type": "tool", "name": "g"}), "no tool named 'g'"),
        (
            _anthropic(
                [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": [USE]},
                    {"role": "user", "content": "y"},
                ],
                tools=TOOLS,
            ),
            "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
        ),
        (
            _anthropic(
                [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]}],
                tools=TOOLS,
            ),
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9",
        ),
        (
            _anthropic(
                [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": [USE]},
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}],
                    },
                ]
            ),
            "Requests which include `tool_use` or `tool_result` blocks must define tools.",
        ),
        (
            _anthropic([{"role": "user", "content": [USE]}], tools=TOOLS),
            "`tool_use` blocks may appear in `assistant` messages only",
        ),
        (_anthropic([{"role": "user", "content": [{"type": "audio"}]}]), "Input tag 'audio'"),
    ],
)
async def test_anthropic_invalid_tool_requests_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    response = await client.post(ANTHROPIC, json=body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"]["type"] == "invalid_request_error"
    assert fragment in payload["error"]["message"]


async def test_max_tokens_cuts_a_tool_call_short(client: httpx.AsyncClient) -> None:
    prompt = "x [[tool:get_weather]]"
    body = openai_body(prompt, tools=openai_tools("get_weather"), max_tokens=3)
    choice = (await client.post(OPENAI, json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])
    body = anthropic_body(prompt, tools=anthropic_tools("get_weather"), max_tokens=3, stream=True)
    events = parse_sse((await client.post(ANTHROPIC, json=body)).text)
    delta = next(e.json() for e in events if e.event == "message_delta")
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 3
    partial = anthropic_stream_blocks(events)[0]["partial_json"]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(partial)


async def test_anthropic_tool_stream_with_keepalives(client: httpx.AsyncClient) -> None:
    body = anthropic_body(
        "x [[tool:get_weather]] [[sim fault=ping]]",
        tools=anthropic_tools("get_weather"),
        stream=True,
    )
    events = parse_sse((await client.post(ANTHROPIC, json=body)).text)
    steps = [
        e
        for e in events
        if e.event == "content_block_start"
        or (e.event == "content_block_delta" and e.json()["delta"]["partial_json"])
    ]
    pings = [e for e in events if e.event == "ping"]
    assert len(pings) == len(steps) + 2  # before every step and the end, plus the opening one
    assert orjson.loads(anthropic_stream_blocks(events)[0]["partial_json"])
