"""Reasoning: Anthropic thinking blocks with signatures (and their round trip), OpenAI
reasoning tokens, and the refusals both providers make."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
import pytest

from server.simulator.app import DEFAULT_SIGNING_KEY
from server.simulator.content import REASONING_TOKENS

from .helpers import (
    GEMINI,
    GPT,
    SONNET,
    anthropic_body,
    anthropic_stream_blocks,
    anthropic_tools,
    openai_body,
    openai_tokens,
    parse_sse,
)

OPENAI = "/chat/completions"
ANTHROPIC = "/messages"
THINKING = {"type": "enabled", "budget_tokens": 1024}


def thinking_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return anthropic_body(prompt, max_tokens=4096, thinking=THINKING, **extra)


def signature_of(text: str) -> str:
    """The documented signature: base64 of HMAC-SHA256 under the simulator's key."""
    return base64.b64encode(
        hmac.digest(DEFAULT_SIGNING_KEY, text.encode(), hashlib.sha256)
    ).decode()


async def test_thinking_block_comes_first_signed_and_counted(client: httpx.AsyncClient) -> None:
    message = (await client.post(ANTHROPIC, json=thinking_body("Why is the sky blue?"))).json()
    thinking, text = message["content"]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"].startswith('Thinking about "Why is the sky blue?": ')
    assert thinking["signature"] == signature_of(thinking["thinking"])
    assert text["type"] == "text"
    words = len(thinking["thinking"].split()) + len(text["text"].split())
    assert message["usage"]["output_tokens"] == words  # thinking is billed as output

    events = parse_sse(
        (
            await client.post(
                ANTHROPIC, json={**thinking_body("Why is the sky blue?"), "stream": True}
            )
        ).text
    )
    deltas = [e.json()["delta"]["type"] for e in events if e.event == "content_block_delta"]
    signature_at = deltas.index("signature_delta")
    assert set(deltas[:signature_at]) == {"thinking_delta"}
    assert set(deltas[signature_at + 1 :]) == {"text_delta"}
    assert anthropic_stream_blocks(events) == message["content"]


async def test_thinking_round_trip_with_tool_use(client: httpx.AsyncClient) -> None:
    tools = anthropic_tools("get_weather")
    first = thinking_body("Weather in Lyon? [[tool:get_weather]]", tools=tools)
    content = (await client.post(ANTHROPIC, json=first)).json()["content"]
    assert [block["type"] for block in content] == ["thinking", "tool_use"]
    result = {"type": "tool_result", "tool_use_id": content[1]["id"], "content": "21 degrees"}

    def follow(assistant: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **first,
            "messages": [
                *first["messages"],
                {"role": "assistant", "content": assistant},
                {"role": "user", "content": [result]},
            ],
        }

    accepted = await client.post(ANTHROPIC, json=follow(content))
    assert accepted.status_code == 200
    # The turn goes on after the tool result: Claude does not think again mid-turn.
    assert [block["type"] for block in accepted.json()["content"]] == ["text"]

    dropped = await client.post(ANTHROPIC, json=follow(content[1:]))
    assert dropped.status_code == 400
    assert dropped.json()["error"] == {
        "type": "invalid_request_error",
        "message": (
            "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
            "`tool_use`. When `thinking` is enabled, a final `assistant` message must start with "
            "a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` "
            "blocks). We recommend you include thinking blocks from previous turns. To avoid this "
            "requirement, disable `thinking`. Please consult our documentation at "
            "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
        ),
    }

    for altered in (
        {**content[0], "signature": signature_of("something else")},
        {**content[0], "thinking": content[0]["thinking"] + "edited"},
    ):
        response = await client.post(ANTHROPIC, json=follow([altered, content[1]]))
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "messages.1.content.0: Invalid `signature` in `thinking` block"
        )


