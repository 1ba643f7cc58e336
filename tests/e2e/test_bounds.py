"""Bounded work per call, and context-aware routing, against the real server (issue 16).

The health test runs `python -m server` as its own process against the relay
simulator in a third one, as a load balancer would see a replica: the test's
own process only sends pre-serialized requests and times the health checks,
so what it measures is the gateway's event loop, not the test's.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb

from server.settings import LimitSettings
from tests.helpers import flood

from .conftest import RELAY_KEY, Gateway, details, query, start_gateway_process

pytestmark = pytest.mark.timeout(180)

LIMITS = LimitSettings()  # the defaults: what a gateway started without settings allows
QUERY = "/switchyard.v1.GatewayService/Query"
# Issue 16 asks for 50 ms at p99. On the 2-core test machine, with the simulator and this
# test sharing the cores and nothing else running, the gateway holds 21-31 ms (8 runs;
# 48-73 ms with a third process spinning on one core). Before the wire count of large
# requests (server/screening.py), the report's flood was decoded in one step of 20-60 ms
# and this held 28-83 ms; before the collector's freeze after start-up and the large
# calls' lanes, 145-210 ms.
HEALTH_BOUND = 0.050
CONCURRENT = 4  # ... while several maximum-size calls are being processed
RUN_FOR = 5.0  # seconds of load: p99 of about 170 checks, not only the slowest
POLL_EVERY = 0.020  # a health check every 20 ms, as in the report
OVER_LIMIT_EVERY = 0.100  # and a call over a bound every 100 ms


def largest_allowed(variant: int) -> bytes:
    """A Query at the default bounds: 1,000 messages (the prompt is one) holding exactly
    1 MiB of text, all words (so it is routed and answered like a long conversation).

    Each variant differs in its first bytes; the cache is bypassed so every call does the
    whole work: conversion, estimate, routing, the relay's round trip."""
    count = LIMITS.max_messages
    each, extra = divmod(LIMITS.max_text_bytes, count)
    text = ("word " * (each // 5 + 1))[:each]
    messages = [
        pb.Message(role=pb.ROLE_USER if i % 2 == 0 else pb.ROLE_ASSISTANT, content=text)
        for i in range(count - 1)
    ]
    prompt = f"{variant:04d}" + text[4:] + "x" * extra
    spec = pb.QuerySpec(messages=messages, prompt=prompt, cache_mode=pb.CACHE_MODE_BYPASS)
    total = sum(len(m.content) for m in spec.messages) + len(spec.prompt)
    assert (len(spec.messages) + 1, total) == (LIMITS.max_messages, LIMITS.max_text_bytes)
    return pb.QueryRequest(query=spec).SerializeToString()


# Over a bound, each refused with INVALID_ARGUMENT naming the bound, the value and the setting.
OVER_LIMIT = (
    (  # the report's flood: 500,000 one-letter messages, 3.5 MB
        flood(500_000, pb.Message(role=pb.ROLE_USER, content="x")),
        # counted on the wire and refused before it is decoded (server/screening.py)
        "the query has more than 1000 messages; at most 1000 are allowed per call"
        " (SWITCHYARD_MAX_MESSAGES)",
    ),
    (  # one message past the bound
        flood(LIMITS.max_messages + 1, pb.Message(role=pb.ROLE_USER, content="hello")),
        "the query has 1001 messages; at most 1000 are allowed per call (SWITCHYARD_MAX_MESSAGES)",
    ),
    (  # one byte of text past the bound
        pb.QueryRequest(
            query=pb.QuerySpec(prompt="x" * (LIMITS.max_text_bytes + 1))
        ).SerializeToString(),
        "query.prompt and query.system have 1048577 bytes of text (UTF-8); at most 1048576 bytes"
        " of text are allowed per call (SWITCHYARD_MAX_TEXT_BYTES)",
    ),
)


async def _serve_simulator() -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.simulator",
        "--port",
        "0",
        "--latency-scale",
        "0",
        "--api-key",
        RELAY_KEY,
        "--no-concurrency-limit",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
    assert url.startswith("http://127.0.0.1:"), url
    return process, url


@pytest.fixture
async def replica() -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Channel]]:
    """`python -m server` with default settings, its relay simulator in a process of its own,
    and two connections to it: the callers', and the load balancer's for health checks."""
    simulator, url = await _serve_simulator()
    gateway, port = await start_gateway_process(url)
    callers = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    # A channel of its own (a distinct option keeps gRPC from sharing the connection).
    checks = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("health-checks", 1)])
    try:
        yield callers, checks
    finally:
        await checks.close()
        await callers.close()
        for process in (gateway, simulator):
            process.terminate()
            await process.wait()


