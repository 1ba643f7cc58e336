"""The Python client (sync and asyncio) against the real gateway over real sockets."""

import asyncio
import json
from decimal import Decimal

import jsonschema
import pytest
from switchyard_client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    Image,
    InvalidRequestError,
    Message,
    RateLimitedError,
    Reasoning,
    Tool,
    UnavailableError,
    events,
)
from switchyard_client.requests import QueryOptions

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


# Tools, structured output, images and reasoning: the client's round trips against the
# simulator on both wires (server/simulator/features.py lists the directives).
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
}
WEATHER = Tool("get_weather", "The current weather in a city", WEATHER_PARAMETERS)
TIME = Tool("get_time", "The time now")  # no parameters
WIRES = pytest.mark.parametrize("model", ["gpt-4.1", "claude-sonnet-4-20250514"])


def weather(city: str, unit: str, days: int = 1) -> str:
    """The tool: short, so that the simulator's answer quotes it whole."""
    return f"21 degrees {unit}"


@WIRES
async def test_a_tool_round_trip_unary_and_streamed(gateway: Gateway, model: str):
    question = "What is the weather in Lisbon? [[tool:get_weather]]"

    def use() -> tuple:
        with Client(gateway.address) as client:
            first = client.query(question, model=model, tools=[WEATHER, TIME])
            results = {call.id: weather(**call.arguments) for call in first.tool_calls}
            final = client.reply(first, results)
            with client.stream(question, model=model, tools=[WEATHER, TIME]) as stream:
                seen = list(stream.events())
            with client.stream_reply(stream, results) as streamed_final:
                streamed_text = "".join(streamed_final)
            return first, final, stream, seen, streamed_text

    first, final, stream, seen, streamed_text = await asyncio.to_thread(use)
    [call] = first.tool_calls
    assert first.finish_reason == "TOOL_CALLS" and call.name == "get_weather"
    jsonschema.validate(call.arguments, WEATHER_PARAMETERS)
    assert type(call.arguments.get("days", 1)) is int  # an integer stays one
    assert final.finish_reason == "STOP" and final.model == model
    assert weather(**call.arguments) in final.text  # the model saw the result
    # streamed: id and name first, then fragments, then the call whole, then the end
    kinds = [type(event).__name__ for event in seen]
    assert kinds[0] == "ToolCallStarted" and kinds[-2:] == ["ToolCallCompleted", "StreamFinished"]
    fragments = "".join(e.fragment for e in seen if isinstance(e, events.ToolCallArguments))
    assert json.loads(fragments) == call.arguments == seen[-2].call.arguments
    assert stream.tool_calls == first.tool_calls and stream.summary.finish_reason == "TOOL_CALLS"
    assert weather(**call.arguments) in streamed_text


@WIRES
async def test_parallel_and_empty_argument_calls_each_get_their_result(
    gateway: Gateway, model: str
):
    async with AsyncClient(gateway.address) as client:
        first = await client.query(
            "Weather and time? [[tools:get_weather,get_time:empty]]",
            model=model,
            tools=[WEATHER, TIME],
        )
        async with client.stream(
            "Weather and time? [[tools:get_weather,get_time:empty]]",
            model=model,
            tools=[WEATHER, TIME],
        ) as stream:
            completed = [
                e.call async for e in stream.events() if isinstance(e, events.ToolCallCompleted)
            ]
        results = {first.tool_calls[0].id: "21 C", first.tool_calls[1].id: "noon"}
        final = await client.reply(first, results)
    assert [call.name for call in first.tool_calls] == ["get_weather", "get_time"]
    assert first.tool_calls[1].arguments == {}  # "" on the OpenAI wire, {} on Anthropic's
    assert [call.name for call in completed] == ["get_weather", "get_time"]
    assert completed[1].arguments == {}
    assert "21 C" in final.text and "noon" in final.text


