"""Exact cost of every kind of call, end to end, with the expected money worked out by hand.

Prices (nano-dollars per token = USD per 1M tokens x 1,000):
  claude-sonnet-4-20250514  15,000 in / 75,000 out
  gpt-4.1                    8,000 in / 32,000 out
  gemini-2.5-flash           2,500 in / 10,000 out
Input tokens: the simulator bills ceil(UTF-8 bytes / 4) + 4 per message, as the
gateway estimates. Output tokens: one per word, fixed with [[sim tokens=N]].
"""

import asyncio

import grpc
import pytest
from switchyard.v1 import gateway_pb2 as pb

from tests.helpers import until

from .conftest import Gateway, nanos, query, stream_all, usage_of

CLAUDE, GPT, GEMINI = "claude-sonnet-4-20250514", "gpt-4.1", "gemini-2.5-flash"


async def spent(gateway: Gateway) -> bool:
    return await ledger_cost(gateway) > 0


async def ledger_cost(gateway: Gateway, who: str = "anonymous") -> int:
    return (await usage_of(gateway, who, 60)).total.cost


async def test_unary(gateway: Gateway):
    # "What is the capital of France? [[sim tokens=8]]" is 47 bytes: 12 + 4 = 16 input tokens
    response = await gateway.stub.Query(
        pb.QueryRequest(query=query("What is the capital of France? [[sim tokens=8]]"))
    )
    # gemini-2.5-flash: 16 * 2,500 + 8 * 10,000 = 40,000 + 80,000
    assert nanos(response.cost) == 120_000
    assert (response.cost.units, response.cost.nanos) == (0, 120_000)
    assert not response.usage.estimated
    assert await ledger_cost(gateway) == 120_000


async def test_stream(gateway: Gateway):
    # "Name three rivers [[sim tokens=6]]" is 34 bytes: 9 + 4 = 13 input tokens
    messages = await stream_all(gateway.stub, query("Name three rivers [[sim tokens=6]]"))
    end = messages[-1].end
    # gemini-2.5-flash: 13 * 2,500 + 6 * 10,000 = 32,500 + 60,000
    assert (end.usage.input_tokens, end.usage.output_tokens) == (13, 6)
    assert nanos(end.cost) == 92_500 == nanos(end.attempts[0].cost)
    assert await ledger_cost(gateway) == 92_500


async def test_cancelled_stream_is_billed_for_what_was_received(gateway: Gateway):
    # 52 bytes: 13 + 4 = 17 input tokens; the relay sends 3 words, then goes silent
    spec = query("Cancel me now please [[sim fault=stall_mid after=3]]")
    call = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))
    received = ""
    async for message in call:
        received += message.delta.text
        if received == "Simulated answer from ":
            break
    call.cancel()
    await gateway.sim.wait_idle()
    await until(lambda: spent(gateway))
    # No usage report came: the output is estimated from the text received,
    # "Simulated answer from " = 22 bytes -> ceil(22 / 4) = 6 tokens.
    # gemini-2.5-flash: 17 * 2,500 + 6 * 10,000 = 42,500 + 60,000
    assert await ledger_cost(gateway) == 102_500
    summary = await usage_of(gateway, "anonymous", 60)
    totals = summary.models[GEMINI]
    assert (totals.input_tokens, totals.output_tokens, totals.failed_attempts) == (17, 6, 1)
    assert summary.errors == 0  # the caller cancelled: not an error


