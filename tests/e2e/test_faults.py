"""Fault injection: every upstream fault against the real gateway and simulator.

Each case asserts the exact status, the attempts, the accounted usage and cost,
and afterwards that no limiter slot, task or relay connection was left behind.
Prices (nano-dollars per token): gemini-2.5-flash 2,500 in / 10,000 out;
gpt-4.1 8,000 / 32,000; claude-sonnet-4 15,000 / 75,000; deepseek 420 / 420.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time

import grpc
import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.app import create_server
from server.domain import Identity, Message, Request, Role
from server.settings import load_settings
from server.simulator import RelaySimulator, SimulatorSettings
from server.state.sql.database import SqliteDatabase
from server.state.sql.ledger import SqlLedger
from tests.helpers import until

from .conftest import RELAY_KEY, Gateway, details, nanos, query, usage_of

FAST_RETRIES = {
    "SWITCHYARD_RETRY_BASE_DELAY": "0.001",
    "SWITCHYARD_RETRY_MAX_DELAY": "0.004",
    "SWITCHYARD_RELAY_READ_TIMEOUT": "0.3",
    "SWITCHYARD_RELAY_MAX_CONNECTIONS": "2",  # a leaked connection would starve the pool
    "SWITCHYARD_CACHE_ENABLED": "false",  # every call here must reach the relay
}
PRICES = {
    "gemini-2.5-flash": (2_500, 10_000),
    "gpt-4.1": (8_000, 32_000),
    "claude-sonnet-4-20250514": (15_000, 75_000),
    "deepseek-v3.2": (420, 420),
}
SUCCESS, RETRYABLE, FINAL = (
    pb.ATTEMPT_OUTCOME_SUCCESS,
    pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR,
    pb.ATTEMPT_OUTCOME_FINAL_ERROR,
)
SKIPPED, INTERRUPTED = pb.ATTEMPT_OUTCOME_SKIPPED, pb.ATTEMPT_OUTCOME_INTERRUPTED


def estimate(text: str) -> int:
    """The documented estimate, written out: one token per 4 bytes of UTF-8, rounded up."""
    return math.ceil(len(text.encode()) / 4)


def priced(model: str, input_tokens: int, output_tokens: int) -> int:
    price_in, price_out = PRICES[model]
    return input_tokens * price_in + output_tokens * price_out


def relay_reported_cost(gateway: Gateway) -> int:
    """What the relay billed, priced by the catalog, over every model."""
    stats = gateway.sim.stats
    return sum(priced(m, stats.model(m).input_tokens, stats.model(m).output_tokens) for m in PRICES)


async def summary(gateway: Gateway, caller: str = "anonymous"):
    """The ledger's figures for `caller` over the last hour."""
    return await usage_of(gateway, caller)


async def billed(gateway: Gateway, caller: str = "anonymous"):
    """The ledger's totals per model for `caller`."""
    return (await summary(gateway, caller)).models


async def has_billed(gateway: Gateway) -> bool:
    return bool(await billed(gateway))


async def ledger_cost(gateway: Gateway, caller: str = "anonymous") -> int:
    return (await summary(gateway, caller)).total.cost


def outcomes(attempts) -> list[tuple[str, int, int]]:
    return [(a.model, a.outcome, a.http_status) for a in attempts]


@pytest.fixture
async def start_gateway(start_gateway):
    """Start gateways as usual, and check each for leaks when the test ends."""
    started: list[tuple[Gateway, set[asyncio.Task]]] = []

    async def start(**kwargs) -> Gateway:
        gateway = await start_gateway(**kwargs)
        started.append((gateway, set(asyncio.all_tasks())))
        return gateway

    yield start
    for gateway, tasks_before in started:
        await assert_no_leaks(gateway, tasks_before)


@pytest.fixture
async def gateway(start_gateway) -> Gateway:
    return await start_gateway(env=FAST_RETRIES)


