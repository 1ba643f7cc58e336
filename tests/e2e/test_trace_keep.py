"""Tail sampling, end to end: what SWITCHYARD_TRACE_KEEP exports and what it drops.

The gateway runs as its own process and exports over OTLP/gRPC to a real
receiver in this test process. A kept trace leaves whole (the SERVER span and
its CLIENT spans); a dropped one never reaches the receiver. The gateway
exports spans in the order their calls ended, one export after another, so a
test that waits for the spans of a call made last has seen everything an
earlier call exported: that is how "not exported" is checked without a sleep.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.simulator import RelaySimulator, SimulatorSettings

from .conftest import RELAY_KEY, start_gateway_process
from .otlp_receiver import OTLPReceiver, ReceivedSpan

SERVER, CLIENT = 2, 3  # OTLP span kinds
pytestmark = pytest.mark.timeout(180)
QUICK = "[[sim tokens=2]] [[sim latency_ms=1]]"


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    otlp = OTLPReceiver()
    await otlp.start()
    yield otlp
    await otlp.stop()


@pytest.fixture
async def relay() -> AsyncIterator[RelaySimulator]:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0.0, api_key=RELAY_KEY))
    await sim.start()
    yield sim
    await sim.stop()


async def gateway(
    receiver: OTLPReceiver, relay: RelaySimulator, keep: str, **extra: str
) -> tuple[asyncio.subprocess.Process, gateway_pb2_grpc.GatewayServiceAsyncStub, grpc.aio.Channel]:
    env = {
        "SWITCHYARD_TRACE_KEEP": keep,
        "SWITCHYARD_RETRY_BASE_DELAY": "0.001",
        "SWITCHYARD_RETRY_MAX_DELAY": "0.002",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **extra,
    }
    process, port = await start_gateway_process(relay.url, env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return process, gateway_pb2_grpc.GatewayServiceStub(channel), channel


async def stop(process: asyncio.subprocess.Process, channel: grpc.aio.Channel) -> None:
    await channel.close()
    process.terminate()
    assert await asyncio.wait_for(process.wait(), 30) == 0


def query(prompt: str, **fields: object) -> pb.QueryRequest:
    return pb.QueryRequest(query=pb.QuerySpec(prompt=prompt, **fields))  # type: ignore[arg-type]


async def request_id_of(call: Awaitable[pb.QueryResponse]) -> str:
    """The request id of a call, answered or refused (refusals carry it in a trailer)."""
    try:
        return (await call).request_id
    except grpc.aio.AioRpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        return str(trailers["x-switchyard-request-id"])


def server_spans(receiver: OTLPReceiver) -> dict[str, ReceivedSpan]:
    return {
        str(s.attributes["switchyard.request_id"]): s
        for s in receiver.spans
        if s.kind == SERVER and "switchyard.request_id" in s.attributes
    }


async def exported(receiver: OTLPReceiver, request_id: str) -> ReceivedSpan:
    await receiver.wait_for(lambda r: request_id in server_spans(r), within=20)
    return server_spans(receiver)[request_id]


async def test_troubled_calls_are_kept_at_a_zero_share_and_a_plain_one_is_not(
    receiver: OTLPReceiver, relay: RelaySimulator, tmp_path: Path
):
    # deepseek-v3.2 may take one request a minute: a second one is refused by its limit.
    config = tmp_path / "switchyard.toml"
    config.write_text('[models."deepseek-v3.2"]\nrpm = 1\n')
    process, stub, channel = await gateway(
        receiver,
        relay,
        "errors,fallbacks,retries,limits,slow,0%",
        SWITCHYARD_TRACE_SLOW="0.3",
        SWITCHYARD_CONFIG=str(config),
    )
    try:
        plain = (await stub.Query(query(f"hello {QUICK}"))).request_id
        failed = await request_id_of(stub.Query(query(f"hi [[sim fault=400]] {QUICK}")))
        # A Retry-After past SWITCHYARD_RETRY_MAX_RETRY_AFTER moves on without a retry.
        fell_back = (
            await stub.Query(
                query(
                    f"compare [[sim fault=529 retry_after=60 model=claude-sonnet-4-20250514]] {QUICK}",
                    model="claude-sonnet-4-20250514",
                )
            )
        ).request_id
        retried = (await stub.Query(query(f"hi [[sim fault=503 times=1]] {QUICK}"))).request_id
        slow = (await stub.Query(query("hi [[sim tokens=2]] [[sim latency_ms=600]]"))).request_id
        batch = {"model": "deepseek-v3.2", "disable_fallback": True}
        first = (await stub.Query(query(f"batch job 1 {QUICK}", **batch))).request_id
        limited = await request_id_of(stub.Query(query(f"batch job 2 {QUICK}", **batch)))
        reasons = {
            failed: "error",
            fell_back: "fallback",
            retried: "retry",
            slow: "slow",
            limited: "error,limit",
        }
        for request_id, because in reasons.items():
            span = await exported(receiver, request_id)
            assert span.attributes["switchyard.trace.kept_because"] == because, request_id
            assert span.attributes["switchyard.trace.keep_share"] == 0.0
        # Everything was exported in order: the plain calls made before were dropped whole.
        assert plain not in server_spans(receiver)
        assert first not in server_spans(receiver)
        kept_traces = {s.trace_id for s in server_spans(receiver).values()}
        assert {s.trace_id for s in receiver.spans} == kept_traces  # no orphan CLIENT span
        # A kept trace is whole: the fallback's two tries, the retry's two.
        for request_id, tries in ((fell_back, 2), (retried, 2), (slow, 1)):
            span = server_spans(receiver)[request_id]
            clients = [
                s for s in receiver.spans if s.kind == CLIENT and s.parent_id == span.span_id
            ]
            assert len(clients) == tries, request_id
    finally:
        await stop(process, channel)


async def test_a_stream_slow_to_its_first_text_is_kept(
    receiver: OTLPReceiver, relay: RelaySimulator
):
    process, stub, channel = await gateway(receiver, relay, "slow,0%", SWITCHYARD_TRACE_SLOW="0.3")
    try:

        async def stream(prompt: str) -> str:
            request_id = ""
            async for message in stub.StreamQuery(
                pb.StreamQueryRequest(query=pb.QuerySpec(prompt=prompt))
            ):
                if message.HasField("start"):
                    request_id = message.start.request_id
            return request_id

        quick = await stream(f"hello {QUICK}")
        slow = await stream("hello [[sim tokens=2]] [[sim latency_ms=600]]")
        span = await exported(receiver, slow)
        assert span.attributes["switchyard.trace.kept_because"] == "slow"
        assert quick not in server_spans(receiver)
    finally:
        await stop(process, channel)


def binomial_interval(n: int, p: float, outside: float) -> tuple[int, int]:
    """The smallest [low, high] holding all but `outside` of Binomial(n, p), split evenly."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    low, tail = 0, 0.0
    while tail + pmf[low] < outside / 2:
        tail += pmf[low]
        low += 1
    high, tail = n, 0.0
    while tail + pmf[high] < outside / 2:
        tail += pmf[high]
        high -= 1
    return low, high