async def test_health_answers_within_the_bound_at_p99_while_maximum_size_calls_run(
    replica: tuple[grpc.aio.Channel, grpc.aio.Channel],
) -> None:
    callers, checks = replica
    send = callers.unary_unary(
        QUERY, request_serializer=lambda b: b, response_deserializer=pb.QueryResponse.FromString
    )
    health = health_pb2_grpc.HealthStub(checks)
    largest = [largest_allowed(variant) for variant in range(CONCURRENT * 2)]
    await send(largest[0], timeout=60)  # warm: connections, the first route, the ledger
    answered: list[str] = []
    refused: list[tuple[grpc.StatusCode, str]] = []
    idle: list[float] = []  # the same checks with no call running: the machine's own noise
    latencies: list[float] = []

    async def maximum_size_calls(worker: int) -> None:
        turn = worker
        while time.monotonic() < stop:
            answer = await send(largest[turn % len(largest)], timeout=60)
            answered.append(answer.model)
            turn += CONCURRENT

    async def over_limit_calls() -> None:
        turn = 0
        while time.monotonic() < stop:
            wire, _ = OVER_LIMIT[turn % len(OVER_LIMIT)]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await send(wire, timeout=60)
            refused.append((caught.value.code(), details(caught.value)))
            turn += 1
            await asyncio.sleep(OVER_LIMIT_EVERY)

    async def poll_health(until: float, into: list[float]) -> None:
        request = health_pb2.HealthCheckRequest()
        while time.monotonic() < until:
            started = time.perf_counter()
            answer = await health.Check(request, timeout=10)
            into.append(time.perf_counter() - started)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(POLL_EVERY)

    # What is timed is the gateway's loop, not this process's: a full collection here
    # (pytest and its plugins hold ~10^5 objects) pauses the checks' own loop for 50 ms.
    gc.collect()
    gc.disable()
    try:
        await poll_health(time.monotonic() + 0.5, idle)
        stop = time.monotonic() + RUN_FOR
        await asyncio.gather(
            poll_health(stop, latencies),
            over_limit_calls(),
            *(maximum_size_calls(w) for w in range(CONCURRENT)),
        )
    finally:
        gc.enable()

    assert len(answered) >= CONCURRENT, answered  # the largest allowed calls are served
    assert len(refused) >= len(OVER_LIMIT)
    for turn, (code, message) in enumerate(refused):
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith(OVER_LIMIT[turn % len(OVER_LIMIT)][1]), message
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    assert p99 < HEALTH_BOUND, (
        f"health p99 {p99 * 1000:.1f} ms over {len(latencies)} checks"
        f" (median {statistics.median(latencies) * 1000:.1f} ms, max"
        f" {max(latencies) * 1000:.1f} ms) with {len(answered)} maximum-size calls answered;"
        f" with none running, the slowest of {len(idle)} checks took {max(idle) * 1000:.1f} ms"
    )


# --- context-aware routing ----------------------------------------------------------

# 800,000 bytes of words: an estimate of 200,004 input tokens, more than
# claude-sonnet-4's window of 200,000 before any max_tokens.
LONG = ("word " * 160_000)[:800_000]


async def test_route_skips_a_model_too_small_and_query_never_sends_it_there(
    gateway: Gateway,
) -> None:
    route = (
        await gateway.stub.Route(pb.RouteRequest(query=query(LONG, task=pb.TASK_REASONING)))
    ).route
    assert route.estimated_input_tokens == 200_004
    assert (route.model, list(route.fallback_models)) == ("gpt-4.1", ["gemini-2.5-flash"])
    assert [(s.model, s.reason) for s in route.skipped_models] == [
        (
            "claude-sonnet-4-20250514",
            "its context window of 200000 tokens cannot hold the estimated 200004 input"
            " tokens plus max_tokens 12288",
        )
    ]
    assert "claude-sonnet-4-20250514 was skipped" in route.reason
    answer = await gateway.stub.Query(pb.QueryRequest(query=query(LONG, task=pb.TASK_REASONING)))
    assert answer.model == "gpt-4.1"
    assert [a.model for a in answer.attempts] == ["gpt-4.1"]
    stats = gateway.sim.stats
    assert stats.model("claude-sonnet-4-20250514").requests == 0
    assert stats.model("gpt-4.1").requests == 1


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        (
            {"model": "claude-sonnet-4-20250514"},
            "claude-sonnet-4-20250514 cannot hold this query: it needs the estimated 200004"
            " input tokens plus max_tokens 12288, and the model's context window is 200000"
            " tokens; shorten the conversation, or name a model with a larger window:"
            " gemini-2.5-flash holds 1048576 tokens",
        ),
        (
            {"task": pb.TASK_REASONING, "disable_fallback": True},
            "no model of the route can hold this query: it needs the estimated 200004 input"
            " tokens plus max_tokens, and the largest context window of"
            " claude-sonnet-4-20250514 is 200000 tokens (claude-sonnet-4-20250514)",
        ),
    ],
)
async def test_a_query_no_model_can_hold_is_refused_before_any_relay_call(
    gateway: Gateway, fields: dict[str, object], needle: str
) -> None:
    for rpc in ("Route", "Query"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if rpc == "Route":
                await gateway.stub.Route(pb.RouteRequest(query=query(LONG, **fields)))
            else:
                await gateway.stub.Query(pb.QueryRequest(query=query(LONG, **fields)))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value).startswith(needle), details(caught.value)
    assert gateway.sim.stats.requests == 0