async def assert_no_leaks(gateway: Gateway, tasks_before: set[asyncio.Task]) -> None:
    """Nothing in flight at the relay, every limiter slot back, no stray task, no lost connection."""
    await gateway.sim.wait_idle(timeout=2.0)
    limits = gateway.app.pipeline.limits
    for cap in limits.providers.values():
        assert (cap.in_use, cap.waiters) == (0, 0), cap.name
    for model in gateway.app.pipeline.router.catalog.models.values():
        cap = limits.of(model).model_cap
        assert (cap.in_use, cap.waiters) == (0, 0), cap.name
    assert limits.relay.waiters == 0
    current = asyncio.current_task()

    def stray() -> list[asyncio.Task]:
        return [
            t
            for t in asyncio.all_tasks() - tasks_before
            if t is not current and not t.done() and not _standing_task(t)
        ]

    # handler tasks end just after their status is sent
    with contextlib.suppress(TimeoutError):
        await until(lambda: not stray(), within=1.0)
    assert not stray(), stray()
    # With a pool of 2 connections, two relay requests at once only succeed if none
    # leaked. (Straight through the relay client: the limiter may be spent by the test.)
    relay, model = gateway.app.relay, gateway.app.pipeline.router.catalog.models["gpt-4.1"]
    probe = Request(
        messages=(Message.of(Role.USER, "check [[sim tokens=1]] [[sim latency_ms=1]]"),)
    )
    await asyncio.gather(*(relay.complete(model, probe, 5, 5.0) for _ in range(2)))


_STANDING = (
    "RequestHandler.start",  # the simulator's task per open keep-alive connection
    "AioServer._request_call",  # grpc's server waiting for the next call
)


def _standing_task(task: asyncio.Task) -> bool:
    """Tasks that exist while servers run, whatever the calls did."""
    shown = repr(task)
    if "Event.wait()" in shown and "_release_waiter(" in shown:
        # The task asyncio.wait_for wraps around an Event.wait(): the ledger writer's
        # flush timer makes a new one each `flush_interval`. Its owner is checked itself.
        return True
    return any(name in shown for name in _STANDING)


async def rpc_error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value


async def stream_until_error(gateway: Gateway, spec: pb.QuerySpec):
    """Read a stream that must fail; return the messages before the error, and the error."""
    received = []
    call = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            received.append(message)
    return received, caught.value


# --- retry and fallback ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "at_least"),
    [("retry_after_ms=200", 0.2), ("retry_after=0.25", 0.25), ("retry_after_date=1", 0.0)],
)
async def test_429_with_retry_after_then_success(gateway: Gateway, hint, at_least):
    started = time.monotonic()
    spec = query(
        f"hello [[sim fault=429 {hint} times=1]] [[sim tokens=4]]", model="gemini-2.5-flash"
    )
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert outcomes(response.attempts) == [
        ("gemini-2.5-flash", RETRYABLE, 429),
        ("gemini-2.5-flash", SUCCESS, 200),
    ]
    assert time.monotonic() - started >= at_least  # the hint was waited out
    assert nanos(response.cost) == relay_reported_cost(gateway) == await ledger_cost(gateway)


async def test_429_storm_on_the_primary_falls_back(gateway: Gateway):
    spec = query(
        "hello [[sim fault=429 model=gemini-2.5-flash]] [[sim tokens=4]]", model="gemini-2.5-flash"
    )
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert outcomes(response.attempts) == [
        *[("gemini-2.5-flash", RETRYABLE, 429)] * 3,
        ("gpt-4.1", SUCCESS, 200),
    ]
    gpt = gateway.sim.stats.model("gpt-4.1")
    assert gpt.output_tokens == 4
    assert (
        nanos(response.cost) == priced("gpt-4.1", gpt.input_tokens, 4) == await ledger_cost(gateway)
    )


@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_server_errors_are_retried(gateway: Gateway, status):
    spec = query(f"hello [[sim fault={status} times=1]] [[sim tokens=3]]", model="deepseek-v3.2")
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert outcomes(response.attempts) == [
        ("deepseek-v3.2", RETRYABLE, status),
        ("deepseek-v3.2", SUCCESS, 200),
    ]
    # "hello [[sim fault=5xx times=1]] [[sim tokens=3]]" is 47 bytes: 12 + 4 input tokens
    assert (response.usage.input_tokens, response.usage.output_tokens) == (16, 3)
    assert nanos(response.cost) == 16 * 420 + 3 * 420


