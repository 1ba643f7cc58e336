"""The trace an operator reads: a real OTLP receiver, the gateway as its own process.

The gateway exports over OTLP/gRPC to a receiver in this test process; the
test makes a routed call (continuing the caller's W3C trace), a fallback
call, a cached call and a cancelled stream, then checks the span tree (the
SERVER span and one CLIENT span per relay try, nothing else), every
attribute, the exact cost strings, the events, the metrics, and that no
prompt text or key appears anywhere in what was exported. It keeps every
trace (SWITCHYARD_TRACE_KEEP=all) and checks why each was kept;
test_trace_keep.py checks what the default policy keeps and drops.

Prices (nano-dollars per token): gemini-2.5-flash 2,500 in / 10,000 out;
gpt-4.1 8,000 / 32,000.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import httpx
import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.simulator import RelaySimulator, SimulatorSettings
from tests.leaks import SCAN

from .conftest import RELAY_KEY, start_gateway_process, switchyard
from .otlp_receiver import OTLPReceiver, ReceivedSpan

SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP span kinds
ERROR = 2  # OTLP status code
SECRET = "PROMPT-SECRET-4242"  # must never be exported
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    otlp = OTLPReceiver()
    await otlp.start()
    yield otlp
    await otlp.stop()


@pytest.fixture
async def relay() -> AsyncIterator[RelaySimulator]:
    # Real pace, so a stream can be cancelled half-way; each prompt sets latency_ms=1.
    sim = RelaySimulator(
        SimulatorSettings(latency_scale=1.0, tokens_per_second=40, api_key=RELAY_KEY)
    )
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def stub(receiver: OTLPReceiver, relay: RelaySimulator):
    env = {
        "SWITCHYARD_RETRY_BASE_DELAY": "0.001",
        "SWITCHYARD_RETRY_MAX_DELAY": "0.002",
        "SWITCHYARD_TRACE_KEEP": "all",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": "switchyard-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    process, port = await start_gateway_process(relay.url, env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    await channel.close()
    process.terminate()
    assert await asyncio.wait_for(process.wait(), 30) == 0  # graceful stop flushes the spans


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def server_span(receiver: OTLPReceiver, request_id: str) -> ReceivedSpan | None:
    for span in receiver.spans:
        if span.kind == SERVER and span.attributes.get("switchyard.request_id") == request_id:
            return span
    return None


def children(receiver: OTLPReceiver, parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [
        s for s in receiver.spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id
    ]


async def finished_call(
    receiver: OTLPReceiver, request_id: str, children_at_least: int
) -> ReceivedSpan:
    def arrived(r: OTLPReceiver) -> bool:
        span = server_span(r, request_id)
        return span is not None and len(children(r, span)) >= children_at_least

    await receiver.wait_for(arrived)
    span = server_span(receiver, request_id)
    assert span is not None
    return span


async def test_one_trace_tells_the_whole_story(receiver: OTLPReceiver, relay: RelaySimulator, stub):
    # 1. A routed call that continues the caller's trace.
    header, trace_id, caller_span = traceparent()
    spec = pb.QuerySpec(
        prompt=f"{SECRET} what is the capital of France? [[sim tokens=5]] [[sim latency_ms=1]]",
        labels={"team": "search", "feature": "capitals"},
    )
    answer = await stub.Query(
        pb.QueryRequest(query=spec),
        metadata=(
            ("traceparent", header),
            ("x-switchyard-caller", "search-svc"),
            ("authorization", f"Bearer {RELAY_KEY}"),
        ),
    )
    assert answer.model == "gemini-2.5-flash"
    call = await finished_call(receiver, answer.request_id, children_at_least=1)
    assert (call.trace_id, call.parent_id) == (trace_id, caller_span)
    assert call.name == "switchyard.v1.GatewayService/Query"
    attributes = call.attributes
    # 87 bytes: 22 + 4 = 26 input tokens; 5 output: 26 * 2,500 + 5 * 10,000 = 115,000 nano-dollars
    assert len(spec.prompt.encode()) == 87
    assert attributes["switchyard.cost.usd"] == "0.000115" == attributes["gen_ai.usage.cost.amount"]
    assert attributes["gen_ai.usage.cost.currency"] == "USD"
    assert attributes["rpc.system.name"] == "grpc"
    assert attributes["rpc.method"] == "switchyard.v1.GatewayService/Query"
    assert attributes["rpc.response.status_code"] == "OK"
    assert attributes["switchyard.caller"] == "search-svc"
    assert attributes["switchyard.cache.hit"] is False
    assert attributes["switchyard.fallback.count"] == 0
    assert attributes["switchyard.label.team"] == "search"
    assert attributes["switchyard.label.feature"] == "capitals"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        26,
        5,
    )
    assert call.resource["service.name"] == "switchyard-under-test"
    assert call.resource["deployment.environment"] == "test"
    # Kept because the caller sampled it (and under `all` the share is 1).
    assert attributes["switchyard.trace.kept_because"] == "parent"
    assert attributes["switchyard.trace.keep_share"] == 1.0
    # What the "route" and "cache lookup" spans said is on the SERVER span now.
    assert attributes["switchyard.route.model"] == "gemini-2.5-flash"
    assert attributes["switchyard.route.complexity"] == "SIMPLE"
    assert attributes["switchyard.route.task"] == "FAST"
    assert attributes["switchyard.route.basis"] == "COMPLEXITY"
    assert attributes["switchyard.route.fallback_models"] == ["gpt-4.1"]
    assert "simple query" in attributes["switchyard.route.reason"]
    assert attributes["switchyard.cache.lookup_ms"] >= 0

    # The tree an operator reads: the SERVER span and one CLIENT span per relay try.
    [chat] = children(receiver, call)
    assert chat.name == "chat gemini-2.5-flash"
    assert chat.kind == CLIENT
    assert not [s for s in receiver.spans if s.kind == INTERNAL]
    # The limiter's wait for this try (once a "limiter wait" span) is on its CLIENT span.
    assert chat.attributes["switchyard.limiter.wait_ms"] >= 0
    assert chat.attributes == {
        **chat.attributes,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "google",
        "gen_ai.request.model": "gemini-2.5-flash",
        "gen_ai.response.model": "gemini-2.5-flash",
        "gen_ai.request.max_tokens": 1024,
        "gen_ai.request.stream": False,
        "gen_ai.usage.input_tokens": 26,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.cost.amount": "0.000115",
        "gen_ai.usage.cost.currency": "USD",
        "switchyard.cost.usd": "0.000115",
        "server.address": "127.0.0.1",
    }
    # The relay request carried the CLIENT span's trace context.
    assert f"00-{trace_id}-{chat.span_id}-01" in relay.traceparents

    # 2. A fallback call: three tries of claude, then gpt-4.1.
    fallback = await stub.Query(
        pb.QueryRequest(
            query=pb.QuerySpec(
                prompt="Compare [[sim fault=529 model=claude-sonnet-4-20250514]] [[sim tokens=3]] [[sim latency_ms=1]]",
                model="claude-sonnet-4-20250514",
            )
        )
    )
    assert fallback.model == "gpt-4.1"
    call = await finished_call(receiver, fallback.request_id, children_at_least=4)
    assert call.attributes["switchyard.trace.kept_because"] == "fallback,retry"
    assert len(children(receiver, call)) == 4  # no span but the tries'
    chats = sorted((s for s in children(receiver, call) if s.kind == CLIENT), key=lambda s: s.name)
    assert [s.name for s in chats] == ["chat claude-sonnet-4-20250514"] * 3 + ["chat gpt-4.1"]
    for failed in chats[:3]:
        assert failed.attributes["error.type"] == "RelayUnavailableError"
        assert failed.attributes["http.response.status_code"] == 529
        assert "gen_ai.response.model" not in failed.attributes
        assert failed.status_code == ERROR
        assert failed.attributes["switchyard.cost.usd"] == "0"
    events = [name for name, _ in call.events]
    assert events.count("switchyard.retry") == 2
    assert events.count("switchyard.fallback") == 1
    fallback_event = dict(call.events)["switchyard.fallback"]
    assert fallback_event["switchyard.fallback.from"] == "claude-sonnet-4-20250514"
    assert fallback_event["switchyard.fallback.to"] == "gpt-4.1"
    assert "529" in fallback_event["switchyard.reason"]
    assert call.attributes["switchyard.fallback.count"] == 1
    assert call.attributes["switchyard.cost.usd"] == chats[3].attributes["switchyard.cost.usd"]

    # 3. A cached call: the second identical question costs nothing and says what it saved.
    cacheable = pb.QueryRequest(
        query=pb.QuerySpec(prompt="hello [[sim tokens=4]] [[sim latency_ms=1]]")
    )
    first = await stub.Query(cacheable)
    second = await stub.Query(cacheable)
    assert second.cached
    call = await finished_call(receiver, second.request_id, children_at_least=0)
    assert call.attributes["switchyard.cache.hit"] is True
    assert call.attributes["switchyard.trace.kept_because"] == "share"  # a plain call
    assert call.attributes["switchyard.cost.usd"] == "0"
    # "hello [[sim tokens=4]] [[sim latency_ms=1]]" is 43 bytes: 11 + 4 = 15 input tokens:
    # 15 * 2,500 + 4 * 10,000 = 77,500 nano-dollars saved
    assert call.attributes["switchyard.cache.saved_cost.usd"] == "0.0000775"
    assert first.cost.nanos == 77_500
    assert not [s for s in children(receiver, call) if s.kind == CLIENT]  # no model was called

    # 4. A cancelled stream: usage and cost of what arrived are still on the spans.
    stream = stub.StreamQuery(
        pb.StreamQueryRequest(
            query=pb.QuerySpec(prompt="tell me a story [[sim tokens=400]] [[sim latency_ms=1]]")
        )
    )
    start = await stream.read()
    await stream.read()
    await stream.read()
    stream.cancel()
    request_id = start.start.request_id
    call = await finished_call(receiver, request_id, children_at_least=1)
    assert call.attributes["rpc.response.status_code"] == "CANCELLED"
    assert call.attributes["switchyard.trace.kept_because"] == "share"  # a cancel is no error
    chat = next(s for s in children(receiver, call) if s.kind == CLIENT)
    assert chat.attributes["gen_ai.request.stream"] is True
    assert chat.attributes["switchyard.attempt.outcome"] == "cancelled"
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert chat.attributes["switchyard.usage.estimated"] is True
    assert float(chat.attributes["gen_ai.response.time_to_first_chunk"]) >= 0
    price_in, price_out = 2_500, 10_000
    cost = (
        chat.attributes["gen_ai.usage.input_tokens"] * price_in
        + chat.attributes["gen_ai.usage.output_tokens"] * price_out
    )
    assert chat.attributes["switchyard.cost.usd"] == call.attributes["switchyard.cost.usd"]
    assert Decimal(chat.attributes["switchyard.cost.usd"]).scaleb(9) == cost  # exact, by hand

    # Metrics arrive too, and nothing secret was exported anywhere.
    await receiver.wait_for(
        lambda r: (
            {
                "gen_ai.client.token.usage",
                "gen_ai.client.operation.duration",
                "switchyard.cost",
                "switchyard.cache.lookups",
                "switchyard.circuit.state",
                "switchyard.provider.in_flight",
            }
            <= r.metric_names
        )
    )
    exported = b"".join(receiver.raw)
    assert SECRET.encode() not in exported
    assert RELAY_KEY.encode() not in exported
    assert b"Bearer" not in exported


async def test_prometheus_scrape_endpoint(relay: RelaySimulator):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    process, port = await start_gateway_process(
        relay.url, {"SWITCHYARD_PROMETHEUS_PORT": str(metrics_port)}
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            await stub.Query(
                pb.QueryRequest(
                    query=pb.QuerySpec(prompt=f"{SECRET} [[sim tokens=3]] [[sim latency_ms=1]]")
                )
            )
        async with httpx.AsyncClient() as client:
            page = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert "gen_ai_client_token_usage" in page
        assert 'gen_ai_request_model="gemini-2.5-flash"' in page
        assert "switchyard_cost" in page
        assert SECRET not in page
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_a_dead_collector_neither_slows_calls_nor_holds_up_shutdown(relay: RelaySimulator):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # nothing listens here
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "10",
    }
    process, port = await start_gateway_process(relay.url, env)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for n in range(5):  # each call answers normally, its spans failing to export behind it
            spec = pb.QuerySpec(prompt=f"hi {n} [[sim tokens=2]] [[sim latency_ms=1]]")
            await stub.Query(pb.QueryRequest(query=spec), timeout=5)
    loop = asyncio.get_running_loop()
    stopping = loop.time()
    process.terminate()
    assert await asyncio.wait_for(process.wait(), 30) == 0
    assert loop.time() - stopping < 8  # the flush gives up after 5 s instead of retrying on


async def test_with_keys_a_span_names_the_tenant_and_key_id_and_never_a_secret(
    receiver: OTLPReceiver, relay: RelaySimulator
):
    admin_key = "adm-" + secrets.token_urlsafe(32)
    SCAN.secret(admin_key)
    env = {
        "SWITCHYARD_AUTH": "api_key",
        "SWITCHYARD_ADMIN_KEY": admin_key,
        "SWITCHYARD_TRACE_KEEP": "all",  # a plain call: under the default share it may be dropped
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    process, port = await start_gateway_process(relay.url, env)
    address = ("--address", f"127.0.0.1:{port}")
    as_admin = {"SWITCHYARD_ADMIN_KEY": admin_key}
    try:
        assert (await switchyard("tenants", "create", "search", *address, env=as_admin))[0] == 0
        code, out, err = await switchyard(
            "keys", "create", "--tenant", "search", *address, env=as_admin
        )
        assert code == 0, err
        key = out.strip()
        SCAN.secret(key)
        key_id = key.split("-")[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            spec = pb.QuerySpec(prompt="hi [[sim tokens=2]] [[sim latency_ms=1]]")
            metadata = (("authorization", f"Bearer {key}"), ("x-switchyard-caller", "batch-7"))
            answer = await stub.Query(pb.QueryRequest(query=spec), metadata=metadata)
            wrong = (("authorization", f"Bearer {key[:-2]}zz"),)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Query(pb.QueryRequest(query=spec), metadata=wrong)
        span = await finished_call(receiver, answer.request_id, 1)
        assert span.attributes["switchyard.caller"] == "search"
        assert span.attributes["switchyard.key_id"] == key_id
        assert span.attributes["switchyard.end_user"] == "batch-7"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    exported = b"".join(receiver.raw)
    assert key_id.encode() in exported
    for secret in (key, key.split("-", 2)[2], admin_key, key[:-2] + "zz"):
        assert secret.encode() not in exported
