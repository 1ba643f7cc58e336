"""Prompt-cache usage: directives on both wires, Anthropic cache_control breakpoints, stats."""

from __future__ import annotations

from typing import Any

import httpx

from server.simulator import RelaySimulator
from server.simulator.app import MIN_CACHEABLE_TOKENS
from server.tokens import conversation_tokens

from .helpers import GPT, SONNET, parse_sse

OPENAI = "/chat/completions"
ANTHROPIC = "/messages"
SYSTEM = "You answer questions about relays. " * 4


def conversation(last: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": last},
    ]


async def test_openai_cache_read_reports_cached_prompt_tokens(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    messages = [{"role": "system", "content": SYSTEM}, *conversation("again [[cache:read]]")]
    answer = (await client.post(OPENAI, json={"model": GPT, "messages": messages})).json()
    usage = answer["usage"]
    prefix = conversation_tokens([SYSTEM, "first question", "first answer"])
    assert usage["prompt_tokens_details"]["cached_tokens"] == prefix
    assert usage["prompt_tokens"] == prefix + conversation_tokens(["again [[cache:read]]"])
    stats = await simulator.wait_idle()
    assert stats.model(GPT).cache_read_tokens == prefix
    # OpenAI reports no cache writes.
    messages[-1]["content"] = "again [[cache:write]]"
    usage = (await client.post(OPENAI, json={"model": GPT, "messages": messages})).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0


async def test_anthropic_cache_directives(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    prefix = conversation_tokens([SYSTEM, "first question", "first answer"])
    for mode, field in (
        ("write", "cache_creation_input_tokens"),
        ("read", "cache_read_input_tokens"),
    ):
        last = f"again [[cache:{mode}]]"
        body = {
            "model": SONNET,
            "max_tokens": 100,
            "system": SYSTEM,
            "messages": conversation(last),
        }
        usage = (await client.post(ANTHROPIC, json=body)).json()["usage"]
        other = "cache_read_input_tokens" if mode == "write" else "cache_creation_input_tokens"
        assert (usage[field], usage[other]) == (prefix, 0)
        # Anthropic's input_tokens leaves the cached part out.
        assert usage["input_tokens"] == conversation_tokens([last])
        events = parse_sse((await client.post(ANTHROPIC, json={**body, "stream": True})).text)
        start = events[0].json()["message"]["usage"]
        assert {k: start[k] for k in usage if k != "output_tokens"} == {
            k: usage[k] for k in usage if k != "output_tokens"
        }
    stats = await simulator.wait_idle()
    assert (stats.model(SONNET).cache_write_tokens, stats.model(SONNET).cache_read_tokens) == (
        2 * prefix,
        2 * prefix,
    )


async def test_anthropic_cache_control_writes_then_reads(client: httpx.AsyncClient) -> None:
    long_system = "Relays forward every request they receive. " * 100  # over 1024 tokens
    system = [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}]
    tokens = conversation_tokens([long_system])
    assert tokens >= MIN_CACHEABLE_TOKENS

    def body(question: str, model: str = SONNET) -> dict[str, Any]:
        messages = [{"role": "user", "content": question}]
        return {"model": model, "max_tokens": 100, "system": system, "messages": messages}

    first = (await client.post(ANTHROPIC, json=body("one"))).json()["usage"]
    second = (await client.post(ANTHROPIC, json=body("two"))).json()["usage"]
    other_model = (await client.post(ANTHROPIC, json=body("one", GPT))).json()["usage"]
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (tokens, 0)
    assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"]) == (0, tokens)
    assert other_model["cache_creation_input_tokens"] == tokens  # each model has its own cache
    assert first["input_tokens"] == conversation_tokens(["one"])

    # A breakpoint on a message caches everything up to it; a short prefix is not cached.
    short = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    usage = (
        await client.post(
            ANTHROPIC,
            json={
                "model": SONNET,
                "max_tokens": 100,
                "messages": [{"role": "user", "content": short}],
            },
        )
    ).json()["usage"]
    assert (usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]) == (0, 0)


async def test_plain_text_usage_has_no_cache_fields(client: httpx.AsyncClient) -> None:
    body = {"model": SONNET, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    usage = (await client.post(ANTHROPIC, json=body)).json()["usage"]
    assert set(usage) == {"input_tokens", "output_tokens"}
    answer = (await client.post(OPENAI, json={"model": GPT, "messages": body["messages"]})).json()
    assert set(answer["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
