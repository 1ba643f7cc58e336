import asyncio

import httpx
import pytest

from server.domain import Completion, ModelCall, Outcome, StreamStart, TextDelta, Usage
from server.errors import RelayUnavailableError, StreamInterruptedError
from server.pipeline.attempt import RelayAttempt
from server.relay.client import RelayClient
from server.settings import RelaySettings

from ..relay.mock_relay import OPENAI_CHUNKS, MockRelay, streamed
from .fakes import CATALOG, routed_call

GPT = CATALOG.models["gpt-4.1"]  # $8/M in = 8,000 nanos/token; $32/M out = 32,000


def attempt_stage(respond) -> RelayAttempt:
    relay = RelayClient(
        "http://relay.test/v1", RelaySettings(api_key="k"), transport=MockRelay(respond).transport
    )
    return RelayAttempt(relay, default_limit=10.0)


def item(text: str = "hi") -> ModelCall:
    return ModelCall(routed_call(text, model="gpt-4.1"), GPT, 64)


async def test_success_is_recorded_with_exact_cost():
    stage = attempt_stage(
        lambda r: httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3},
            },
        )
    )
    target = item()
    await stage.query(target)
    [attempt] = target.call.attempts
    assert attempt.outcome is Outcome.SUCCESS and attempt.http_status == 200
    assert attempt.usage == Usage(10, 3)
    assert attempt.cost == 10 * 8_000 + 3 * 32_000  # 176,000 nano-dollars = $0.000176


async def test_failure_is_recorded_with_status_and_no_cost():
    stage = attempt_stage(lambda r: httpx.Response(503))
    target = item()
    with pytest.raises(RelayUnavailableError):
        await stage.query(target)
    [attempt] = target.call.attempts
    assert (attempt.outcome, attempt.http_status, attempt.cost) == (Outcome.RETRYABLE_ERROR, 503, 0)
    assert attempt.error.startswith("HTTP 503")


async def test_stream_marks_its_start_and_records_before_the_end_is_passed_on():
    stage = attempt_stage(lambda r: httpx.Response(200, content=streamed(OPENAI_CHUNKS)))
    target = item()
    events = []
    async for event in stage.stream(target):
        if isinstance(event, Completion):
            assert len(target.call.attempts) == 1  # already recorded
        events.append(event)
    assert isinstance(events[0], StreamStart)
    assert events[1:3] == [TextDelta("Hello "), TextDelta("world")]
    assert target.call.first_token_at is not None
    assert target.call.attempts[0].cost == 9 * 8_000 + 2 * 32_000


async def test_failure_after_first_text_is_an_interruption_billed_for_what_arrived():
    stage = attempt_stage(
        lambda r: httpx.Response(
            200, content=streamed(OPENAI_CHUNKS[:3], then=httpx.ReadError("reset"))
        )
    )
    target = item()
    with pytest.raises(StreamInterruptedError, match="after 3 tokens"):
        async for _ in stage.stream(target):
            pass
    [attempt] = target.call.attempts
    assert attempt.outcome is Outcome.INTERRUPTED
    # "hi" -> 1 + 4 input tokens; "Hello world" -> 3 output tokens, both estimated
    assert attempt.usage == Usage(5, 3, estimated=True)
    assert attempt.cost == 5 * 8_000 + 3 * 32_000


async def test_cancel_mid_stream_records_a_cancelled_attempt_with_partial_usage():
    gate = asyncio.Event()

    async def slow_body():
        for chunk in OPENAI_CHUNKS[:3]:
            yield chunk
        await gate.wait()
        yield OPENAI_CHUNKS[3]

    stage = attempt_stage(lambda r: httpx.Response(200, content=slow_body()))
    target = item()
    stream = stage.stream(target)
    assert isinstance(await anext(stream), StreamStart)
    assert await anext(stream) == TextDelta("Hello ")
    assert await anext(stream) == TextDelta("world")
    await stream.aclose()  # what the servicer does when the caller goes away
    [attempt] = target.call.attempts
    assert attempt.outcome is Outcome.CANCELLED
    assert attempt.usage == Usage(5, 3, estimated=True)


async def test_cached_input_is_priced_at_the_cached_price():
    stage = attempt_stage(
        lambda r: httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": 1000,
                    "completion_tokens": 10,
                    "prompt_tokens_details": {"cached_tokens": 800},
                },
            },
        )
    )
    target = item()
    await stage.query(target)
    [attempt] = target.call.attempts
    assert attempt.usage == Usage(1000, 10, cached_input_tokens=800)
    # gpt-4.1: 200 uncached * 8,000 + 800 cached * 2,000 ($2/M) + 10 * 32,000
    assert attempt.cost == 200 * 8_000 + 800 * 2_000 + 10 * 32_000 == 3_520_000
