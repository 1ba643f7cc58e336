"""Route, Query and StreamQuery through the real server and simulator."""

import grpc
from switchyard.v1 import gateway_pb2 as pb

from server.simulator import SimulatorSettings

from .conftest import RELAY_KEY, Gateway, nanos, query, stream_all, usage_of

# 47 bytes -> 12 tokens + 4 for the message = 16 input tokens; the directive fixes 8 output tokens.
SIMPLE = "What is the capital of France? [[sim tokens=8]]"
SIMPLE_IN, SIMPLE_OUT = 16, 8
# gemini-2.5-flash: $2.50/M in, $10/M out -> 16 * 2,500 + 8 * 10,000 nano-dollars
SIMPLE_COST = 16 * 2_500 + 8 * 10_000  # = 120,000 nano-dollars = $0.00012


async def test_route_decides_without_calling_the_relay(gateway: Gateway):
    response = await gateway.stub.Route(
        pb.RouteRequest(query=query("Compare and evaluate the logic of these two algorithms"))
    )
    route = response.route
    assert route.model == "claude-sonnet-4-20250514" and route.provider == "anthropic"
    assert list(route.fallback_models) == ["gpt-4.1", "gemini-2.5-flash"]
    assert route.task == pb.TASK_REASONING and route.complexity == pb.COMPLEXITY_COMPLEX
    assert route.basis == pb.ROUTE_BASIS_COMPLEXITY
    assert "complex" in route.reason
    assert route.max_tokens == 8192
    # 55 bytes -> 14 + 4 = 18 input tokens at $15/M; max adds 8192 output tokens at $75/M
    assert route.estimated_input_tokens == 18
    assert nanos(route.estimated_cost.min) == 18 * 15_000
    assert nanos(route.estimated_cost.max) == 18 * 15_000 + 8192 * 75_000
    assert route.estimated_cost.min.currency_code == "USD"
    assert gateway.sim.stats.requests == 0


async def test_query_answers_with_exact_usage_and_cost(gateway: Gateway):
    response = await gateway.stub.Query(
        pb.QueryRequest(query=query(SIMPLE, labels={"team": "e2e"}))
    )
    assert response.model == "gemini-2.5-flash" and response.provider == "google"
    assert response.content.startswith("Simulated answer")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (SIMPLE_IN, SIMPLE_OUT)
    assert nanos(response.cost) == SIMPLE_COST
    assert response.finish_reason == pb.FINISH_REASON_STOP
    [attempt] = response.attempts
    assert (attempt.model, attempt.outcome, attempt.http_status) == (
        "gemini-2.5-flash",
        pb.ATTEMPT_OUTCOME_SUCCESS,
        200,
    )
    assert nanos(attempt.cost) == SIMPLE_COST
    assert response.route.model == "gemini-2.5-flash"
    assert len(response.request_id) == 16 and not response.cached
    # what the relay reported is exactly what was billed
    stats = gateway.sim.stats.model("gemini-2.5-flash")
    assert (stats.input_tokens, stats.output_tokens) == (SIMPLE_IN, SIMPLE_OUT)


async def test_stream_sends_start_then_deltas_then_one_end(gateway: Gateway):
    messages = await stream_all(gateway.stub, query(SIMPLE))
    kinds = [message.WhichOneof("event") for message in messages]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert set(kinds[1:-1]) == {"delta"}
    start, end = messages[0].start, messages[-1].end
    assert (start.model, start.provider, start.route.model) == (
        "gemini-2.5-flash",
        "google",
        "gemini-2.5-flash",
    )
    text = "".join(message.delta.text for message in messages[1:-1])
    unary = await gateway.stub.Query(pb.QueryRequest(query=query(SIMPLE)))
    assert text == unary.content  # the simulator is deterministic
    assert (end.usage.input_tokens, end.usage.output_tokens) == (SIMPLE_IN, SIMPLE_OUT)
    assert nanos(end.cost) == SIMPLE_COST
    assert end.finish_reason == pb.FINISH_REASON_STOP
    assert [a.outcome for a in end.attempts] == [pb.ATTEMPT_OUTCOME_SUCCESS]
    assert end.time_to_first_token_ms <= end.latency_ms


async def test_anthropic_wire_model_end_to_end(gateway: Gateway):
    response = await gateway.stub.Query(
        pb.QueryRequest(query=query("hello [[sim tokens=3]]", model="claude-sonnet-4-20250514"))
    )
    # 22 bytes -> 6 + 4 = 10 input tokens at $15/M, 3 output at $75/M
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 3)
    assert nanos(response.cost) == 10 * 15_000 + 3 * 75_000
    messages = await stream_all(
        gateway.stub,
        query(
            "hello [[sim tokens=3]]",
            model="claude-sonnet-4-20250514",
            cache_mode=pb.CACHE_MODE_BYPASS,  # stream from the relay, not the cache
        ),
    )
    assert "".join(m.delta.text for m in messages if m.HasField("delta")) == response.content
    assert nanos(messages[-1].end.cost) == 10 * 15_000 + 3 * 75_000


