"""Whatever JSON arrives, the wires answer a precise 400 or a valid answer: never a crash."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.simulator.anthropic_wire import AnthropicWire
from server.simulator.app import DEFAULT_SIGNING_KEY
from server.simulator.content import compose_feature_answer
from server.simulator.faults import DirectiveError
from server.simulator.features import plan_answer
from server.simulator.openai_wire import OpenAIWire
from server.simulator.wire import Wire, WireError

from .helpers import WEATHER_SCHEMA, png_base64

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.sampled_from(
        [
            "",
            "x",
            "auto",
            "any",
            "tool",
            "none",
            "required",
            "function",
            "text",
            "image",
            "image_url",
            "tool_use",
            "tool_result",
            "thinking",
            "redacted_thinking",
            "enabled",
            "json_schema",
            "json_object",
            "base64",
            "url",
            "image/png",
            "user",
            "assistant",
            "tool",
            "system",
            "low",
            "f",
            "call_1",
            "toolu_1",
            "[[tool:f]]",
            "[[json:invalid]]",
            "[[thinking:redacted]]",
            "[[cache:read]]",
            "[[tools:f,f:empty]]",
            png_base64(),
            "data:image/png;base64," + png_base64(),
            "https://example.com/a.png",
        ]
    ),
)
KEYS = st.sampled_from(
    [
        "type",
        "name",
        "text",
        "content",
        "role",
        "id",
        "input",
        "arguments",
        "function",
        "parameters",
        "input_schema",
        "tool_use_id",
        "tool_call_id",
        "tool_calls",
        "source",
        "media_type",
        "data",
        "url",
        "image_url",
        "thinking",
        "signature",
        "budget_tokens",
        "schema",
        "json_schema",
        "format",
        "strict",
        "cache_control",
        "is_error",
        "disable_parallel_tool_use",
        "properties",
        "required",
    ]
)
JSON = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
# Valid pieces of both wires, so generated requests get past the first checks and reach the
# deep ones (tool pairing, thinking, images) as often as they fail early.
PNG = png_base64()
BLOCKS = st.sampled_from(
    [
        {"type": "text", "text": "[[tool:f]] hi"},
        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"},
        {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "redacted_thinking", "data": "AAAA"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
    ]
)
CALLS = st.just(
    [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "tool", "system"]),
        "content": st.one_of(LEAVES, st.lists(st.one_of(BLOCKS, JSON), max_size=3)),
    },
    optional={
        "tool_calls": st.one_of(CALLS, JSON),
        "tool_call_id": st.one_of(st.just("call_1"), LEAVES),
    },
)
BODY = st.fixed_dictionaries(
    {
        "model": st.just("claude-sonnet-4-20250514"),
        "max_tokens": st.integers(1, 5000),
        "messages": st.lists(MESSAGE, min_size=1, max_size=4),
    },
    optional={
        "tools": st.one_of(
            JSON,
            st.just(
                [{"type": "function", "function": {"name": "f", "parameters": WEATHER_SCHEMA}}]
            ),
            st.just([{"name": "f", "input_schema": WEATHER_SCHEMA}]),
        ),
        "tool_choice": JSON,
        "parallel_tool_calls": JSON,
        "response_format": JSON,
        "reasoning_effort": LEAVES,
        "thinking": st.one_of(JSON, st.just({"type": "enabled", "budget_tokens": 1024})),
        "output_config": JSON,
        "system": JSON,
    },
)


def survive(wire: Wire, body: dict[str, Any]) -> None:
    try:
        chat = wire.parse(body)
        plan = plan_answer(chat)
    except (WireError, DirectiveError):
        return
    if plan is not None:
        compose_feature_answer(chat, plan, key=DEFAULT_SIGNING_KEY)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY)
def test_openai_parse_never_crashes(body: dict[str, Any]) -> None:
    survive(OpenAIWire(), body)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY)
def test_anthropic_parse_never_crashes(body: dict[str, Any]) -> None:
    survive(AnthropicWire(), body)
