"""Histograms summed in the gateway export what the SDK's histograms would."""

from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

from server.histograms import Histograms, collecting

# Values on and between the bucket boundaries, negative and far past the last one.
VALUES = [0.0, 0.004, 5.0, 5.000001, 74.9, 1000.0, 12_345.0, -1.0, 3.0, 250.0]
SERIES: list[dict[str, Any]] = [
    {"gen_ai.request.model": "gpt-4.1", "gen_ai.token.type": "input"},
    {"gen_ai.request.model": "gpt-4.1", "gen_ai.token.type": "output"},
    {"gen_ai.request.model": "claude", "error.type": "timeout", "gen_ai.request.stream": True},
]


def _points(reader: Any) -> dict[str, tuple[Any, dict[tuple, tuple]]]:
    """Each histogram's temporality and points by attributes (times left out)."""
    found: dict[str, tuple[Any, dict[tuple, tuple]]] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                data = metric.data
                found[metric.name] = (
                    data.aggregation_temporality,
                    {
                        tuple(sorted(p.attributes.items())): (
                            p.count,
                            round(p.sum, 9),
                            list(p.bucket_counts),
                            tuple(p.explicit_bounds),
                            p.min,
                            p.max,
                            p.start_time_unix_nano <= p.time_unix_nano,
                        )
                        for p in data.data_points
                    },
                )
    return found


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_the_same_points_as_an_sdk_histogram_collection_after_collection(temporality: str):
    kind = getattr(AggregationTemporality, temporality.upper())
    histograms = Histograms("test")
    reader: Any = collecting(InMemoryMetricReader, histograms, delta=temporality == "delta")(
        preferred_temporality={SdkHistogram: kind}
    )
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    sdk = meter.create_histogram("sdk", unit="s", description="recorded by the SDK")
    ours = histograms.create("ours", "s", "summed here")
    for round_ in range(4):
        # Round 2 records nothing in the first series: in delta it has no point then.
        for index, attributes in enumerate(SERIES):
            if round_ == 2 and index == 0:
                continue
            for value in VALUES[round_ : round_ + 5 + index]:
                sdk.record(value, attributes)
                ours.record(value, attributes)
        got = _points(reader)
        assert got["ours"] == got["sdk"], (round_, got)
        assert got["ours"][0] == kind
        quiet = round_ == 2 and temporality == "delta"  # the first series has no point then
        assert len(got["ours"][1]) == (2 if quiet else 3)


def test_histograms_go_into_the_gateway_scope_with_its_other_metrics():
    histograms = Histograms("switchyard")
    reader: Any = collecting(InMemoryMetricReader, histograms, delta=False)()
    meter = MeterProvider(metric_readers=[reader]).get_meter("switchyard")
    meter.create_counter("switchyard.other").add(1)
    histograms.create("gen_ai.client.operation.duration", "s", "tries").record(0.25, {"a": "b"})
    (resource,) = reader.get_metrics_data().resource_metrics
    (scope,) = resource.scope_metrics
    assert scope.scope.name == "switchyard"
    assert {m.name for m in scope.metrics} == {
        "switchyard.other",
        "gen_ai.client.operation.duration",
    }
    (duration,) = [m for m in scope.metrics if m.name == "gen_ai.client.operation.duration"]
    assert (duration.unit, duration.description) == ("s", "tries")


def test_nothing_recorded_adds_nothing():
    histograms = Histograms("switchyard")
    histograms.create("empty", "s", "never recorded")
    reader: Any = collecting(InMemoryMetricReader, histograms, delta=False)()
    MeterProvider(metric_readers=[reader]).get_meter("switchyard").create_counter("c").add(1)
    names = {
        m.name
        for r in reader.get_metrics_data().resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
    }
    assert names == {"c"}