async def test_401_is_final_without_retry_or_fallback(gateway: Gateway):
    error = await rpc_error(
        gateway.stub.Query(pb.QueryRequest(query=query("hi [[sim fault=401]]")))
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert gateway.sim.stats.requests == 1
    assert await ledger_cost(gateway) == 0


async def test_spend_limit_is_final_failed_precondition(gateway: Gateway):
    error = await rpc_error(
        gateway.stub.Query(pb.QueryRequest(query=query("hi [[sim fault=spend_limit]]")))
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "spend limit" in details(error)
    assert gateway.sim.stats.requests == 1


async def test_context_length_moves_to_a_larger_window_only(gateway: Gateway):
    spec = query(
        "long [[sim fault=context_length model=deepseek-v3.2]] [[sim tokens=2]]",
        model="deepseek-v3.2",
    )
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert outcomes(response.attempts) == [("deepseek-v3.2", FINAL, 400), ("gpt-4.1", SUCCESS, 200)]
    # gpt-4.1 (1M tokens) failing leaves only claude (200k): skipped, so the caller is told
    spec = query("long [[sim fault=context_length model=gpt-4.1]]", model="gpt-4.1")
    error = await rpc_error(gateway.stub.Query(pb.QueryRequest(query=spec)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "context window" in details(error)
    assert gateway.sim.stats.model("claude-sonnet-4-20250514").requests == 0


async def test_stall_before_the_first_token_times_out_and_falls_back(start_gateway):
    # six stalls in a row would open gemini's circuit (5 by default): not what is tested here
    gateway = await start_gateway(env={**FAST_RETRIES, "SWITCHYARD_BREAKER_FAILURES": "100"})
    spec = query(
        "hello [[sim fault=stall model=gemini-2.5-flash]] [[sim tokens=3]]",
        model="gemini-2.5-flash",
    )
    for rpc in ("Query", "StreamQuery"):
        if rpc == "Query":
            response = await gateway.stub.Query(pb.QueryRequest(query=spec))
            attempts, answered_by = response.attempts, response.model
        else:
            messages = [
                m async for m in gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))
            ]
            attempts, answered_by = messages[-1].end.attempts, messages[0].start.model
        assert answered_by == "gpt-4.1"
        assert outcomes(attempts) == [
            *[("gemini-2.5-flash", RETRYABLE, 0)] * 3,
            ("gpt-4.1", SUCCESS, 200),
        ]
        assert "sent nothing for 0.3s" in attempts[0].error


# --- streams that break -----------------------------------------------------------------


@pytest.mark.parametrize("fault", ["stall_mid after=3", "reset after=3", "sse_error after=3"])
async def test_a_stream_broken_after_text_ends_with_an_error_and_bills_what_arrived(
    gateway: Gateway, fault
):
    prompt = f"hello [[sim fault={fault}]] [[sim tokens=10]]"
    received, error = await stream_until_error(gateway, query(prompt, model="gemini-2.5-flash"))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert received[0].HasField("start") and not any(m.HasField("end") for m in received)
    text = "".join(m.delta.text for m in received[1:])
    assert len(text.split()) == 3  # exactly the three tokens sent before the fault
    delivered = estimate(text)
    assert f"after {delivered} tokens were delivered" in details(error)
    # Billed: the estimated input ("hello ..." + 4 per message) and the text that arrived.
    input_tokens = estimate(prompt) + 4
    totals = (await billed(gateway))["gemini-2.5-flash"]
    assert (totals.input_tokens, totals.output_tokens) == (input_tokens, delivered)
    assert totals.cost == priced("gemini-2.5-flash", input_tokens, delivered)
    assert gateway.sim.stats.model("gpt-4.1").requests == 0  # no fallback after the first token


async def test_a_stream_without_done_is_an_error_not_a_clean_finish(gateway: Gateway):
    received, error = await stream_until_error(
        gateway, query("hi [[sim fault=no_done]] [[sim tokens=5]]")
    )
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "without its final event" in details(error)
    assert not any(m.HasField("end") for m in received)
    # the usage chunk did arrive before the cut: that exact usage is billed
    assert await ledger_cost(gateway) == relay_reported_cost(gateway) > 0


async def test_a_stream_without_usage_is_estimated_and_flagged(gateway: Gateway):
    prompt = "hi [[sim fault=no_usage]] [[sim tokens=5]]"
    messages = [
        m async for m in gateway.stub.StreamQuery(pb.StreamQueryRequest(query=query(prompt)))
    ]
    end = messages[-1].end
    text = "".join(m.delta.text for m in messages[1:-1])
    assert end.usage.estimated
    assert (end.usage.input_tokens, end.usage.output_tokens) == (
        estimate(prompt) + 4,
        estimate(text),
    )
    assert nanos(end.cost) == priced("gemini-2.5-flash", estimate(prompt) + 4, estimate(text))


async def test_sse_error_before_the_first_token_is_retried(gateway: Gateway):
    spec = query("hi [[sim fault=sse_error times=1]] [[sim tokens=4]]")
    messages = [m async for m in gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))]
    assert outcomes(messages[-1].end.attempts) == [
        ("gemini-2.5-flash", RETRYABLE, 0),
        ("gemini-2.5-flash", SUCCESS, 200),
    ]
    assert messages[-1].end.usage.output_tokens == 4


