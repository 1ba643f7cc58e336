"""The Python client (sync and asyncio) against the real gateway over real sockets."""

import asyncio
from decimal import Decimal

import pytest
from switchyard_client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    InvalidRequestError,
    RateLimitedError,
    UnavailableError,
)

from .conftest import Gateway

# These tests ask the same prompt more than once and check fresh answers, not the cache.
pytestmark = pytest.mark.gateway_env(SWITCHYARD_CACHE_ENABLED="false")

# The same numbers as test_gateway.py: 16 input tokens, 8 output tokens on
# gemini-2.5-flash ($2.50/M in, $10/M out) = 120,000 nano-dollars.
SIMPLE = "What is the capital of France? [[sim tokens=8]]"
SIMPLE_COST = Decimal("0.00012")


async def test_sync_query_stream_route_and_health(gateway: Gateway):
    def use() -> tuple:
        with Client(gateway.address, caller="e2e") as client:
            answer = client.query(SIMPLE)
            with client.stream(SIMPLE) as stream:
                deltas = list(stream)
            return answer, deltas, stream, client.route(SIMPLE), client.health()

    answer, deltas, stream, route, health = await asyncio.to_thread(use)
    assert (answer.model, answer.usage.input_tokens, answer.usage.output_tokens) == (
        "gemini-2.5-flash",
        16,
        8,
    )
    assert answer.cost == SIMPLE_COST and answer.text.startswith("Simulated answer")
    assert [a.outcome for a in answer.summary.attempts] == ["SUCCESS"]
    assert len(answer.summary.request_id) == 16
    assert "".join(deltas) == answer.text
    assert stream.summary.cost == SIMPLE_COST and stream.summary.model == "gemini-2.5-flash"
    assert stream.summary.time_to_first_token_ms is not None
    assert (route.model, route.task, route.basis) == ("gemini-2.5-flash", "FAST", "COMPLEXITY")
    assert route.cost_min <= route.cost_max
    assert health == "SERVING"


async def test_async_query_and_stream_match(gateway: Gateway):
    async with AsyncClient(gateway.address, caller="e2e") as client:
        answer = await client.query(SIMPLE, task="fast")
        async with client.stream(SIMPLE, task="fast") as stream:
            text = "".join([delta async for delta in stream])
        route = await client.route("Compare quicksort and mergesort")
        health = await client.health("switchyard.v1.GatewayService")
    assert text == answer.text and stream.summary.usage == answer.usage
    assert stream.summary.cost == answer.cost == SIMPLE_COST
    assert route.model == "gpt-4.1"  # "compare" is an analysis keyword: CREATIVE
    assert health == "SERVING"


async def test_a_refused_request_keeps_status_request_id_and_the_attempt(gateway: Gateway):
    async with AsyncClient(gateway.address) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.query("hi [[sim fault=400]]")
    error = caught.value
    assert "the relay refused the request" in error.details
    assert error.request_id is not None and len(error.request_id) == 16
    [attempt] = error.attempts
    assert (attempt.model, attempt.outcome, attempt.http_status) == (
        "gemini-2.5-flash",
        "FINAL_ERROR",
        400,
    )


async def test_every_model_failing_keeps_each_attempt_and_the_retry_delay(gateway: Gateway):
    async with AsyncClient(gateway.address) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.query("hi [[sim fault=429 retry_after_ms=30]]")
    error = caught.value
    assert error.retryable and error.retry_after == 0.03
    # three tries of each model of the chain (the retry stage's default), in order
    assert [a.model for a in error.attempts] == ["gemini-2.5-flash"] * 3 + ["gpt-4.1"] * 3
    assert {a.http_status for a in error.attempts} == {429}


async def test_a_stream_that_fails_before_its_first_token_raises_with_attempts(gateway: Gateway):
    async with AsyncClient(gateway.address) as client:
        stream = client.stream("hi [[sim fault=503]]")
        with pytest.raises(UnavailableError) as caught:
            async for _ in stream:
                pass
    assert len(caught.value.attempts) == 6 and not stream.done  # 3 tries x 2 models


async def test_the_gateway_s_own_budget_is_rate_limited_with_quota_details(start_gateway):
    gateway = await start_gateway(
        env={
            "SWITCHYARD_RELAY_RPM": "1",
            "SWITCHYARD_RELAY_BURST": "1",
            "SWITCHYARD_CACHE_ENABLED": "false",  # the second "hi" must reach the limiter
        }
    )
    async with AsyncClient(gateway.address) as client:
        await client.query("hi")
        with pytest.raises(RateLimitedError) as caught:
            await client.query("hi", timeout=2.0)
    assert caught.value.retry_after is not None and caught.value.retry_after > 1
    assert caught.value.quota_violations


async def test_the_deadline_is_sent_and_enforced(gateway: Gateway):
    async with AsyncClient(gateway.address) as client:
        with pytest.raises(DeadlineExceededError):
            await client.query("hi [[sim latency_ms=5000]]", timeout=0.3)


async def test_the_caller_id_is_sent_as_metadata(gateway: Gateway):
    async with AsyncClient(gateway.address, caller="x" * 200) as client:
        with pytest.raises(InvalidRequestError, match="x-switchyard-caller"):
            await client.query("hi")