async def test_fallback_bills_the_failed_attempt_the_relay_charged(gateway: Gateway):
    # 100 bytes: 25 + 4 = 29 input tokens, on every model of the chain
    spec = query(
        "Explain this briefly [[sim fault=sse_error after=0 model=claude-sonnet-4-20250514]]"
        " [[sim tokens=5]]",
        model=CLAUDE,
    )
    messages = await stream_all(gateway.stub, spec)
    end = messages[-1].end
    assert messages[0].start.model == GPT
    *failed, answered = end.attempts
    # claude is tried three times (the retry stage's default); each try reported its
    # 29 input tokens (message_start) and the usual provisional output token before
    # failing: 29 * 15,000 + 1 * 75,000 = 510,000 each
    assert [(a.model, a.outcome) for a in failed] == [
        (CLAUDE, pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR)
    ] * 3
    assert {(a.usage.input_tokens, a.usage.output_tokens) for a in failed} == {(29, 1)}
    assert [nanos(a.cost) for a in failed] == [510_000] * 3
    # gpt-4.1: 29 * 8,000 + 5 * 32,000 = 232,000 + 160,000
    assert nanos(answered.cost) == 392_000
    assert nanos(end.cost) == 3 * 510_000 + 392_000 == await ledger_cost(gateway)
    assert gateway.sim.stats.model(CLAUDE).input_tokens == 3 * 29  # what the relay reported


async def test_retried_down_the_chain_sums_every_billed_attempt(gateway: Gateway):
    # Three tries: claude breaks after reporting its input, gpt-4.1 answers 503 (not
    # billed), gemini-2.5-flash answers. The prompt is 117 bytes: 30 + 4 = 34 input tokens.
    spec = query(
        "Retry [[sim fault=sse_error after=0 model=claude-sonnet-4-20250514]]"
        " [[sim fault=503 model=gpt-4.1]] [[sim tokens=4]]",
        model=CLAUDE,
    )
    assert len(spec.prompt.encode()) == 117
    messages = await stream_all(gateway.stub, spec)
    end = messages[-1].end
    # every model is tried three times; claude's tries report 34 input tokens and the
    # provisional output token each: 34 * 15,000 + 75,000 = 585,000
    assert [(a.model, nanos(a.cost)) for a in end.attempts] == [
        *[(CLAUDE, 585_000)] * 3,
        *[(GPT, 0)] * 3,
        (GEMINI, 34 * 2_500 + 4 * 10_000),  # 85,000 + 40,000 = 125,000
    ]
    assert nanos(end.cost) == 3 * 585_000 + 125_000 == await ledger_cost(gateway)


async def test_unary_fallback_after_an_unbilled_overload(gateway: Gateway):
    spec = query(
        "Overload [[sim fault=529 model=claude-sonnet-4-20250514]] [[sim tokens=7]]", model=CLAUDE
    )
    assert len(spec.prompt.encode()) == 74
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    # 74 bytes: 19 + 4 = 23 input tokens; the three 529s are not billed;
    # gpt-4.1: 23 * 8,000 + 7 * 32,000 = 184,000 + 224,000
    assert [nanos(a.cost) for a in response.attempts] == [0, 0, 0, 408_000]
    assert nanos(response.cost) == 408_000


async def test_a_retried_model_bills_each_try_the_relay_charged(gateway: Gateway):
    # The first claude try breaks after message_start (29 input tokens and the
    # provisional output token reported); the retry on the same model answers 5 tokens.
    spec = query(
        "Explain this briefly [[sim fault=sse_error after=0 times=1]] [[sim tokens=5]]",
        model=CLAUDE,
        disable_fallback=True,
    )
    assert len(spec.prompt.encode()) == 77  # 20 + 4 = 24 input tokens
    messages = await stream_all(gateway.stub, spec)
    first, second = messages[-1].end.attempts
    assert (first.model, first.outcome, second.model, second.outcome) == (
        CLAUDE,
        pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR,
        CLAUDE,
        pb.ATTEMPT_OUTCOME_SUCCESS,
    )
    assert nanos(first.cost) == 24 * 15_000 + 1 * 75_000  # 435,000
    assert nanos(second.cost) == 24 * 15_000 + 5 * 75_000  # 735,000
    assert nanos(messages[-1].end.cost) == 1_170_000 == await ledger_cost(gateway)