@pytest.mark.parametrize(
    ("fault", "model"),
    [("ping", "claude-sonnet-4-20250514"), ("ping", "gpt-4.1"), ("empty_choices", "gpt-4.1")],
)
async def test_keepalives_and_empty_chunks_are_never_sent_as_tokens(gateway: Gateway, fault, model):
    spec = query(f"hi [[sim fault={fault}]] [[sim tokens=6]]", model=model)
    messages = [m async for m in gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))]
    deltas = [m.delta.text for m in messages[1:-1]]
    assert all(deltas)  # no empty delta was forwarded
    assert len("".join(deltas).split()) == 6
    assert messages[-1].end.usage.output_tokens == 6 and not messages[-1].end.usage.estimated


# --- deadlines, cancellation, breakers, limits -------------------------------------------


async def test_caller_deadline_shorter_than_the_relay(start_gateway):
    gateway = await start_gateway(
        env=FAST_RETRIES, sim_settings=SimulatorSettings(latency_scale=1.0, api_key=RELAY_KEY)
    )
    spec = query("hello [[sim latency_ms=3000]]", model="gemini-2.5-flash")
    error = await rpc_error(gateway.stub.Query(pb.QueryRequest(query=spec), timeout=0.25))
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await gateway.sim.wait_idle(timeout=1.0)  # the relay request was abandoned, not left running
    assert gateway.sim.stats.model("gpt-4.1").requests == 0  # no fallback past the deadline


async def test_caller_cancel_mid_stream_closes_the_relay_request_at_once(start_gateway):
    sim = SimulatorSettings(latency_scale=1.0, tokens_per_second=50, api_key=RELAY_KEY)
    gateway = await start_gateway(env=FAST_RETRIES, sim_settings=sim)
    spec = query("tell me [[sim tokens=200]] [[sim latency_ms=1]]", model="gemini-2.5-flash")
    call = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))
    received = [await call.read() for _ in range(3)]
    assert received[0].HasField("start")
    await gateway.sim.wait_until(lambda s: s.model("gemini-2.5-flash").in_flight == 1, 1.0)
    cancelled_at = time.monotonic()
    call.cancel()
    stats = await gateway.sim.wait_until(lambda s: s.model("gemini-2.5-flash").in_flight == 0, 1.0)
    assert time.monotonic() - cancelled_at < 0.1  # the relay request is closed within 100 ms
    sent = stats.model("gemini-2.5-flash").tokens_sent
    assert sent < 200  # reading stopped: the relay did not get to send the whole answer
    # the handler finishes its bookkeeping as it unwinds
    await until(lambda: has_billed(gateway))
    cancelled = (await billed(gateway))["gemini-2.5-flash"]
    assert cancelled.failed_attempts == 1 and 0 < cancelled.output_tokens <= estimate(
        " ".join(["wordwordword"] * sent)
    )


async def test_an_open_circuit_skips_the_model_and_route_shows_it(start_gateway):
    gateway = await start_gateway(
        env={
            **FAST_RETRIES,
            "SWITCHYARD_BREAKER_FAILURES": "3",
            "SWITCHYARD_RETRY_MAX_ATTEMPTS": "1",
        }
    )
    failing = query(
        "hi [[sim fault=503 model=gemini-2.5-flash]] [[sim tokens=2]]", model="gemini-2.5-flash"
    )
    for _ in range(3):
        await gateway.stub.Query(pb.QueryRequest(query=failing))
    route = (await gateway.stub.Route(pb.RouteRequest(query=failing))).route
    states = {s.model: s for s in route.model_states}
    assert states["gemini-2.5-flash"].circuit == pb.CIRCUIT_STATE_OPEN
    assert 25_000 < states["gemini-2.5-flash"].retry_in_ms <= 30_000
    assert states["gpt-4.1"].circuit == pb.CIRCUIT_STATE_CLOSED
    before = gateway.sim.stats.model("gemini-2.5-flash").requests
    response = await gateway.stub.Query(pb.QueryRequest(query=failing))
    assert outcomes(response.attempts) == [
        ("gemini-2.5-flash", SKIPPED, 0),
        ("gpt-4.1", SUCCESS, 200),
    ]
    assert "cooling down" in response.attempts[0].error
    assert gateway.sim.stats.model("gemini-2.5-flash").requests == before  # not even asked


