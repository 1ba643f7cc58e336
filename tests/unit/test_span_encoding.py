"""The span encoder writes exactly what the SDK's OTLP encoder writes, only faster.

Each case builds real spans (through Telemetry, as the gateway does, or through
the SDK's own tracer) and checks that the encoder's bytes parse to a message
equal to the SDK's `encode_spans` of the same spans.
"""

from typing import Any

import grpc
import pytest
from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from server import span_encoding
from server.span_encoding import SpanEncoder, grpc_span_exporter
from server.telemetry import Telemetry

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(
        resource=Resource.create({"service.name": "switchyard", "deployment.environment": "t"})
    )
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


def a_call(telemetry: Telemetry, attributes: dict[str, Any]) -> None:
    """A SERVER span with events and two CLIENT spans, one failed, as a call makes them."""
    root = telemetry.server_span(
        "Query", [("traceparent", PARENT), ("tracestate", "vendor=abc,other=x")]
    )
    root.set_attributes(attributes)
    root.add_event("switchyard.retry", {"switchyard.retry.attempt": 2, "switchyard.reason": "529"})
    root.add_event("switchyard.fallback", None)
    failed = telemetry.child(
        root, "chat claude", SpanKind.CLIENT, {"gen_ai.request.max_tokens": 8192}
    )
    failed.set_status(StatusCode.ERROR, "HTTP 529: the provider is overloaded")
    failed.end()
    answered = telemetry.child(root, "chat gpt-4.1", SpanKind.CLIENT, {"server.port": 443})
    answered.end()
    telemetry.finish_rpc(root, grpc.StatusCode.UNAVAILABLE)


def same_as_the_sdk(spans: tuple[ReadableSpan, ...]) -> None:
    encoder = SpanEncoder()
    expected = encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(encoder.request(spans)) == expected
    # Again, now from the cache of encoded attributes.
    assert ExportTraceServiceRequest.FromString(encoder.request(spans)) == expected


ATTRIBUTES: list[dict[str, Any]] = [
    {"s": "text", "empty": "", "unicode": "café ☕ 東京"},
    {"t": True, "f": False, "zero": 0, "n": 26, "big": 2**62, "negative": -5},
    {"float": 0.125, "zero_float": 0.0, "nan": float("nan"), "neg": -1.5e-9},
    {"list": ["gpt-4.1", "gemini-2.5-flash"], "tuple": ("stop",), "empty_list": [], "ints": [1, 2]},
    {"one": 1, "true": True, "one_float": 1.0},  # equal in Python, not on the wire
    {"k" * 300: "v" * 1000},  # lengths past one varint byte
]


@pytest.mark.parametrize("attributes", ATTRIBUTES)
def test_a_call_encodes_as_the_sdk_encodes_it(attributes: dict[str, Any]) -> None:
    tracer_provider, exporter = provider()
    telemetry = Telemetry(tracer_provider.get_tracer("t"), metrics.NoOpMeter("t"), tracing=True)
    a_call(telemetry, attributes)
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    if "nan" in attributes:  # NaN is not equal to itself: compare the bytes of each message
        encoder = SpanEncoder()
        parsed = ExportTraceServiceRequest.FromString(encoder.request(spans))
        assert parsed.SerializeToString(deterministic=True) == encode_spans(
            spans
        ).SerializeToString(deterministic=True)
        return
    same_as_the_sdk(spans)


def test_spans_it_does_not_write_itself_go_through_the_sdks_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed: list[str] = []
    sdk_span = span_encoding._sdk_span

    def counted(span: ReadableSpan) -> bytes:
        handed.append(span.name)
        return sdk_span(span)

    monkeypatch.setattr(span_encoding, "_sdk_span", counted)
    tracer_provider, exporter = provider()
    tracer = tracer_provider.get_tracer("sdk")
    first = tracer.start_span("first", attributes={"a": 1})
    first.end()
    tracer.start_span("linked", links=[Link(first.get_span_context(), {"x": "y"})]).end()
    tracer.start_span("bytes", attributes={"raw": b"\x00\x01"}).end()
    with tracer.start_as_current_span("event with bytes") as span:
        span.add_event("e", {"raw": b"\x02"})
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    same_as_the_sdk(spans)
    assert handed == ["linked", "bytes", "event with bytes"] * 2


def test_two_resources_and_scopes_are_kept_apart() -> None:
    one, one_spans = provider()
    two = TracerProvider(resource=Resource.create({"service.name": "other"}))
    two_spans = InMemorySpanExporter()
    two.add_span_processor(SimpleSpanProcessor(two_spans))
    for name in ("a", "b"):
        one.get_tracer(name, schema_url="https://opentelemetry.io/schemas/1.37.0").start_span(
            name
        ).end()
        two.get_tracer(name).start_span(name).end()
    same_as_the_sdk(one_spans.get_finished_spans() + two_spans.get_finished_spans())


def test_the_cache_of_encoded_attributes_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(span_encoding, "MAX_CACHED", 8)
    tracer_provider, exporter = provider()
    tracer = tracer_provider.get_tracer("t")
    for n in range(20):
        tracer.start_span("s", attributes={"n": n, "same": "x"}).end()
    encoder = SpanEncoder()
    spans = exporter.get_finished_spans()
    assert ExportTraceServiceRequest.FromString(encoder.request(spans)) == encode_spans(spans)
    assert len(encoder._attributes) <= 8


def test_the_grpc_exporter_hands_on_the_encoders_request() -> None:
    tracer_provider, exporter = provider()
    telemetry = Telemetry(tracer_provider.get_tracer("t"), metrics.NoOpMeter("t"), tracing=True)
    a_call(telemetry, ATTRIBUTES[0])
    spans = exporter.get_finished_spans()
    grpc_exporter = grpc_span_exporter()
    try:
        assert grpc_exporter._translate_data(spans) == encode_spans(spans)  # type: ignore[attr-defined]
    finally:
        grpc_exporter.shutdown()
