"""Telemetry: set-up, the SERVER and CLIENT spans, and the keep policy (tail sampling).

Spans go to a real SDK TracerProvider with an in-memory exporter, so what a
test sees is exactly what an OTLP exporter would be handed.
"""

import gc
from typing import Any

import grpc
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.catalog import default_catalog
from server.domain import Attempt, ModelSpec, Outcome, Usage
from server.settings import ConfigError, TelemetrySettings, load_settings, parse_trace_keep
from server.spans import MAX_CHILDREN, RecordedSpan
from server.telemetry import (
    EVENT_FALLBACK,
    EVENT_LIMITER_REFUSED,
    EVENT_RETRY,
    GEN_AI_INPUT_MESSAGES,
    KEEP_ALL,
    OTHER_CALLERS,
    Sums,
    Telemetry,
    setup,
)

NONE_KEPT = parse_trace_keep("0%")
DEFAULT = parse_trace_keep(TelemetrySettings().trace_keep)


def recording(
    capture_content: bool = False, keep=KEEP_ALL, slow: float = 5.0, sampler=None
) -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(
        provider.get_tracer("test"),
        metrics.NoOpMeter("test"),
        tracing=True,
        capture_content=capture_content,
        keep=keep,
        slow=slow,
        sampler=sampler,
    )
    return telemetry, exporter


def attrs(span: ReadableSpan) -> dict[str, Any]:
    """A finished span's attributes."""
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


def exported(exporter: InMemorySpanExporter) -> dict[str, dict[str, Any]]:
    """Exported spans by name, as attribute dicts."""
    return {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}


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
    root = telemetry.server_span("Query", None)
    span = telemetry.child(root, "chat gpt-4.1", SpanKind.CLIENT)
    telemetry.capture(
        span, GEN_AI_INPUT_MESSAGES, lambda: [{"role": "user", "content": "the prompt"}]
    )
    span.end()
    telemetry.finish_rpc(root, grpc.StatusCode.OK)  # a trace leaves when its SERVER span ends
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


def test_trace_headers_are_what_the_w3c_propagator_writes():
    telemetry, _ = recording()
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    span = telemetry.server_span(
        "Query", [("traceparent", parent), ("tracestate", "vendor=abc,other=x")]
    )
    chat = telemetry.child(span, "chat gpt-4.1", SpanKind.CLIENT)
    expected: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(expected, context=trace.set_span_in_context(chat))
    assert telemetry.trace_headers(chat) == expected
    assert expected["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert expected["tracestate"] == "vendor=abc,other=x"


# --- the keep policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("errors,fallbacks,retries,limits,slow,10%", DEFAULT),
        (" Errors , 25% ", parse_trace_keep("errors,25%")),
        ("0%", NONE_KEPT),
        ("all", KEEP_ALL),
        ("slow,12.5%", parse_trace_keep("12.5%,slow")),
    ],
)
def test_the_keep_policy_reads_as_written(text, expected):
    assert parse_trace_keep(text) == expected


def test_the_default_keeps_every_trouble_and_a_tenth_of_the_rest():
    assert DEFAULT.errors and DEFAULT.fallbacks and DEFAULT.retries
    assert DEFAULT.limits and DEFAULT.slow
    assert DEFAULT.share == pytest.approx(0.1)
    assert parse_trace_keep("errors").share == 0  # no share given: none of the rest


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "names nothing to keep"),
        ("erors,10%", "unknown item 'erors'; expected errors, fallbacks, retries, limits, slow"),
        ("0.1", "write a share as a percentage, such as 10%"),
        ("150%", "must be a percentage from 0% to 100%"),
        ("ten%", "must be a percentage from 0% to 100%"),
        ("10%,20%", "'20%' is a second share"),
        ("all,5%", "'5%' is a second share"),
    ],
)
def test_a_bad_keep_policy_stops_start_up_saying_what_to_write(text, says):
    with pytest.raises(ConfigError) as caught:
        load_settings({"SWITCHYARD_TRACE_KEEP": text})
    assert caught.value.key == "SWITCHYARD_TRACE_KEEP"
    assert says in str(caught.value)


def test_the_slow_threshold_must_be_positive():
    with pytest.raises(ConfigError) as caught:
        load_settings({"SWITCHYARD_TRACE_SLOW": "0"})
    assert caught.value.key == "SWITCHYARD_TRACE_SLOW"
    assert "expected seconds above 0" in str(caught.value)
    settings = load_settings({"SWITCHYARD_TRACE_KEEP": "errors,1%", "SWITCHYARD_TRACE_SLOW": "2.5"})
    assert (settings.telemetry.trace_keep, settings.telemetry.trace_slow) == ("errors,1%", 2.5)


