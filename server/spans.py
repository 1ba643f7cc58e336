"""Spans held in memory until their call ends, then exported whole or dropped whole.

Every span of one call is made in this process, under the call's SERVER span,
so whether to keep the call's trace can wait until the call is over (tail
sampling, with no collector): `server.telemetry.Telemetry` decides when it ends
the SERVER span, by the keep policy (`SWITCHYARD_TRACE_KEEP`). A kept trace's
spans go to the SDK's span processors (the batch processor and its OTLP
exporter); a dropped one is never encoded, queued or sent.

The OpenTelemetry SDK's own spans cost 10 to 20 µs each to start (sampler,
attribute validation, locks, processor hooks) whether or not they are exported
in the end. `RecordedSpan` is the API's `Span` on a few plain slots: it costs a
small fraction of that, and only a kept trace is turned into the SDK's
`ReadableSpan`s, the type every exporter takes. What a kept span reports that
costs work to compute (a relay try's usage and cost) waits in `late` until then.

Nothing here is shared between calls: a trace's spans hang off its SERVER span,
which the call holds, so the spans of a call that never ends go with the call,
and one call's children are capped (`MAX_CHILDREN`). Spans are made and ended
on the event loop's thread; the processors are the SDK's, safe from any thread.

Usage (what Telemetry does)::

    recorder = SpanRecorder.of(tracer)
    root = recorder.root("switchyard.v1.GatewayService/Query", None, SpanKind.SERVER, {})
    chat = recorder.child(root, "chat gpt-4.1", SpanKind.CLIENT, {...})
    chat.end()
    root.kept = True  # the keep policy's verdict, before the root ends
    root.end()  # exports root and chat
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import AnyValue, Attributes

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
    from opentelemetry.sdk.trace.sampling import Sampler

MAX_CHILDREN = 64  # spans under one SERVER span: past it, further children are not recorded
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)

Event = tuple[str, Attributes, int]  # name, attributes, time in ns since the epoch


class RecordedSpan(trace.Span):
    """A span kept in memory: the API's Span, recorded into plain slots.

    A root (`root` is None) is a call's SERVER span: it holds its children
    until it ends, then `kept` decides whether all of them are exported.
    A child is exported with its root, or, ending after a kept root, at once.
    """

    __slots__ = (
        "_recorder",
        "attributes",
        "children",
        "context",
        "end_ns",
        "events",
        "kept",
        "kind",
        "late",
        "limited",
        "name",
        "parent",
        "pending_wait",
        "root",
        "start_ns",
        "status",
    )

    def __init__(
        self,
        recorder: SpanRecorder,
        name: str,
        context: SpanContext,
        *,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AnyValue],
        root: RecordedSpan | None,
    ) -> None:
        self._recorder = recorder
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.root = root
        self.start_ns = time.time_ns()
        self.end_ns: int | None = None
        self.events: list[Event] | None = None
        self.status = _UNSET
        self.children: list[RecordedSpan] | None = None  # a root's, until it ends
        self.kept = False  # a root's verdict, set by the keep policy before it ends
        self.limited = False  # a root's: a limit or a budget held the call back
        self.pending_wait: float | None = None  # a root's: the limiter wait of the next try
        self.late: Callable[[RecordedSpan], None] | None = None  # attributes of a kept span

    # --- the API's Span ------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        """The ids a relay request carries in its `traceparent`."""
        return self.context

    def is_recording(self) -> bool:
        """True until the span ends, as the SDK's spans."""
        return self.end_ns is None

    def set_attribute(self, key: str, value: AnyValue) -> None:
        """Record one attribute (ignored once the span ended)."""
        if self.end_ns is None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        """Record attributes (ignored once the span ended)."""
        if self.end_ns is None:
            self.attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        """Record an event at `timestamp` (ns since the epoch; now when None)."""
        if self.end_ns is not None:
            return
        event = (name, attributes, time.time_ns() if timestamp is None else timestamp)
        if self.events is None:
            self.events = [event]
        else:
            self.events.append(event)

    def update_name(self, name: str) -> None:
        """Rename the span."""
        self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the span's status."""
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An `exception` event naming the type only: a message or traceback may hold a prompt."""
        self.add_event(
            "exception",
            {"exception.type": type(exception).__name__, **(attributes or {})},
            timestamp,
        )

    def end(self, end_time: int | None = None) -> None:
        """End the span; a root's end exports its trace, or drops it, as `kept` says."""
        if self.end_ns is not None:
            return
        self.end_ns = time.time_ns() if end_time is None else end_time
        root = self.root
        if root is None:
            children, self.children = self.children, None  # also breaks the cycle
            if self.kept:
                self._recorder.export(self, children or ())
        elif root.end_ns is not None and root.kept:  # ended after its kept root
            self._recorder.export(self, ())


