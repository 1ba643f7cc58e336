"""The simulator as a server: auth, routes, stats, concurrency, determinism, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.simulator import RelaySimulator, SimulatorSettings
from server.tokens import conversation_tokens

from .helpers import (
    DEEPSEEK,
    GEMINI,
    GPT,
    SONNET,
    anthropic_body,
    openai_body,
    openai_tokens,
    parse_sse,
)

OPENAI = "/chat/completions"
ANTHROPIC = "/messages"


@pytest.fixture
async def keyed() -> AsyncIterator[RelaySimulator]:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0, api_key="sk-test"))
    await sim.start()
    yield sim
    await sim.stop()


async def test_auth_required_when_a_key_is_set(keyed: RelaySimulator) -> None:
    async with httpx.AsyncClient(base_url=keyed.url) as client:
        missing = await client.post(OPENAI, json=openai_body("hi"))
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = await client.post(
            OPENAI, json=openai_body("hi"), headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        right = await client.post(
            OPENAI, json=openai_body("hi"), headers={"Authorization": "Bearer sk-test"}
        )
        assert right.status_code == 200

        refused = await client.post(ANTHROPIC, json=anthropic_body("hi"))
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        for headers in ({"x-api-key": "sk-test"}, {"Authorization": "Bearer sk-test"}):
            headers["anthropic-version"] = "2023-06-01"
            ok = await client.post(ANTHROPIC, json=anthropic_body("hi"), headers=headers)
            assert ok.status_code == 200

        assert (await client.get("/models")).status_code == 401
        listed = await client.get("/models", headers={"Authorization": "Bearer sk-test"})
        assert listed.status_code == 200


async def test_no_auth_when_no_key(client: httpx.AsyncClient) -> None:
    response = await client.post(OPENAI, json=openai_body("hi"), headers={"Authorization": "x"})
    assert response.status_code == 200


async def test_models_list(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/models")).json()
    assert listed["object"] == "list"
    assert {m["id"] for m in listed["data"]} == {SONNET, GPT, GEMINI, DEEPSEEK}
    assert all(m["object"] == "model" and m["owned_by"] for m in listed["data"])


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert (await client.post("/completions", json={})).status_code == 404
    assert (await client.get(OPENAI)).status_code == 405
    assert (await client.post("/models")).status_code == 405


async def test_stats_sum_exactly_what_was_reported(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    expected_in = expected_out = 0

    unary = (await client.post(OPENAI, json=openai_body("a [[sim tokens=10]]"))).json()
    expected_in += unary["usage"]["prompt_tokens"]
    expected_out += unary["usage"]["completion_tokens"]

    body = openai_body("b [[sim tokens=7]]", stream=True, stream_options={"include_usage": True})
    usage = parse_sse((await client.post(OPENAI, json=body)).text)[-2].json()["usage"]
    expected_in += usage["prompt_tokens"]
    expected_out += usage["completion_tokens"]

    # a stream without include_usage reports nothing, though it sends tokens
    silent = await client.post(OPENAI, json=openai_body("c [[sim tokens=5]]", stream=True))
    assert len(openai_tokens(parse_sse(silent.text))) == 5

    events = parse_sse(
        (
            await client.post(
                ANTHROPIC, json=anthropic_body("d [[sim tokens=4]]", model=GPT, stream=True)
            )
        ).text
    )
    expected_in += events[0].json()["message"]["usage"]["input_tokens"]
    expected_out += events[-2].json()["usage"]["output_tokens"]  # supersedes start's 1

    refused = await client.post(OPENAI, json=openai_body("e [[sim fault=500]]"))
    assert refused.status_code == 500

    stats = (await simulator.wait_idle()).model(GPT)
    assert stats.requests == 5
    assert stats.in_flight == 0
    assert (stats.input_tokens, stats.output_tokens) == (expected_in, expected_out)
    assert expected_out == 10 + 7 + 4
    assert stats.tokens_sent == 10 + 7 + 5 + 4
    assert expected_in == conversation_tokens(
        ["a [[sim tokens=10]]", "b [[sim tokens=7]]", "d [[sim tokens=4]]"]
    )
    assert simulator.stats.requests == 5
    assert simulator.stats.model(SONNET).requests == 0


async def test_connections_are_counted_and_released(simulator: RelaySimulator) -> None:
    async with httpx.AsyncClient(base_url=simulator.url) as client:
        await asyncio.gather(*(client.post(OPENAI, json=openai_body(f"c{i}")) for i in range(3)))
        assert simulator.stats.open_connections == 3  # keep-alive pool still holds them
    assert (await simulator.wait_disconnected()).open_connections == 0


async def test_concurrency_cap_answers_429_with_retry_after(simulator: RelaySimulator) -> None:
    limit = 5  # deepseek-v3.2
    async with httpx.AsyncClient(base_url=simulator.url, timeout=10) as client:
        stalled = [
            asyncio.create_task(
                client.post(
                    OPENAI, json=openai_body(f"hold {i} [[sim fault=stall]]", model=DEEPSEEK)
                )
            )
            for i in range(limit)
        ]
        await simulator.wait_until(lambda s: s.model(DEEPSEEK).in_flight == limit)
        over = await client.post(OPENAI, json=openai_body("one more", model=DEEPSEEK))
        assert over.status_code == 429
        assert over.headers["retry-after"] == "1"
        assert over.json()["error"]["code"] == "rate_limit_exceeded"
        over = await client.post(ANTHROPIC, json=anthropic_body("one more", model=DEEPSEEK))
        assert over.status_code == 429
        assert over.json()["error"]["type"] == "rate_limit_error"
        other_model = await client.post(OPENAI, json=openai_body("unaffected", model=GEMINI))
        assert other_model.status_code == 200
        for task in stalled:
            task.cancel()
        await asyncio.gather(*stalled, return_exceptions=True)
        assert (await simulator.wait_idle()).model(DEEPSEEK).in_flight == 0
        assert (
            await client.post(OPENAI, json=openai_body("again", model=DEEPSEEK))
        ).status_code == 200


async def test_concurrency_cap_can_be_disabled() -> None:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0, enforce_concurrency=False))
    await sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
            stalled = [
                asyncio.create_task(
                    client.post(
                        OPENAI, json=openai_body(f"h{i} [[sim fault=stall]]", model=DEEPSEEK)
                    )
                )
                for i in range(6)
            ]
            await sim.wait_until(lambda s: s.model(DEEPSEEK).in_flight == 6)
            assert (
                await client.post(OPENAI, json=openai_body("x", model=DEEPSEEK))
            ).status_code == 200
            for task in stalled:
                task.cancel()
            await asyncio.gather(*stalled, return_exceptions=True)
    finally:
        await sim.stop()


async def test_same_request_same_text_and_latency_draw() -> None:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0.001))  # real but tiny delays
    await sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.url) as client:

            async def ask(content: str, **extra: Any) -> httpx.Response:
                return await client.post(OPENAI, json=openai_body(content, **extra))

            first, second, other = await ask("same"), await ask("same"), await ask("different")
            assert first.json()["choices"] == second.json()["choices"]
            assert first.headers["x-simulator-ttft-ms"] == second.headers["x-simulator-ttft-ms"]
            assert first.headers["x-simulator-ttft-ms"] != other.headers["x-simulator-ttft-ms"]
            assert first.json()["choices"] != other.json()["choices"]
            streamed = await ask("same", stream=True)
            assert (
                "".join(openai_tokens(parse_sse(streamed.text)))
                == (first.json()["choices"][0]["message"]["content"])
            )
    finally:
        await sim.stop()


async def test_scale_zero_never_sleeps(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        delays.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    await client.post(OPENAI, json=openai_body("fast [[sim tokens=50]]"))
    await client.post(OPENAI, json=openai_body("fast [[sim tokens=50]]", stream=True))
    await client.post(ANTHROPIC, json=anthropic_body("fast [[sim tokens=50]]", stream=True))
    assert [d for d in delays if d > 0] == []


async def test_streaming_is_paced_at_tokens_per_second() -> None:
    sim = RelaySimulator(SimulatorSettings(latency_scale=1.0, tokens_per_second=100))
    await sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.url) as client:
            body = openai_body("paced [[sim latency_ms=0 tokens=11]]", stream=True)
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await client.post(OPENAI, json=body)
            elapsed = loop.time() - started
        assert len(openai_tokens(parse_sse(response.text))) == 11
        assert elapsed >= 10 / 100  # ten gaps between eleven tokens
    finally:
        await sim.stop()


async def test_stop_drops_open_connections_promptly() -> None:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0))
    url = await sim.start()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        hung = asyncio.create_task(client.post(OPENAI, json=openai_body("[[sim fault=stall]]")))
        await sim.wait_until(lambda s: s.in_flight == 1)
        async with asyncio.timeout(3):
            await sim.stop()
            with pytest.raises(httpx.TransportError):
                await hung
    assert sim.stats.in_flight == 0
    assert sim.stats.open_connections == 0
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(url + "/models")


async def test_wait_until_times_out(simulator: RelaySimulator) -> None:
    with pytest.raises(TimeoutError):
        await simulator.wait_until(lambda s: s.requests > 0, timeout=0.05)


async def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="latency_scale"):
        SimulatorSettings(latency_scale=-1)
    with pytest.raises(ValueError, match="tokens_per_second"):
        SimulatorSettings(tokens_per_second=0)
