"""Kept spans to OTLP protobuf bytes, the attributes that repeat encoded once.

The OTLP exporter's own encoder builds a protobuf object for every attribute
of every span (a key, a value, their wrappers): about 5 µs an attribute, which
made encoding the largest part of what exporting a trace cost. Most of a
call's attributes repeat from call to call (the method, the model, the
provider, "chat", "USD", the status, the route's reason), so this encoder
writes the protobuf wire format itself and keeps each (key, value) pair it
has encoded, a bounded number of them; a span is then mostly joins of known
bytes. The exporter parses the finished request once (in C) to hand it on.

`tests/unit/test_span_encoding.py` checks that the bytes decode to the very
message the SDK's encoder makes, for every kind of value and span here.
Anything this encoder does not write itself (links, dropped counts, a value
type Switchyard never sets) is handed to the SDK's encoder, span by span.

Wire format: https://protobuf.dev/programming-guides/encoding/ ; the messages
are opentelemetry-proto's trace/v1 (Span field numbers in `_span`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

MAX_CACHED = 4096  # (key, value) pairs kept encoded; past it the cache starts over
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_SMALL = [bytes((n,)) for n in range(128)]
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value] if value >= 0 else _varint(value + (1 << 64))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the length, the bytes."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: object) -> bytes | None:
    """An AnyValue's bytes, or None for a type left to the SDK's encoder."""
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, list | tuple):
        items = [_any_value(item) for item in value]
        if any(item is None for item in items):
            return None
        return _field(
            b"\x2a", b"".join(_field(b"\x0a", item) for item in items if item is not None)
        )
    return None


class SpanEncoder:
    """Encodes ExportTraceServiceRequests; keep one per exporter (it holds the cache)."""

    __slots__ = ("_attributes", "_resources", "_scopes")

    def __init__(self) -> None:
        self._attributes: dict[tuple[str, type, object], bytes] = {}  # -> a Span's field 9
        self._resources: dict[int, tuple[object, bytes]] = {}
        self._scopes: dict[int, tuple[object, bytes]] = {}

    def request(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The ExportTraceServiceRequest of `spans`, grouped by resource then scope."""
        groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            by_scope = groups.setdefault(id(resource), (resource, {}))[1]
            by_scope.setdefault(id(scope), (scope, []))[1].append(self._span(span))
        out = []
        for resource, by_scope in groups.values():
            scope_spans = [
                _field(
                    b"\x12",
                    self._scope(scope)
                    + b"".join(_field(b"\x12", span) for span in encoded)
                    + (
                        _field(b"\x1a", scope.schema_url.encode())
                        if scope and scope.schema_url
                        else b""
                    ),
                )
                for scope, encoded in by_scope.values()
            ]
            schema = resource.schema_url
            body = self._resource(resource) + b"".join(scope_spans)
            if schema:
                body += _field(b"\x1a", schema.encode())
            out.append(_field(b"\x0a", body))
        return b"".join(out)

    def _resource(self, resource: Any) -> bytes:
        known = self._resources.get(id(resource))
        if known is None or known[0] is not resource:
            from opentelemetry.exporter.otlp.proto.common._internal import (  # noqa: PLC0415
                _encode_resource,
            )

            known = (resource, _field(b"\x0a", _encode_resource(resource).SerializeToString()))
            self._resources[id(resource)] = known
        return known[1]

    def _scope(self, scope: Any) -> bytes:
        known = self._scopes.get(id(scope))
        if known is None or known[0] is not scope:
            from opentelemetry.exporter.otlp.proto.common._internal import (  # noqa: PLC0415
                _encode_instrumentation_scope,
            )

            encoded = _encode_instrumentation_scope(scope).SerializeToString()
            known = (scope, _field(b"\x0a", encoded))
            self._scopes[id(scope)] = known
        return known[1]

    def _span(self, span: ReadableSpan) -> bytes:
        if span.links or span.dropped_attributes or span.dropped_events:
            return _sdk_span(span)
        attributes = self._attributes_of(span.attributes, b"\x4a")
        if attributes is None:
            return _sdk_span(span)
        context = span.context
        assert context is not None
        parts = [
            b"\x0a\x10",
            context.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            context.span_id.to_bytes(8, "big"),
        ]
        state = context.trace_state
        if state:
            parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in state.items()).encode()))
        parent = span.parent
        if parent is not None:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        parts += (
            _field(b"\x2a", span.name.encode()),
            b"\x30",
            _SMALL[_KIND[span.kind]],
            b"\x39",
            _FIXED64(span.start_time or 0),
            b"\x41",
            _FIXED64(span.end_time or 0),
            attributes,
        )
        for event in span.events:
            encoded = self._attributes_of(event.attributes, b"\x1a")
            if encoded is None:
                return _sdk_span(span)
            name = _field(b"\x12", event.name.encode()) if event.name else b""
            parts.append(_field(b"\x5a", b"\x09" + _FIXED64(event.timestamp) + name + encoded))
        status = span.status
        message = status.description
        code = status.status_code.value
        parts.append(
            _field(
                b"\x7a",
                (_field(b"\x12", message.encode()) if message else b"")
                + (b"\x18" + _varint(code) if code else b""),
            )
        )
        flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
        parts += (b"\x85\x01", _FIXED32(flags))
        return b"".join(parts)

    def _attributes_of(self, attributes: Mapping[str, object] | None, tag: bytes) -> bytes | None:
        """The attributes as repeated KeyValue fields under `tag`; None if one is not ours."""
        if not attributes:
            return b""
        # Only a span's own attributes are cached (an event's have another tag). The
        # type is part of the key: True == 1 == 1.0, but each encodes differently.
        cache = self._attributes if tag == b"\x4a" else None
        out = []
        for key, value in attributes.items():
            name = (key, type(value), tuple(value) if type(value) is list else value)
            encoded = None
            if cache is not None:
                try:
                    encoded = cache.get(name)
                except TypeError:  # an unhashable value inside a sequence: not cached
                    cache = None
            if encoded is None:
                any_value = _any_value(value)
                if any_value is None:
                    return None
                encoded = _field(tag, _field(b"\x0a", key.encode()) + _field(b"\x12", any_value))
                if cache is not None:
                    if len(cache) >= MAX_CACHED:
                        cache.clear()
                    cache[name] = encoded
            out.append(encoded)
        return b"".join(out)


def _sdk_span(span: ReadableSpan) -> bytes:
    """What the SDK's encoder makes of a span this encoder leaves to it."""
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (  # noqa: PLC0415
        _encode_span,
    )

    return bytes(_encode_span(span).SerializeToString())


def grpc_span_exporter() -> SpanExporter:
    """The SDK's OTLP/gRPC span exporter (its endpoint, TLS, headers, retries from
    the OTEL_* variables), encoding with a SpanEncoder."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
        ExportTraceServiceRequest,
    )

    encoder = SpanEncoder()

    class EncodingSpanExporter(OTLPSpanExporter):
        """Hands the SDK's transport a request parsed from the encoder's bytes."""

        def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
            return ExportTraceServiceRequest.FromString(encoder.request(data))

    return EncodingSpanExporter()