async def test_cached_answer_costs_nothing_and_reports_the_saving(gateway: Gateway):
    spec = query("What is the capital of Korea? [[sim tokens=8]]")  # 46 bytes: 12 + 4 = 16 tokens
    first = await gateway.stub.Query(pb.QueryRequest(query=spec))
    second = await gateway.stub.Query(pb.QueryRequest(query=spec))
    # first: 16 * 2,500 + 8 * 10,000 = 120,000; second: from the cache
    assert nanos(first.cost) == 120_000 and not first.cached
    assert second.cached and nanos(second.cost) == 0 and second.cost.currency_code == "USD"
    assert nanos(second.saved_cost) == 120_000
    assert (second.usage.input_tokens, second.usage.output_tokens) == (0, 0)
    assert list(second.attempts) == [] and second.content == first.content
    assert second.model == GEMINI
    assert gateway.sim.stats.requests == 1
    assert await ledger_cost(gateway) == 120_000  # billed once


async def test_concurrent_identical_calls_are_billed_once(gateway: Gateway):
    # the relay takes 300 ms to answer, so the five calls overlap; one relay call serves them
    spec = query("Coalesce [[sim tokens=3 latency_ms=300]]")  # 40 bytes: 10 + 4 = 14 tokens
    responses = await asyncio.gather(
        *(gateway.stub.Query(pb.QueryRequest(query=spec)) for _ in range(5))
    )
    assert gateway.sim.stats.requests == 1
    # 14 * 2,500 + 3 * 10,000 = 35,000 + 30,000
    assert sorted(nanos(r.cost) for r in responses) == [0, 0, 0, 0, 65_000]
    assert [r.cached for r in responses].count(True) == 4
    assert {nanos(r.saved_cost) for r in responses if r.cached} == {65_000}
    assert await ledger_cost(gateway) == 65_000


async def test_an_identical_stream_follows_the_first_live_and_pays_nothing(gateway: Gateway):
    # The relay sends 3 words, then goes silent: whatever the second stream gets
    # before the first is cancelled, it got live, while the answer was unfinished.
    spec = query("Follow me [[sim fault=stall_mid after=3]]")  # 41 bytes: 11 + 4 = 15 tokens
    first = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))
    received = ""
    async for message in first:
        received += message.delta.text
        if received == "Simulated answer from ":
            break
    second = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))
    messages = aiter(second)
    assert (await anext(messages)).start.model == GEMINI
    followed = ""
    while followed != received:
        followed += (await anext(messages)).delta.text
    assert gateway.sim.stats.requests == 1
    first.cancel()  # the first caller goes away; the second cannot start over mid-answer
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await anext(messages)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # "Simulated answer from " = 22 bytes -> ceil(22 / 4) = 6 tokens delivered
    assert "after 6 tokens were delivered" in (raised.value.details() or "")
    await gateway.sim.wait_idle()
    await until(lambda: spent(gateway))
    # Only the first stream is billed, for what it received (no usage report came):
    # gemini-2.5-flash: 15 * 2,500 + 6 * 10,000 = 37,500 + 60,000
    assert await ledger_cost(gateway) == 97_500
    assert gateway.sim.stats.requests == 1


@pytest.mark.parametrize("mode", [pb.CACHE_MODE_BYPASS, pb.CACHE_MODE_REFRESH])
async def test_bypass_and_refresh_pay_again(gateway: Gateway, mode):
    spec = query("Twice [[sim tokens=2]]")  # 22 bytes: 6 + 4 = 10 tokens
    await gateway.stub.Query(pb.QueryRequest(query=spec))
    spec.cache_mode = mode
    again = await gateway.stub.Query(pb.QueryRequest(query=spec))
    # 10 * 2,500 + 2 * 10,000 = 45,000, paid twice
    assert not again.cached and nanos(again.cost) == 45_000
    assert await ledger_cost(gateway) == 90_000 and gateway.sim.stats.requests == 2


async def test_warm_temperature_is_never_cached(gateway: Gateway):
    spec = query("Be creative [[sim tokens=2]]", temperature=0.7)
    for _ in range(2):
        response = await gateway.stub.Query(pb.QueryRequest(query=spec))
        assert not response.cached
    assert gateway.sim.stats.requests == 2


async def test_an_error_is_not_cached(gateway: Gateway):
    spec = query("Refuse me [[sim fault=400 times=1]]")
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.stub.Query(pb.QueryRequest(query=spec))
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert not response.cached and gateway.sim.stats.requests == 2
