import grpc
import pytest
from opentelemetry import metrics
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode

from server.settings import ConfigError, TelemetrySettings
from server.telemetry import GEN_AI_INPUT_MESSAGES, Telemetry, setup


def recording(capture_content: bool = False) -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(
        provider.get_tracer("test"),
        metrics.NoOpMeter("test"),
        tracing=True,
        capture_content=capture_content,
    )
    return telemetry, exporter


def test_nothing_configured_means_no_tracing_at_all():
    telemetry = setup(TelemetrySettings(), {})
    assert not telemetry.tracing
    assert (
        telemetry.server_span("Query", [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")])
        is INVALID_SPAN
    )


def test_the_sdk_can_be_disabled_even_with_an_endpoint():
    telemetry = setup(
        TelemetrySettings(),
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
    )
    assert not telemetry.tracing


def test_an_unknown_protocol_is_refused_at_start_up():
    with pytest.raises(ConfigError) as caught:
        setup(
            TelemetrySettings(),
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"},
        )
    assert caught.value.key == "OTEL_EXPORTER_OTLP_PROTOCOL"


def test_server_span_continues_the_callers_trace():
    telemetry, exporter = recording()
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    span = telemetry.server_span(
        "Query", [("traceparent", f"00-{trace_id}-{parent}-01"), ("authorization", "Bearer k")]
    )
    telemetry.finish_rpc(span, grpc.StatusCode.OK)
    [finished] = exporter.get_finished_spans()
    attributes = dict(finished.attributes or {})
    assert f"{finished.context.trace_id:032x}" == trace_id
    assert finished.parent is not None and f"{finished.parent.span_id:016x}" == parent
    assert finished.kind is SpanKind.SERVER
    assert attributes["rpc.method"] == "switchyard.v1.GatewayService/Query"
    assert "Bearer k" not in str(attributes)


@pytest.mark.parametrize(
    ("code", "error_status"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.INTERNAL, True),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    ],
)
def test_only_server_faults_mark_the_server_span_as_an_error(code, error_status):
    telemetry, exporter = recording()
    telemetry.finish_rpc(telemetry.server_span("Query", None), code)
    [finished] = exporter.get_finished_spans()
    attributes = dict(finished.attributes or {})
    assert attributes["rpc.response.status_code"] == code.name
    assert attributes["error.type"] == code.name
    assert (finished.status.status_code is StatusCode.ERROR) == error_status


@pytest.mark.parametrize("capture", [False, True])
def test_content_is_captured_only_when_asked(capture):
    telemetry, exporter = recording(capture_content=capture)
    span = telemetry.child(telemetry.server_span("Query", None), "chat gpt-4.1", SpanKind.CLIENT)
    telemetry.capture(span, GEN_AI_INPUT_MESSAGES, [{"role": "user", "content": "the prompt"}])
    span.end()
    chat = next(s for s in exporter.get_finished_spans() if s.name == "chat gpt-4.1")
    attributes = dict(chat.attributes or {})
    assert (GEN_AI_INPUT_MESSAGES in attributes) == capture
    if capture:
        assert "the prompt" in str(attributes[GEN_AI_INPUT_MESSAGES])


def test_trace_headers_carry_the_span_context():
    telemetry, _ = recording()
    span = telemetry.server_span("Query", None)
    headers = telemetry.trace_headers(span)
    assert headers["traceparent"].split("-")[2] == f"{span.get_span_context().span_id:016x}"
    assert Telemetry.disabled().trace_headers(INVALID_SPAN) == {}
