"""Histograms summed in the gateway and handed to the SDK's metric readers as they collect.

An SDK histogram's `record` builds a `Measurement`, which validates and copies its
attributes, then hashes them again to find the series: about 90k instructions a
record under callgrind, four records a call, some 14% of a call's CPU with OTLP
export on (README, "What tracing costs"). `Histogram.record` here is a dict lookup, a
`bisect` and four additions under a lock. The SDK's API has no observable histogram,
so the readers Switchyard makes (`collecting`) add these histograms' points to each
batch of metrics they receive from the SDK, in the SDK's own data types: the same
metric names, units, attributes, bucket boundaries and temporality an SDK histogram
of the same name would export (`tests/unit/test_histograms.py` compares the two).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader, MetricsData

# The SDK's default explicit bucket boundaries, which the histograms had before.
BOUNDARIES: tuple[float, ...] = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    7500.0, 10000.0,
)  # fmt: skip


_Key = tuple[tuple[str, Any], ...]  # a series' attributes, in the order recorded
_State = tuple[list[int], int, float, float, float]  # buckets, count, sum, min, max


class _Series:
    """One attribute set's counts: per bucket, and their count, sum, min and max."""

    __slots__ = ("buckets", "count", "low", "max", "min", "sum", "top")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.count = 0
        self.sum: float = 0
        self.min = float("inf")  # since the start
        self.max = float("-inf")
        self.low = float("inf")  # since the last delta collection
        self.top = float("-inf")


class Histogram:
    """A histogram whose `record` is what the SDK's is, at a fraction of the cost."""

    __slots__ = ("_lock", "_series", "description", "name", "unit")

    def __init__(self, name: str, unit: str, description: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._series: dict[_Key, _Series] = {}
        self._lock = threading.Lock()  # records on the loop, collections on a reader's thread

    def record(self, amount: float, attributes: Mapping[str, Any] | None = None) -> None:
        """Count `amount` in the series of `attributes` (a negative one is dropped, as
        the SDK's histograms drop it)."""
        if amount < 0:
            return
        key = tuple(attributes.items()) if attributes else ()
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(len(BOUNDARIES) + 1)
            series.buckets[bisect_left(BOUNDARIES, amount)] += 1
            series.count += 1
            series.sum += amount
            series.min = min(series.min, amount)
            series.low = min(series.low, amount)
            series.max = max(series.max, amount)
            series.top = max(series.top, amount)

    def snapshot(self, delta: bool) -> dict[_Key, _State]:
        """Every series' buckets, count and sum now (since the start), with their min and
        max since the start, or (`delta`) since the last delta snapshot, which restarts
        them: one reader at most may ask for deltas."""
        with self._lock:
            if not delta:
                return {
                    key: (list(s.buckets), s.count, s.sum, s.min, s.max)
                    for key, s in self._series.items()
                }
            taken = {}
            for key, s in self._series.items():
                taken[key] = (list(s.buckets), s.count, s.sum, s.low, s.top)
                s.low, s.top = float("inf"), float("-inf")
            return taken


class Histograms:
    """The gateway's histograms, and what each reader was last given of them."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self._histograms: list[Histogram] = []
        self._started = time.time_ns()

    def create(self, name: str, unit: str, description: str) -> Histogram:
        """A histogram these collect for the readers."""
        histogram = Histogram(name, unit, description)
        self._histograms.append(histogram)
        return histogram

    def points(self, delta: bool, last: dict[str, Any]) -> list[Any]:
        """The SDK `Metric`s of every histogram with a series: cumulative, or (`delta`)
        since `last`, the state this reader was given the time before."""
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
            AggregationTemporality,
            HistogramDataPoint,
            Metric,
        )
        from opentelemetry.sdk.metrics.export import Histogram as HistogramData  # noqa: PLC0415

        now = time.time_ns()
        start = last.get("", self._started) if delta else self._started
        metrics = []
        for histogram in self._histograms:
            snapshot = histogram.snapshot(delta)
            before = last.get(histogram.name, {})
            points = []
            for key, (buckets, count, total, low, high) in snapshot.items():
                counts, n, added = buckets, count, total
                if delta:
                    was = before.get(key)
                    if was is not None:
                        if count == was[1]:
                            continue  # nothing recorded in this series since
                        counts = [now_n - then for now_n, then in zip(buckets, was[0], strict=True)]
                        n, added = count - was[1], total - was[2]
                points.append(
                    HistogramDataPoint(
                        attributes=dict(key),
                        start_time_unix_nano=start,
                        time_unix_nano=now,
                        count=n,
                        sum=added,
                        bucket_counts=counts,
                        explicit_bounds=BOUNDARIES,
                        min=low,
                        max=high,
                    )
                )
            if delta:
                last[histogram.name] = snapshot
            if points:
                temporality = (
                    AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
                )
                data = HistogramData(data_points=points, aggregation_temporality=temporality)
                metrics.append(Metric(histogram.name, histogram.description, histogram.unit, data))
        last[""] = now
        return metrics

    def added_to(self, data: MetricsData, delta: bool, last: dict[str, Any]) -> MetricsData:
        """`data` with these histograms' metrics in this gateway's scope."""
        if not data.resource_metrics:
            return data  # kept for the next collection (taking the points would end a delta)
        metrics = self.points(delta, last)
        if not metrics:
            return data
        from opentelemetry.sdk.metrics.export import ScopeMetrics  # noqa: PLC0415
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415

        resource, *rest = data.resource_metrics
        scopes = list(resource.scope_metrics)
        for index, scope in enumerate(scopes):
            if scope.scope.name == self.scope:
                scopes[index] = replace(scope, metrics=[*scope.metrics, *metrics])
                break
        else:
            scopes.append(ScopeMetrics(InstrumentationScope(self.scope), metrics, ""))
        return replace(data, resource_metrics=[replace(resource, scope_metrics=scopes), *rest])


def collecting(reader_class: type[MetricReader], histograms: Histograms, delta: bool) -> Any:
    """A subclass of `reader_class` whose every collection carries `histograms` too.

    `_receive_metrics` is the method the SDK documents for readers to implement: it is
    handed each collection, and passes it on with the histograms added.
    """

    class Collecting(reader_class):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._switchyard_last: dict[str, Any] = {}
            super().__init__(*args, **kwargs)

        def _receive_metrics(self, metrics_data: MetricsData, *args: Any, **kwargs: Any) -> None:
            added = histograms.added_to(metrics_data, delta, self._switchyard_last)
            super()._receive_metrics(added, *args, **kwargs)

    Collecting.__name__ = Collecting.__qualname__ = f"Collecting{reader_class.__name__}"
    return Collecting