class SpanRecorder:
    """Makes RecordedSpans and hands kept traces to the SDK's span processors."""

    __slots__ = ("_processor", "_resource", "_sampler", "_scope")

    def __init__(
        self,
        processor: SpanProcessor,
        resource: Any,
        scope: Any = None,
        sampler: Sampler | None = None,
    ) -> None:
        self._processor = processor
        self._resource = resource
        self._scope = scope
        self._sampler = sampler  # a head sampler (OTEL_TRACES_SAMPLER), asked at each root

    @classmethod
    def of(cls, tracer: trace.Tracer, sampler: Sampler | None = None) -> SpanRecorder:
        """A recorder exporting to an SDK tracer's processors, under its resource."""
        from opentelemetry.sdk.trace import Tracer  # noqa: PLC0415 (only when tracing)
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415

        if not isinstance(tracer, Tracer):
            raise TypeError("spans are recorded for an OpenTelemetry SDK tracer only")
        return cls(
            tracer.span_processor, tracer.resource, InstrumentationScope("switchyard"), sampler
        )

    def root(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AnyValue],
        parent_context: Context | None = None,
    ) -> trace.Span:
        """A call's SERVER span, continuing `parent` (a caller's remote span) when given.

        The caller's sampled flag is passed on unchanged (a trace started here is
        sampled), so the relay's own tracing follows the caller's choice. A head
        sampler that says no gives a span that records nothing (its ids still go on).
        """
        span_id = random.getrandbits(64) or 1
        if parent is None:
            trace_id = random.getrandbits(128) or 1
            flags, state = _SAMPLED, None
        else:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        if self._sampler is not None:
            from opentelemetry.sdk.trace.sampling import Decision  # noqa: PLC0415

            sampled = self._sampler.should_sample(parent_context, trace_id, name, kind, attributes)
            state = sampled.trace_state
            if sampled.decision is not Decision.RECORD_AND_SAMPLE:
                unsampled = SpanContext(trace_id, span_id, False, TraceFlags(0), state)
                return NonRecordingSpan(unsampled)
            flags = _SAMPLED
        context = SpanContext(trace_id, span_id, False, flags, state)
        return RecordedSpan(
            self, name, context, parent=parent, kind=kind, attributes=attributes, root=None
        )

    def child(
        self,
        parent: RecordedSpan,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AnyValue],
    ) -> trace.Span:
        """A span under a root (a non-recording one past MAX_CHILDREN)."""
        root = parent if parent.root is None else parent.root
        parent_context = parent.context
        context = SpanContext(
            parent_context.trace_id,
            random.getrandbits(64) or 1,
            False,
            parent_context.trace_flags,
            parent_context.trace_state,
        )
        children = root.children
        if children is None:
            children = root.children = []
        elif len(children) >= MAX_CHILDREN:
            return NonRecordingSpan(context)
        span = RecordedSpan(
            self, name, context, parent=parent_context, kind=kind, attributes=attributes, root=root
        )
        children.append(span)
        return span

    def export(self, span: RecordedSpan, children: Sequence[RecordedSpan]) -> None:
        """Hand a kept span, and those of its children that ended, to the processors."""
        on_end = self._processor.on_end
        for child in children:
            if child.end_ns is not None:
                on_end(self._readable(child))
        on_end(self._readable(span))

    def _readable(self, span: RecordedSpan) -> ReadableSpan:
        from opentelemetry.sdk.trace import Event, ReadableSpan  # noqa: PLC0415

        if span.late is not None:
            late, span.late = span.late, None
            late(span)
        context = span.context
        if not context.trace_flags.sampled:  # kept all the same: exporters take sampled spans
            context = SpanContext(
                context.trace_id, context.span_id, False, _SAMPLED, context.trace_state
            )
        return ReadableSpan(
            name=span.name,
            context=context,
            parent=span.parent,
            resource=self._resource,
            attributes=span.attributes,
            events=[Event(n, a, t) for n, a, t in span.events or ()],
            kind=span.kind,
            status=span.status,
            start_time=span.start_ns,
            end_time=span.end_ns,
            instrumentation_scope=self._scope,
        )