async def test_about_the_configured_share_of_plain_calls_is_kept(
    receiver: OTLPReceiver, relay: RelaySimulator
):
    calls, share = 300, 0.2
    process, stub, channel = await gateway(receiver, relay, "errors,20%")
    try:
        ids: list[str] = []
        for start in range(0, calls, 20):  # 20 at a time: quick, and the relay is not a queue
            answers = await asyncio.gather(
                *(stub.Query(query(f"call {n} {QUICK}")) for n in range(start, start + 20))
            )
            ids += [a.request_id for a in answers]
        marker = await request_id_of(stub.Query(query(f"hi [[sim fault=400]] {QUICK}")))
        await exported(receiver, marker)  # exported after every plain call before it
    finally:
        await stop(process, channel)
    spans = server_spans(receiver)
    kept = [spans[i] for i in ids if i in spans]
    low, high = binomial_interval(calls, share, 0.001)  # 99.9% of runs land inside
    assert low <= len(kept) <= high, (len(kept), (low, high))
    assert {s.attributes["switchyard.trace.kept_because"] for s in kept} == {"share"}
    assert {s.attributes["switchyard.trace.keep_share"] for s in kept} == {share}
    # Each kept plain call came with its CLIENT span; a dropped one left nothing.
    kept_traces = {s.trace_id for s in kept}
    client_traces = {s.trace_id for s in receiver.spans if s.kind == CLIENT}
    assert kept_traces <= client_traces
    assert client_traces - kept_traces == {spans[marker].trace_id}


def traceparent(sampled: bool) -> tuple[tuple[str, str], str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    flags = "01" if sampled else "00"
    return ("traceparent", f"00-{trace_id}-{span_id}-{flags}"), trace_id, span_id


async def test_a_trace_the_caller_sampled_is_kept_whatever_the_share(
    receiver: OTLPReceiver, relay: RelaySimulator
):
    process, stub, channel = await gateway(receiver, relay, "errors,0%")
    try:
        header, trace_id, caller_span = traceparent(sampled=True)
        sampled = (await stub.Query(query(f"hello {QUICK}"), metadata=(header,))).request_id
        unsampled_header, _, _ = traceparent(sampled=False)
        unsampled = (
            await stub.Query(query(f"hello {QUICK}"), metadata=(unsampled_header,))
        ).request_id
        failing_header, failing_trace, _ = traceparent(sampled=False)
        failing = await request_id_of(
            stub.Query(query(f"hi [[sim fault=400]] {QUICK}"), metadata=(failing_header,))
        )
        span = await exported(receiver, sampled)
        assert (span.trace_id, span.parent_id) == (trace_id, caller_span)
        assert span.attributes["switchyard.trace.kept_because"] == "parent"
        # The relay request carried the caller's trace on, sampled as the caller said.
        assert any(
            t.startswith(f"00-{trace_id}-") and t.endswith("-01") for t in relay.traceparents
        )
        # Unsampled by its caller: a trouble is still kept, a plain call is not.
        span = await exported(receiver, failing)
        assert span.trace_id == failing_trace
        assert span.attributes["switchyard.trace.kept_because"] == "error"
        assert unsampled not in server_spans(receiver)
    finally:
        await stop(process, channel)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("erors,10%", "unknown item 'erors'; expected errors,"),
        ("0.1", "unknown item '0.1' (write a share as a percentage, such as 10%)"),
    ],
)
async def test_a_bad_policy_stops_start_up_with_a_precise_message(value: str, says: str):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        env={"PATH": "/usr/bin:/bin", "SWITCHYARD_TRACE_KEEP": value},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert f"SWITCHYARD_TRACE_KEEP: {says}".encode() in err
    assert b"Traceback" not in err