def attempt(outcome: Outcome = Outcome.SUCCESS) -> Attempt:
    model = next(iter(load_settings({}).catalog.models.values()))
    assert isinstance(model, ModelSpec)
    return Attempt(model, outcome, 0.01, 200, "", Usage(10, 5), 12_345)


def test_a_plain_trace_outside_the_share_is_dropped_whole_before_any_export():
    telemetry, exporter = recording(keep=NONE_KEPT)
    root = telemetry.server_span("Query", None)
    chat = telemetry.child(root, "chat gpt-4.1", SpanKind.CLIENT)
    telemetry.finish_attempt(chat, attempt())
    telemetry.finish_rpc(root, grpc.StatusCode.OK)
    assert exporter.get_finished_spans() == ()


def test_a_kept_trace_leaves_whole_with_its_reason_and_the_share():
    telemetry, exporter = recording(keep=parse_trace_keep("errors,0%"))
    root = telemetry.server_span("Query", None)
    chat = telemetry.child(root, "chat gpt-4.1", SpanKind.CLIENT)
    telemetry.finish_attempt(chat, attempt(Outcome.FINAL_ERROR), error=ValueError("the prompt"))
    telemetry.finish_rpc(root, grpc.StatusCode.INVALID_ARGUMENT)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["switchyard.v1.GatewayService/Query"]
    assert attrs(server)["switchyard.trace.kept_because"] == "error"
    assert attrs(server)["switchyard.trace.keep_share"] == 0.0
    client = spans["chat gpt-4.1"]
    assert parent_id(client) == server.context.span_id
    assert client.context.trace_id == server.context.trace_id
    # The try's usage and cost are worked out for a kept trace, at export.
    assert attrs(client)["switchyard.cost.usd"] == "0.000012345"
    assert attrs(client)["error.type"] == "ValueError"
    assert client.status.status_code is StatusCode.ERROR
    assert "the prompt" not in str(client.attributes)


@pytest.mark.parametrize(
    ("event", "because"),
    [(EVENT_RETRY, "retry"), (EVENT_FALLBACK, "fallback"), (EVENT_LIMITER_REFUSED, "limit")],
)
def test_a_retry_a_fallback_or_a_limit_refusal_keeps_the_trace(event, because):
    telemetry, exporter = recording(keep=parse_trace_keep("fallbacks,retries,limits,0%"))
    root = telemetry.server_span("Query", None)
    root.add_event(event, {"switchyard.model": "gpt-4.1"})
    telemetry.finish_rpc(root, grpc.StatusCode.OK)
    [span] = exporter.get_finished_spans()
    assert attrs(span)["switchyard.trace.kept_because"] == because
    assert [e.name for e in span.events] == [event]
    # The same trace under a policy without that reason is dropped.
    telemetry, exporter = recording(keep=parse_trace_keep("errors,slow,0%"))
    root = telemetry.server_span("Query", None)
    root.add_event(event, {"switchyard.model": "gpt-4.1"})
    telemetry.finish_rpc(root, grpc.StatusCode.OK)
    assert exporter.get_finished_spans() == ()


def test_a_wait_for_a_limit_or_a_refusal_by_one_is_a_limit():
    telemetry, exporter = recording(keep=parse_trace_keep("limits,0%"))
    waited = telemetry.server_span("Query", None)
    telemetry.limiter_waited(waited, 0.0001, rate_waited=False)  # admitted at once
    telemetry.finish_rpc(waited, grpc.StatusCode.OK)
    assert exporter.get_finished_spans() == ()
    for rate_waited, seconds in ((True, 0.0001), (False, 0.05)):  # a rate wait; a queue
        waited = telemetry.server_span("Query", None)
        telemetry.limiter_waited(waited, seconds, rate_waited)
        chat = telemetry.child(waited, "chat gpt-4.1", SpanKind.CLIENT)
        chat.end()
        telemetry.finish_rpc(waited, grpc.StatusCode.OK)
    refused = telemetry.server_span("Query", None)
    telemetry.finish_rpc(refused, grpc.StatusCode.RESOURCE_EXHAUSTED)
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [attrs(s)["switchyard.trace.kept_because"] for s in servers] == ["limit"] * 3
    # Each try's wait is on the CLIENT span of the try it admitted.
    waits = [attrs(s)["switchyard.limiter.wait_ms"] for s in spans if s.kind is SpanKind.CLIENT]
    assert waits == [0.1, 50.0]


def test_a_slow_call_is_kept_and_a_cancel_is_no_error():
    telemetry, exporter = recording(keep=parse_trace_keep("errors,slow,0%"), slow=0.05)
    quick = telemetry.server_span("Query", None)
    telemetry.finish_rpc(quick, grpc.StatusCode.CANCELLED)
    assert exporter.get_finished_spans() == ()
    slow = telemetry.server_span("Query", None)
    assert isinstance(slow, RecordedSpan)
    slow.start_ns -= 60_000_000  # it started 60 ms ago
    telemetry.finish_rpc(slow, grpc.StatusCode.OK)
    [span] = exporter.get_finished_spans()
    assert attrs(span)["switchyard.trace.kept_because"] == "slow"