async def test_a_forced_tool_is_called_then_released_for_the_answer(gateway: Gateway):
    async with AsyncClient(gateway.address) as client:
        first = await client.query("Weather in Lisbon?", tools=[WEATHER], tool_choice=WEATHER)
        [call] = first.tool_calls
        again = await client.reply(first, {call.id: "21 C"})  # still forced: another call
        final = await client.reply(first, {call.id: "21 C"}, tool_choice="auto")
    assert call.name == "get_weather" and again.finish_reason == "TOOL_CALLS"
    assert final.finish_reason == "STOP" and "21 C" in final.text


async def test_a_thinking_round_trip_keeps_the_signature(gateway: Gateway):
    claude = "claude-sonnet-4-20250514"
    question = "What is the weather in Lisbon? [[tool:get_weather]]"
    options: QueryOptions = {
        "model": claude,
        "tools": [WEATHER],
        "thinking_budget": 1024,
        "max_tokens": 2048,
    }
    async with AsyncClient(gateway.address) as client:
        first = await client.query(question, **options)
        [thought] = first.reasoning
        assert isinstance(thought, Reasoning)  # not redacted: it has text and a signature
        [call] = first.tool_calls
        final = await client.reply(first, {call.id: "21 C"})
        async with client.stream(question, **options) as stream:
            streamed = [e async for e in stream.events() if isinstance(e, events.ReasoningDelta)]
        streamed_final = await client.reply(stream, {call.id: "21 C"})
        # what the helper prevents: the same turn without the thinking is refused
        dropped = first.next_messages({call.id: "21 C"})
        dropped[1] = Message.assistant(*first.tool_calls)
        with pytest.raises(InvalidRequestError, match="thinking"):
            await client.query(**(options | {"messages": dropped}))
    assert thought.text and thought.signature
    assert final.finish_reason == "STOP" and "21 C" in final.text
    assert stream.reasoning == first.reasoning  # deltas joined: the same text and signature
    assert "".join(e.text for e in streamed) == thought.text
    assert [e.signature for e in streamed if e.signature] == [thought.signature]
    assert streamed_final.finish_reason == "STOP" and "21 C" in streamed_final.text


@WIRES
async def test_a_json_schema_answer_validates_and_one_that_does_not_falls_back(
    gateway: Gateway, model: str
):
    person = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
        "additionalProperties": False,  # OpenAI's strict mode requires it
    }
    async with AsyncClient(gateway.address) as client:
        answer = await client.query(
            "Who wrote it?", model=model, response_format=person, strict=True
        )
        async with client.stream(
            "Who wrote it? [[json:invalid]]", model=model, response_format=person
        ) as stream:
            text = "".join([delta async for delta in stream])
        with pytest.raises(UnavailableError) as caught:
            await client.query(
                "Who wrote it? [[json:invalid]]", model=model, response_format=person
            )
    jsonschema.validate(answer.json(), person)
    assert answer.validation == "VALID"
    assert stream.summary.validation == "INVALID" and stream.summary.validation_error
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(text), person)
    # every model of the chain answered, none fitted: each attempt says why
    assert {a.outcome for a in caught.value.attempts} == {"INVALID_OUTPUT"}
    assert len(caught.value.attempts) >= 2 and "did not validate" in caught.value.attempts[0].error


async def test_an_image_by_url_and_by_bytes_is_answered(gateway: Gateway, tmp_path):
    picture = tmp_path / "dot.png"
    picture.write_bytes(PNG)
    async with AsyncClient(gateway.address) as client:
        answer = await client.query(
            messages=[
                Message.user(
                    "What is on these?",
                    Image.from_file(picture),
                    Image(url="https://example.com/chart.png"),
                )
            ],
            model="claude-sonnet-4-20250514",
        )
        with pytest.raises(InvalidRequestError, match="image"):
            await client.query(
                messages=[Message.user("And this?", Image.from_file(picture))],
                model="deepseek-v3.2",  # takes no images: refused before any relay call
            )
    assert answer.text.startswith("Simulated answer") and answer.usage.input_tokens > 0


# The smallest PNG: one transparent pixel.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
