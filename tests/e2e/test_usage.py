"""GetUsage end to end: the calling caller's spend, tokens, errors, cache and load."""

import asyncio

import grpc
import pytest
from google.protobuf import timestamp_pb2
from switchyard.v1 import gateway_pb2 as pb

from .conftest import Gateway, caller, nanos, query
from .test_errors import rpc_error


async def test_usage_of_the_calling_caller(gateway: Gateway):
    me = caller("reports-svc")
    spec = query("What is the capital of France? [[sim tokens=8]]")  # 16 in, 8 out on gemini
    await gateway.stub.Query(pb.QueryRequest(query=spec), metadata=me)
    await gateway.stub.Query(pb.QueryRequest(query=spec), metadata=me)  # from the cache
    with pytest.raises(grpc.aio.AioRpcError):  # a final error: one failed, unbilled attempt
        await gateway.stub.Query(
            pb.QueryRequest(query=query("Bad one [[sim fault=400]]")), metadata=me
        )
    # claude: "hello [[sim tokens=3]]" is 22 bytes: 6 + 4 = 10 input tokens, 3 output
    await gateway.stub.Query(
        pb.QueryRequest(query=query("hello [[sim tokens=3]]", model="claude-sonnet-4-20250514")),
        metadata=me,
    )
    usage = await gateway.stub.GetUsage(pb.GetUsageRequest(), metadata=me)
    assert usage.caller == "reports-svc"
    assert (usage.requests, usage.errors) == (4, 1)
    by_model = {m.model: m for m in usage.models}
    assert list(by_model) == ["claude-sonnet-4-20250514", "gemini-2.5-flash"]  # sorted
    flash = by_model["gemini-2.5-flash"]
    assert (flash.attempts, flash.failed_attempts) == (2, 1)
    assert (flash.tokens.input_tokens, flash.tokens.output_tokens) == (16, 8)
    assert nanos(flash.cost) == 16 * 2_500 + 8 * 10_000  # 120,000
    sonnet = by_model["claude-sonnet-4-20250514"]
    assert nanos(sonnet.cost) == 10 * 15_000 + 3 * 75_000  # 375,000
    assert nanos(usage.cost) == 495_000
    assert (usage.tokens.input_tokens, usage.tokens.output_tokens) == (26, 11)
    # cache: 1 hit, 3 misses (the error was a cacheable miss too)
    assert (usage.cache.hits, usage.cache.misses) == (1, 3)
    assert usage.cache.hit_rate == 0.25
    assert nanos(usage.cache.saved_cost) == 120_000
    assert list(usage.budgets) == []
    assert [(p.provider, p.in_flight) for p in usage.in_flight] == [
        ("anthropic", 0),
        ("deepseek", 0),
        ("google", 0),
        ("openai", 0),
    ]
    # the default window is the last 24 hours, aligned to minutes
    assert usage.end.seconds - usage.start.seconds in range(86_400, 86_400 + 121)
    assert usage.start.seconds % 60 == 0
    # another caller sees none of it
    theirs = await gateway.stub.GetUsage(pb.GetUsageRequest(), metadata=caller("other"))
    assert theirs.requests == 0 and list(theirs.models) == []


async def test_a_window_in_the_past_is_empty_and_a_reversed_one_is_refused(gateway: Gateway):
    await gateway.stub.Query(pb.QueryRequest(query=query("hi [[sim tokens=1]]")))
    past = pb.GetUsageRequest(
        start=timestamp_pb2.Timestamp(seconds=1_000_000_000),
        end=timestamp_pb2.Timestamp(seconds=1_000_003_600),
    )
    usage = await gateway.stub.GetUsage(past)
    assert usage.requests == 0 and usage.start.seconds == 1_000_000_000 - 1_000_000_000 % 60
    reversed_window = pb.GetUsageRequest(start=past.end, end=past.start)
    error = await rpc_error(gateway.stub.GetUsage(reversed_window))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_in_flight_relay_requests_per_provider(gateway: Gateway):
    call = gateway.stub.Query(pb.QueryRequest(query=query("hang [[sim fault=stall]]")))
    await gateway.sim.wait_until(lambda s: s.in_flight == 1, timeout=5)
    usage = await gateway.stub.GetUsage(pb.GetUsageRequest())
    assert {p.provider: p.in_flight for p in usage.in_flight}["google"] == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