def test_the_share_is_taken_by_trace_id_as_the_sdks_ratio_sampler_takes_it():
    share = 0.3
    telemetry, exporter = recording(keep=parse_trace_keep("30%"))
    sampler = TraceIdRatioBased(share)
    expected = 0
    for _ in range(400):
        root = telemetry.server_span("Query", None)
        trace_id = root.get_span_context().trace_id
        decision = sampler.should_sample(None, trace_id, "Query").decision
        expected += decision is Decision.RECORD_AND_SAMPLE
        telemetry.finish_rpc(root, grpc.StatusCode.OK)
    kept = exporter.get_finished_spans()
    assert len(kept) == expected
    assert {attrs(s)["switchyard.trace.kept_because"] for s in kept} == {"share"}
    assert 60 < expected < 180  # the ids are random: about 120


def test_a_trace_the_caller_sampled_is_kept_whatever_the_share_and_one_it_did_not_is_ours():
    telemetry, exporter = recording(keep=NONE_KEPT)
    parent = "4bf92f3577b34da6a3ce929d0e0e4736"
    sampled = telemetry.server_span("Query", [("traceparent", f"00-{parent}-00f067aa0ba902b7-01")])
    telemetry.finish_rpc(sampled, grpc.StatusCode.OK)
    unsampled = telemetry.server_span(
        "Query", [("traceparent", f"00-{parent}-00f067aa0ba902b7-00")]
    )
    # The caller's unsampled flag is passed on to the relay as it came.
    assert telemetry.trace_headers(unsampled)["traceparent"].endswith("-00")
    telemetry.finish_rpc(unsampled, grpc.StatusCode.OK)  # plain, and 0%: dropped
    failed = telemetry.server_span("Query", [("traceparent", f"00-{parent}-00f067aa0ba902b7-00")])
    telemetry.finish_rpc(failed, grpc.StatusCode.UNAVAILABLE)  # a trouble: ours to keep
    kept = exporter.get_finished_spans()
    assert [attrs(s)["switchyard.trace.kept_because"] for s in kept] == ["parent"]
    telemetry, exporter = recording(keep=DEFAULT)
    failed = telemetry.server_span("Query", [("traceparent", f"00-{parent}-00f067aa0ba902b7-00")])
    telemetry.finish_rpc(failed, grpc.StatusCode.UNAVAILABLE)
    [span] = exporter.get_finished_spans()
    assert attrs(span)["switchyard.trace.kept_because"] == "error"
    assert f"{parent_id(span):016x}" == "00f067aa0ba902b7"
    assert span.context.trace_flags.sampled  # exported as sampled all the same


def test_a_head_sampler_when_configured_decides_first():
    telemetry, exporter = recording(sampler=ALWAYS_OFF)
    root = telemetry.server_span("Query", None)
    assert not root.is_recording()
    assert telemetry.child(root, "chat gpt-4.1", SpanKind.CLIENT) is INVALID_SPAN
    telemetry.finish_rpc(root, grpc.StatusCode.UNAVAILABLE)
    assert exporter.get_finished_spans() == ()


def test_a_child_ending_after_its_root_follows_the_roots_verdict():
    telemetry, exporter = recording(keep=parse_trace_keep("errors,0%"))
    kept = telemetry.server_span("Query", None)
    late = telemetry.child(kept, "chat gpt-4.1", SpanKind.CLIENT)
    telemetry.finish_rpc(kept, grpc.StatusCode.INTERNAL)
    late.end()
    dropped = telemetry.server_span("Query", None)
    lost = telemetry.child(dropped, "chat gemini-2.5-flash", SpanKind.CLIENT)
    telemetry.finish_rpc(dropped, grpc.StatusCode.OK)
    lost.end()
    assert sorted(exported(exporter)) == ["chat gpt-4.1", "switchyard.v1.GatewayService/Query"]


def test_children_of_one_call_are_bounded():
    telemetry, exporter = recording()
    root = telemetry.server_span("Query", None)
    tries = [telemetry.child(root, f"chat {n}", SpanKind.CLIENT) for n in range(MAX_CHILDREN + 5)]
    assert sum(t.is_recording() for t in tries) == MAX_CHILDREN
    for t in tries:
        t.end()
    telemetry.finish_rpc(root, grpc.StatusCode.OK)
    assert len(exporter.get_finished_spans()) == MAX_CHILDREN + 1


