"""A real OTLP/gRPC receiver, in the test process, built from opentelemetry-proto.

The gateway under test runs as a separate process exporting to it over a
socket, exactly as it would export to a collector or to Jaeger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.leaks import SCAN


def value_of(any_value: common_pb2.AnyValue) -> object:
    """An OTLP attribute value as a plain Python value."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One exported span, flattened for assertions."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    resource: dict[str, Any]
    raw: bytes = field(repr=False, default=b"")


class OTLPReceiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """Collects every exported span and metric; tests wait on conditions, not time."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.metric_names: set[str] = set()
        self.raw: list[bytes] = []  # every request as received, to search for leaks
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    async def Export(self, request, context):
        raw = request.SerializeToString()
        self.raw.append(raw)
        SCAN.seen(f"otlp export to :{self.port}", raw)
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for resource_spans in request.resource_spans:
                resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(_flatten(span, resource))
            response: object = trace_service_pb2.ExportTraceServiceResponse()
        else:
            for resource_metrics in request.resource_metrics:
                for scope in resource_metrics.scope_metrics:
                    self.metric_names.update(metric.name for metric in scope.metrics)
            response = metrics_service_pb2.ExportMetricsServiceResponse()
        async with self._changed:
            self._changed.notify_all()
        return response

    async def wait_for(
        self, condition: Callable[[OTLPReceiver], bool], within: float = 10.0
    ) -> None:
        """Wait until `condition(self)` holds; raise TimeoutError after `within` s."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(lambda: condition(self))


def _flatten(span: trace_pb2.Span, resource: dict[str, object]) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        kind=span.kind,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes={a.key: value_of(a.value) for a in span.attributes},
        events=[(e.name, {a.key: value_of(a.value) for a in e.attributes}) for e in span.events],
        status_code=span.status.code,
        resource=resource,
        raw=span.SerializeToString(),
    )
