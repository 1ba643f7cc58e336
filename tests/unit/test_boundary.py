"""The RPC boundary: span, draining, identity, and every way out mapped to one status."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import metrics
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from switchyard.v1 import gateway_pb2 as pb

from server.boundary import REQUEST_ID_HEADER, RpcBoundary
from server.domain import Identity, Message, Request, Role
from server.errors import BudgetExceededError
from server.identity import CallerHeaderResolver
from server.pipeline import Pipeline
from server.servicer import GatewayServicer
from server.telemetry import Telemetry
from tests.helpers import FakeClock

REQUEST = Request(messages=(Message.of(Role.USER, "hi"),))


class Aborted(grpc.aio.AbortError):
    """What the fake context raises from abort, as grpc.aio does."""


class FakeContext:
    """The parts of grpc.aio.ServicerContext the boundary uses."""

    def __init__(self, metadata=(), remaining: float | None = None) -> None:
        self.metadata = tuple(metadata)
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str, tuple] | None = None

    def invocation_metadata(self):
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    def time_remaining(self) -> float | None:
        return self.remaining

    def code(self):
        return self.aborted[0] if self.aborted else None

    async def abort(self, code, details="", trailing_metadata=()):
        self.aborted = (code, details, tuple(trailing_metadata))
        raise Aborted()


def traced() -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(provider.get_tracer("t"), metrics.NoOpMeter("t"), tracing=True)
    return telemetry, exporter


def boundary(telemetry: Telemetry | None = None) -> RpcBoundary:
    return RpcBoundary(CallerHeaderResolver(), telemetry, FakeClock())


def trailer(context: FakeContext, key: str):
    assert context.aborted is not None
    return dict(context.aborted[2]).get(key)


async def test_an_rpc_that_succeeds_ends_its_span_ok_with_the_identity_resolved_once():
    telemetry, spans = traced()
    context = FakeContext([("x-switchyard-caller", "billing")], remaining=2.0)
    async with boundary(telemetry).enter("Query", cast(Any, context)) as rpc:
        call = rpc.open_call(REQUEST)
    assert call.identity == Identity("billing") and call.request_id == rpc.request_id
    assert len(call.request_id) == 16
    assert call.deadline == pytest.approx(call.started + 2.0)
    [span] = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["rpc.response.status_code"] == "OK"
    assert span.attributes["switchyard.caller"] == "billing"
    assert context.aborted is None


async def test_a_switchyard_error_leaves_with_its_status_details_and_request_id():
    context = FakeContext()
    with pytest.raises(Aborted):
        async with boundary().enter("Query", cast(Any, context)) as rpc:
            rpc.open_call(REQUEST)
            raise BudgetExceededError("spent; wait for the reset", 30.0)
    assert context.aborted is not None
    code, message, _ = context.aborted
    assert (code, message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "spent; wait for the reset")
    assert trailer(context, REQUEST_ID_HEADER) == rpc.request_id
    status = status_pb2.Status.FromString(trailer(context, "grpc-status-details-bin"))
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 30


async def test_anything_else_is_internal_with_only_the_request_id(caplog):
    context = FakeContext()
    with caplog.at_level(logging.INFO, "switchyard"), pytest.raises(Aborted):
        async with boundary().enter("Route", cast(Any, context)) as rpc:
            raise KeyError("a prompt the caller sent")
    assert context.aborted is not None
    code, message, _ = context.aborted
    assert code is grpc.StatusCode.INTERNAL
    assert rpc.request_id in message and "prompt" not in message
    assert trailer(context, REQUEST_ID_HEADER) == rpc.request_id
    assert "KeyError" in caplog.text and "a prompt the caller sent" not in caplog.text


async def test_while_draining_nothing_is_resolved_and_the_caller_is_sent_elsewhere():
    class Refusing(CallerHeaderResolver):
        async def resolve(self, context):
            raise AssertionError("no identity is resolved while draining")

    gate = RpcBoundary(Refusing(), None, FakeClock())
    gate.draining = True
    context = FakeContext()
    ran = False
    with pytest.raises(Aborted):
        async with gate.enter("GetUsage", cast(Any, context)):
            ran = True
    assert not ran and context.aborted is not None
    assert context.aborted[0] is grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in context.aborted[1]


async def test_a_bad_caller_header_is_refused_before_the_handler_runs():
    context = FakeContext([("x-switchyard-caller", "bad\nname")])
    with pytest.raises(Aborted):
        async with boundary().enter("Query", cast(Any, context)):
            raise AssertionError("the handler must not run")
    assert context.aborted is not None
    assert context.aborted[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert "x-switchyard-caller" in context.aborted[1]


async def test_a_cancel_propagates_and_ends_the_span_cancelled():
    telemetry, spans = traced()
    context = FakeContext()
    with pytest.raises(asyncio.CancelledError):
        async with boundary(telemetry).enter("StreamQuery", cast(Any, context)):
            raise asyncio.CancelledError
    assert context.aborted is None
    [span] = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["rpc.response.status_code"] == "CANCELLED"


class BrokenPipeline:
    """A pipeline facade whose every part fails the way a bug would."""

    async def preview(self, request, identity):
        raise RuntimeError("bug")

    async def usage(self, identity, start, end):
        raise ZeroDivisionError


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("Route", pb.RouteRequest(query=pb.QuerySpec(prompt="hi"))),
        ("GetUsage", pb.GetUsageRequest()),
    ],
)
async def test_route_and_get_usage_turn_a_bug_into_internal(method, request_message):
    servicer = GatewayServicer(cast(Pipeline, BrokenPipeline()), boundary(), FakeClock())
    context = FakeContext()
    with pytest.raises(Aborted):
        await getattr(servicer, method)(request_message, context)
    assert context.aborted is not None
    assert context.aborted[0] is grpc.StatusCode.INTERNAL
    assert "request id" in context.aborted[1]


async def test_invalid_requests_in_route_are_invalid_argument():
    servicer = GatewayServicer(cast(Pipeline, BrokenPipeline()), boundary(), FakeClock())
    context = FakeContext()
    with pytest.raises(Aborted):
        await servicer.Route(pb.RouteRequest(query=pb.QuerySpec()), cast(Any, context))
    assert context.aborted is not None
    assert context.aborted[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert "query.prompt is empty" in context.aborted[1]