def test_spans_of_calls_that_never_end_are_held_by_nothing_but_the_call():
    telemetry, exporter = recording(keep=DEFAULT)
    for _ in range(1000):
        root = telemetry.server_span("Query", None)
        telemetry.child(root, "chat gpt-4.1", SpanKind.CLIENT).end()  # the root never ends
    del root
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is RecordedSpan]
    assert exporter.get_finished_spans() == ()


def test_span_ids_are_random_and_valid():
    telemetry, _ = recording()
    ids = {telemetry.server_span("Query", None).get_span_context().span_id for _ in range(1000)}
    assert len(ids) == 1000 and 0 not in ids


# --- metric series per caller ------------------------------------------------------------


def metered(metric_callers: int | None) -> tuple[Telemetry, Any]:
    """Telemetry on a real SDK MeterProvider read in process (what Prometheus would scrape)."""
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(
        TracerProvider().get_tracer("test"),
        provider.get_meter("test"),
        tracing=True,
        metric_callers=metric_callers,
    )
    return telemetry, reader


def cost_by_caller(reader: Any) -> dict[str, int]:
    """The `switchyard.cost` counter's value per `switchyard.caller` series."""
    series: dict[str, int] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "switchyard.cost":
                    for point in metric.data.data_points:
                        series[point.attributes["switchyard.caller"]] = point.value
    return series


PRICED = Attempt(
    default_catalog().models["gpt-4.1"], Outcome.SUCCESS, 0.1, usage=Usage(10, 5), cost=1000
)


def test_callers_past_the_bound_share_one_documented_overflow_series():
    telemetry, reader = metered(metric_callers=3)
    for n in range(2000):  # 2,000 callers naming themselves, the first three twice
        telemetry.record_attempt(PRICED, f"caller-{n}", stream=False)
    for n in range(3):
        telemetry.record_attempt(PRICED, f"caller-{n}", stream=False)
    series = cost_by_caller(reader)
    assert series == {
        "caller-0": 2000,
        "caller-1": 2000,
        "caller-2": 2000,
        OTHER_CALLERS: 1997 * 1000,  # nothing lost: every later caller's cost is counted here
    }
    assert OTHER_CALLERS == "_other"  # the value the README documents


def test_with_known_callers_every_tenant_keeps_its_own_series():
    telemetry, reader = metered(metric_callers=None)
    for n in range(150):
        telemetry.record_attempt(PRICED, f"tenant-{n}", stream=True)
    series = cost_by_caller(reader)
    assert len(series) == 150 and OTHER_CALLERS not in series


def test_set_up_names_every_tenant_only_when_callers_are_known():
    settings = TelemetrySettings(prometheus_port=0, console=True, metric_callers=1)
    bounded = setup(settings, {})
    known = setup(settings, {}, known_callers=True)
    try:
        assert [bounded.metric_caller(name) for name in ("a", "b", "a")] == ["a", "_other", "a"]
        assert [known.metric_caller(name) for name in ("a", "b")] == ["a", "b"]
    finally:
        bounded.shutdown(1.0)
        known.shutdown(1.0)


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_summed_counters_export_the_series_an_sdk_counter_would(temporality: str) -> None:
    """`Sums` (cost, cache lookups) against the SDK Counter they replace: the same
    series and values, collection after collection, in either temporality."""
    from opentelemetry.sdk.metrics import Counter, MeterProvider, ObservableCounter  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
        AggregationTemporality,
        InMemoryMetricReader,
    )

    kind = getattr(AggregationTemporality, temporality.upper())
    reader: Any = InMemoryMetricReader(
        preferred_temporality={Counter: kind, ObservableCounter: kind}
    )
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    summed = Sums(meter, "summed", "{x}", "summed here", ("model", "caller"))
    counter = meter.create_counter("counted", unit="{x}")

    def series() -> dict[str, dict[tuple[str, ...], int]]:
        found: dict[str, dict[tuple[str, ...], int]] = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    # in delta, a series that did not move is a 0 point of the
                    # observable counter, and no point of the Counter: the same sum
                    found[metric.name] = {
                        tuple(sorted(p.attributes.items())): p.value
                        for p in metric.data.data_points
                        if p.value or temporality == "cumulative"
                    }
        return found

    adds = [("gpt-4.1", "a", 5), ("gpt-4.1", "b", 7), ("claude", "a", 11), ("gpt-4.1", "a", 1)]
    for round_ in range(3):
        for model, caller, amount in adds[round_:]:
            summed.add(amount, model, caller)
            counter.add(amount, {"model": model, "caller": caller})
        got = series()
        assert got["summed"] == got["counted"] and got["summed"], got
    assert summed.total("gpt-4.1", "a") == 6 + 1 + 1  # rounds 0, 1 and 2 each add the last
    assert summed.total("nobody", "a") == 0