async def test_redacted_thinking(client: httpx.AsyncClient) -> None:
    tools = anthropic_tools("get_weather")
    first = thinking_body("Lyon [[thinking:redacted]] [[tool:get_weather]]", tools=tools)
    message = (await client.post(ANTHROPIC, json=first)).json()
    redacted, use = message["content"]
    assert set(redacted) == {"type", "data"}
    assert redacted["type"] == "redacted_thinking"
    assert message["usage"]["output_tokens"] > 12  # the hidden thinking is still billed

    events = parse_sse((await client.post(ANTHROPIC, json={**first, "stream": True})).text)
    start = next(e.json() for e in events if e.event == "content_block_start")
    assert start["content_block"] == redacted  # whole in its start event, no deltas
    assert all(e.json()["index"] != 0 for e in events if e.event == "content_block_delta")

    result = {"type": "tool_result", "tool_use_id": use["id"], "content": "21"}
    for data, status in ((redacted["data"], 200), (redacted["data"][:-4] + "AAA=", 400)):
        body = {
            **first,
            "messages": [
                *first["messages"],
                {"role": "assistant", "content": [{**redacted, "data": data}, use]},
                {"role": "user", "content": [result]},
            ],
        }
        response = await client.post(ANTHROPIC, json=body)
        assert response.status_code == status
    assert "Invalid `data` in `redacted_thinking` block" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            anthropic_body(
                "x", max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 512}
            ),
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        ),
        (
            anthropic_body("x", max_tokens=1024, thinking=THINKING),
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ),
        (
            anthropic_body("x", max_tokens=4096, thinking={"type": "on"}),
            "does not match any of the expected tags: 'enabled', 'disabled'",
        ),
        (
            thinking_body("x", temperature=0.5),
            "`temperature` may only be set to 1 when thinking is enabled",
        ),
        (
            thinking_body("x", tools=anthropic_tools("f"), tool_choice={"type": "any"}),
            "Thinking may not be enabled when tool_choice forces tool use.",
        ),
        (thinking_body("x", model=GPT), "gpt-4.1 does not support thinking."),
        (
            anthropic_body("x [[thinking:redacted]]"),
            "[[thinking:redacted]]: applies only to Anthropic requests with thinking enabled",
        ),
        (
            {
                **anthropic_body("x"),
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "thinking": "t", "signature": signature_of("t")}
                        ],
                    },
                ],
            },
            "When thinking is disabled, an `assistant` message in the final position cannot contain `thinking`",
        ),
    ],
)
async def test_anthropic_thinking_refusals(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    response = await client.post(ANTHROPIC, json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_thinking_disabled_is_plain(client: httpx.AsyncClient) -> None:
    body = anthropic_body("hi", thinking={"type": "disabled"})
    message = (await client.post(ANTHROPIC, json=body)).json()
    assert [block["type"] for block in message["content"]] == ["text"]
    assert message["model"] == SONNET


@pytest.mark.parametrize("effort", ["low", "high"])
async def test_openai_reasoning_tokens_are_reported_and_never_sent(
    client: httpx.AsyncClient, effort: str
) -> None:
    body = openai_body("Why? [[sim tokens=10]]", model=GEMINI, reasoning_effort=effort)
    answer = (await client.post(OPENAI, json=body)).json()
    usage = answer["usage"]
    hidden = REASONING_TOKENS[effort]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == hidden
    assert usage["completion_tokens"] == 10 + hidden
    assert len(answer["choices"][0]["message"]["content"].split()) == 10
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    events = parse_sse((await client.post(OPENAI, json=stream)).text)
    assert len(openai_tokens(events)) == 10
    assert events[-2].json()["usage"] == usage


async def test_openai_reasoning_can_spend_the_whole_budget(client: httpx.AsyncClient) -> None:
    body = openai_body("Why?", model=GEMINI, reasoning_effort="high", max_completion_tokens=100)
    answer = (await client.post(OPENAI, json=body)).json()
    assert answer["choices"][0]["message"]["content"] == ""
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 100


@pytest.mark.parametrize(
    ("model", "effort", "fragment"),
    [
        (GPT, "low", "Unsupported parameter: 'reasoning_effort' is not supported with this model."),
        (GEMINI, "extreme", "Invalid value: 'extreme'. Supported values are: 'none', 'minimal'"),
    ],
)
async def test_openai_reasoning_refusals(
    client: httpx.AsyncClient, model: str, effort: str, fragment: str
) -> None:
    response = await client.post(
        OPENAI, json=openai_body("x", model=model, reasoning_effort=effort)
    )
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "reasoning_effort"


async def test_a_tool_loop_thinks_once_at_the_start_of_the_turn(client: httpx.AsyncClient) -> None:
    tools = anthropic_tools("get_weather")
    first = thinking_body("Lyon, then Oslo [[tool:get_weather]]", tools=tools)
    opening = (await client.post(ANTHROPIC, json=first)).json()["content"]

    def result(use: dict[str, Any], text: str = "") -> dict[str, Any]:
        blocks: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": use["id"], "content": "21"}
        ]
        if text:
            blocks.append({"type": "text", "text": text})
        return {"role": "user", "content": blocks}

    messages = [
        *first["messages"],
        {"role": "assistant", "content": opening},
        result(opening[1], "and Oslo [[tool:get_weather]]"),
    ]
    second = (await client.post(ANTHROPIC, json={**first, "messages": messages})).json()["content"]
    assert [block["type"] for block in second] == ["tool_use"]  # the turn goes on, no new thinking

    messages += [{"role": "assistant", "content": second}, result(second[0])]
    final = await client.post(ANTHROPIC, json={**first, "messages": messages})
    assert final.status_code == 200
    assert final.json()["content"][0]["type"] == "text"

    messages[1] = {"role": "assistant", "content": opening[1:]}  # the turn's thinking dropped
    dropped = await client.post(ANTHROPIC, json={**first, "messages": messages})
    assert dropped.status_code == 400
    assert dropped.json()["error"]["message"].startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`."
    )