async def test_a_busy_provider_sends_the_call_to_the_next_model(start_gateway):
    sim = SimulatorSettings(latency_scale=1.0, tokens_per_second=1000, api_key=RELAY_KEY)
    gateway = await start_gateway(
        env={
            **FAST_RETRIES,
            "SWITCHYARD_RELAY_READ_TIMEOUT": "5",
            "SWITCHYARD_PROVIDER_CONCURRENCY": "google=1",
            "SWITCHYARD_MAX_WAIT": "0.05",
        },
        sim_settings=sim,
    )
    slow = gateway.stub.Query(
        pb.QueryRequest(
            query=query("slow [[sim latency_ms=500]] [[sim tokens=2]]", model="gemini-2.5-flash")
        )
    )
    await gateway.sim.wait_until(lambda s: s.model("gemini-2.5-flash").in_flight == 1, 2.0)
    second = await gateway.stub.Query(
        pb.QueryRequest(
            query=query("quick [[sim tokens=2]] [[sim latency_ms=1]]", model="gemini-2.5-flash")
        )
    )
    assert outcomes(second.attempts) == [
        ("gemini-2.5-flash", SKIPPED, 0),
        ("gpt-4.1", SUCCESS, 200),
    ]
    assert "provider google has 1 calls in flight" in second.attempts[0].error
    assert (await slow).model == "gemini-2.5-flash"


async def test_our_own_budget_is_resource_exhausted_not_unavailable(start_gateway):
    gateway = await start_gateway(
        env={**FAST_RETRIES, "SWITCHYARD_RELAY_RPM": "2", "SWITCHYARD_RELAY_BURST": "2"}
    )
    for _ in range(2):
        await gateway.stub.Query(pb.QueryRequest(query=query("hi [[sim tokens=2]]")))
    error = await rpc_error(gateway.stub.Query(pb.QueryRequest(query=query("hi")), timeout=1.0))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# --- everything at once -----------------------------------------------------------------

FAULTS = [
    "",
    "[[sim fault=429 times=1]]",
    "[[sim fault=500 times=1]]",
    "[[sim fault=503 times=2]]",
    "[[sim fault=529 model=gemini-2.5-flash]]",
    "[[sim fault=sse_error times=1]]",
    "[[sim fault=ping]]",
    "[[sim fault=empty_choices]]",
    "[[sim fault=no_done]]",
    "[[sim fault=401]]",
    "[[sim fault=400]]",
    "[[sim fault=context_length model=claude-sonnet-4-20250514]]",
]


async def test_200_concurrent_calls_with_random_faults_each_end_once_and_costs_add_up(
    start_gateway,
):
    gateway = await start_gateway(
        env={
            **FAST_RETRIES,
            "SWITCHYARD_RELAY_MAX_CONNECTIONS": "64",
            "SWITCHYARD_RELAY_RPM": "100000",
            "SWITCHYARD_RELAY_BURST": "10000",
        }
    )
    rng = random.Random(2026)
    models = list(PRICES)
    endings: list[str] = []

    async def one(n: int) -> None:
        fault = rng.choice(FAULTS)
        if (
            "ping" in fault
            or "empty_choices" in fault
            or "no_done" in fault
            or "sse_error" in fault
        ):
            stream = True
        else:
            stream = rng.random() < 0.5
        model = "gpt-4.1" if "empty_choices" in fault else rng.choice(models)
        spec = query(f"call {n} {fault} [[sim tokens={1 + n % 7}]]", model=model)
        if not stream:
            try:
                await gateway.stub.Query(pb.QueryRequest(query=spec))
                endings.append("ok")
            except grpc.aio.AioRpcError as error:
                endings.append(error.code().name)
            return
        ends, error_code = 0, None
        try:
            async for message in gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec)):
                ends += message.HasField("end")
        except grpc.aio.AioRpcError as error:
            error_code = error.code().name
        assert (ends, error_code is None) in ((1, True), (0, False))  # one end, or one error
        endings.append("ok" if error_code is None else error_code)

    await asyncio.gather(*(one(n) for n in range(200)))
    assert len(endings) == 200
    assert set(endings) <= {"ok", "UNAUTHENTICATED", "INVALID_ARGUMENT", "UNAVAILABLE"}
    assert endings.count("ok") > 100
    await gateway.sim.wait_idle()
    assert await ledger_cost(gateway) == relay_reported_cost(gateway)
    assert (await summary(gateway)).requests == 200