async def test_max_tokens_cuts_the_answer_and_says_so(gateway: Gateway):
    response = await gateway.stub.Query(
        pb.QueryRequest(query=query("hello [[sim tokens=50]]", max_tokens=5))
    )
    assert response.usage.output_tokens == 5
    assert response.finish_reason == pb.FINISH_REASON_LENGTH
    assert response.route.max_tokens == 5


async def test_fallback_after_overload_reports_both_attempts(gateway: Gateway):
    spec = query(
        "Compare and evaluate the logic of these two algorithms [[sim fault=529 model=claude-sonnet-4-20250514]] [[sim tokens=12]]"
    )
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert response.route.model == "claude-sonnet-4-20250514"
    assert response.model == "gpt-4.1"
    # three tries of the primary (the retry stage's default), then the fallback
    assert [(a.model, a.outcome, a.http_status) for a in response.attempts] == [
        *[("claude-sonnet-4-20250514", pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR, 529)] * 3,
        ("gpt-4.1", pb.ATTEMPT_OUTCOME_SUCCESS, 200),
    ]
    gpt = gateway.sim.stats.model("gpt-4.1")
    assert nanos(response.cost) == gpt.input_tokens * 8_000 + gpt.output_tokens * 32_000
    assert gpt.output_tokens == 12
    # the stream falls back the same way, before its first token (bypassing the cache)
    spec.cache_mode = pb.CACHE_MODE_BYPASS
    messages = await stream_all(gateway.stub, spec)
    assert messages[0].start.model == "gpt-4.1"
    assert [a.model for a in messages[-1].end.attempts][-2:] == [
        "claude-sonnet-4-20250514",
        "gpt-4.1",
    ]


async def test_caller_id_from_metadata_reaches_the_ledger(gateway: Gateway):
    await gateway.stub.Query(
        pb.QueryRequest(query=query(SIMPLE)), metadata=(("x-switchyard-caller", "billing-svc"),)
    )
    await gateway.stub.Query(pb.QueryRequest(query=query(SIMPLE)))
    for who in ("billing-svc", "anonymous"):
        summary = await usage_of(gateway, who, 60)
        assert summary.models["gemini-2.5-flash"].cost == SIMPLE_COST


async def test_deadline_shorter_than_the_relay_is_deadline_exceeded(start_gateway):
    gateway = await start_gateway(
        sim_settings=SimulatorSettings(latency_scale=1.0, api_key=RELAY_KEY)
    )
    call = gateway.stub.Query(
        pb.QueryRequest(query=query("hello [[sim latency_ms=5000]]")), timeout=0.3
    )
    try:
        await call
        raise AssertionError("expected DEADLINE_EXCEEDED")
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await gateway.sim.wait_idle(timeout=2.0)  # the relay request was closed, not left running


async def test_a_cached_stream_replays_in_the_same_shape(gateway: Gateway):
    live = await stream_all(gateway.stub, query(SIMPLE))
    replay = await stream_all(gateway.stub, query(SIMPLE))
    kinds = [m.WhichOneof("event") for m in replay]
    assert kinds == ["start", "delta", "end"]
    text = "".join(m.delta.text for m in live[1:-1])
    assert replay[1].delta.text == text
    assert (replay[0].start.model, replay[0].start.provider) == ("gemini-2.5-flash", "google")
    end = replay[-1].end
    assert end.cached and nanos(end.cost) == 0 and list(end.attempts) == []
    assert nanos(end.saved_cost) == SIMPLE_COST
    assert end.finish_reason == pb.FINISH_REASON_STOP
    assert not live[-1].end.cached and nanos(live[-1].end.saved_cost) == 0
    assert gateway.sim.stats.requests == 1


async def test_the_cache_never_crosses_callers(gateway: Gateway):
    for who in ("alpha", "beta", "alpha", "beta"):
        await gateway.stub.Query(
            pb.QueryRequest(query=query(SIMPLE)), metadata=(("x-switchyard-caller", who),)
        )
    # one relay call per caller; each caller's repeat was its own hit
    assert gateway.sim.stats.requests == 2
    for who in ("alpha", "beta"):
        summary = await usage_of(gateway, who, 60)
        assert (summary.cache_hits, summary.cache_misses) == (1, 1)
        assert summary.total.cost == SIMPLE_COST