async def test_server_shutdown_mid_stream_gives_every_slot_back(start_gateway):
    sim = SimulatorSettings(latency_scale=1.0, tokens_per_second=20, api_key=RELAY_KEY)
    gateway = await start_gateway(env=FAST_RETRIES, sim_settings=sim)
    spec = query("long story [[sim tokens=200]] [[sim latency_ms=1]]", model="gemini-2.5-flash")
    call = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=spec))
    assert (await call.read()).HasField("start")
    caps = gateway.app.pipeline.limits.of(
        gateway.app.pipeline.router.catalog.models["gemini-2.5-flash"]
    )
    assert (caps.model_cap.in_use, caps.provider_cap.in_use) == (1, 1)
    await gateway.app.server.stop(grace=0.05)  # the grace ends long before the 10 s stream
    with pytest.raises(grpc.aio.AioRpcError):
        while await call.read() is not grpc.aio.EOF:
            pass
    await gateway.sim.wait_idle(timeout=1.0)
    assert (caps.model_cap.in_use, caps.provider_cap.in_use) == (0, 0)
    cut = (await billed(gateway))["gemini-2.5-flash"]
    assert cut.failed_attempts == 1 and cut.output_tokens > 0  # what arrived is still billed


async def test_a_stop_cancelling_the_ledger_writer_as_its_write_ends_still_returns(
    tmp_path, monkeypatch
):
    """SIGTERM's stop cancels the ledger's writer; when that cancel lands in the loop turn
    the writer's database write ends in, Python 3.11's asyncio.wait_for loses it, the writer
    runs on, and the stop used to wait for it forever. Forced here: the write ends exactly
    as the ledger's close begins. The stop must return, free the data directory and keep
    the call billed exactly once."""
    sim = RelaySimulator(SimulatorSettings(latency_scale=0, api_key=RELAY_KEY))
    env = {
        "SWITCHYARD_LISTEN": "127.0.0.1:0",
        "SWITCHYARD_RELAY_URL": await sim.start(),
        "SWITCHYARD_RELAY_API_KEY": RELAY_KEY,
        "SWITCHYARD_DATA_DIR": str(tmp_path),
        "SWITCHYARD_LEDGER_FLUSH_INTERVAL": "0.05",
    }
    write, aclose = SqliteDatabase.write, SqlLedger.aclose
    parked, closing = asyncio.Event(), asyncio.Event()

    async def write_then_wait_for_the_close(self, rows):
        await write(self, rows)
        parked.set()
        await closing.wait()  # returns in the turn the close cancels the writer

    async def close(self, within=10.0):
        closing.set()
        await aclose(self, within)

    monkeypatch.setattr(SqliteDatabase, "write", write_then_wait_for_the_close)
    monkeypatch.setattr(SqlLedger, "aclose", close)
    try:
        app = await create_server(load_settings(env))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            await stub.Query(pb.QueryRequest(query=query("hi [[sim tokens=2]]")))
        await asyncio.wait_for(parked.wait(), 10)  # the writer holds a finished write
        started = time.monotonic()
        await asyncio.wait_for(app.stop(0), 30)
        # 1 s for the ledger (grace 0) and App.stop's 5 s of slack, with room for a slow host
        assert time.monotonic() - started < 15
        monkeypatch.undo()
        again = await create_server(load_settings(env))  # the data directory was let go
        try:
            now = time.time()
            report = await again.pipeline.usage(Identity("anonymous"), now - 3600, now + 60)
            assert report.summary.requests == 1  # written (or replayed) once, not lost
        finally:
            await again.stop(0)
    finally:
        await sim.stop()
