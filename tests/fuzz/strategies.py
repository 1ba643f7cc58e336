"""Hypothesis strategies for all a caller can put on the wire: messages, bytes, metadata, call shapes.

Messages are built by walking their descriptors, so a field added to a .proto
is fuzzed without a change here: every scalar type at its edges (NaN and
infinities, the ends of each integer range), enums with unknown numbers,
empty, unicode, long and oversized strings, repeated fields and maps from
empty to tens of thousands of entries, nested messages, and the well-known
types at the edges of what they can hold (Timestamp, Duration, Money). A few
fields get realistic values too (`HINTS`: served model names, tenant names,
page tokens), so that a good share of calls is valid and reaches the
pipeline, the relay and the ledger instead of stopping at validation.

Raw payloads are what no generated stub would send: valid serializations
mutated byte by byte, invalid UTF-8 in any string field at any depth, unknown
fields and wrong wire types, nesting past the parser's limit, lengths and
varints that never end.

Large values are drawn as one element times a count (a list of N copies, a
string of N characters), because Hypothesis draws each element of a list
separately and would give up long before 50,000 of them.
"""

from __future__ import annotations

import base64
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.type import money_pb2
from hypothesis import strategies as st
from switchyard.admin.v1 import admin_pb2
from switchyard.v1 import gateway_pb2

from server.catalog import DEFAULT_MODELS

T = TypeVar("T")
Strategy = st.SearchStrategy

MODELS = tuple(model.name for model in DEFAULT_MODELS)
CALLERS = ("svc-a", "svc-b", "billing", "anonymous", "admin", "ünïcode-svc")
TENANTS = ("acme", "globex", "initech", "anonymous", "admin", "")
# What the harness replaces with a key the run has learned (a CreateKey or RotateKey answer);
# sent as written when none is known yet, a bogus value like any other.
LEARNED_KEY = "<learned key>"
MAX_DEPTH = 4  # nested messages deeper than this are left unset

_FIELD = FieldDescriptor


def weighted(*choices: tuple[int, Strategy[T]]) -> Strategy[T]:
    """One of `choices`, each drawn in proportion to its weight (one_of draws them evenly)."""
    table: list[Strategy[T]] = []
    for weight, strategy in choices:
        table.extend([strategy] * weight)
    return st.integers(0, len(table) - 1).flatmap(table.__getitem__)


def _times(element: Strategy[Any], counts: Strategy[int]) -> Strategy[Any]:
    return st.builds(operator.mul, element, counts)


def integers(low: int, high: int) -> Strategy[int]:
    """Integers of a range: its edges, small values, and anything in it."""
    edges = sorted(
        {v for v in (low, low + 1, -1, 0, 1, 2, 127, 128, high - 1, high) if low <= v <= high}
    )
    return weighted(
        (2, st.sampled_from(edges)),
        (2, st.integers(max(low, 0), min(high, 5000))),
        (1, st.integers(low, high)),
    )


FLOATS = weighted(
    (
        2,
        st.sampled_from(
            [
                *(0.0, -0.0, 1.0, 2.0, 2.0000001, -1e-9, 1e-300, 5e-324, 1.7976931348623157e308),
                *(math.inf, -math.inf, math.nan, -math.nan),
            ]
        ),
    ),
    (2, st.floats(0, 2)),
    (1, st.floats(allow_nan=True, allow_infinity=True)),
)
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_SPECIAL_TEXT = (
    "",
    " ",
    "\t\n ",
    "\x00",
    "\x00\x01\x7f",
    "é",
    "\u202e\u200b",
    "\ufeff",
    "🙂",
    "\U0001d518\U0001d52b",  # mathematical letters, outside the BMP
    "null",
    "%s%n%x",
    "' OR 1=1 --",
    "../../../etc/passwd",
    "{{7*7}}${7*7}",
    "\\u0000",
    "sy-00000000-0000",
)
TEXT = weighted(
    (3, st.sampled_from(_SPECIAL_TEXT)),
    (4, st.text(max_size=40)),
    (2, st.text(_ASCII, max_size=200)),
    (1, _times(st.sampled_from(["a", "é", "🙂", " ", "word "]), st.integers(100, 200_000))),
)
# Past gRPC's 4 MB message limit or near it: RESOURCE_EXHAUSTED, or a very large valid call.
HUGE_TEXT = _times(st.sampled_from(["a", "🙂"]), st.integers(900_000, 1_100_000))
STRINGS = weighted((200, TEXT), (1, HUGE_TEXT))
BYTES = weighted(
    (20, st.binary(max_size=64)), (1, _times(st.just(b"\xff"), st.integers(1000, 100_000)))
)

PROMPTS = weighted(
    (
        4,
        st.sampled_from(
            [
                "Compare two sorting algorithms",
                "hi",
                "Write a haiku about rain",
                "Prove that the square root of 2 is irrational, step by step",
                "Summarise this in one line: the quick brown fox jumps over the lazy dog",
                "Translate 'good morning' into French",
            ]
        ),
    ),
    (2, st.text(min_size=1, max_size=60)),
    (1, STRINGS),
)
_TIMESTAMP_SECONDS = (
    -62_135_596_800,  # 0001-01-01T00:00:00Z, the first a Timestamp holds
    -62_135_596_801,
    253_402_300_799,  # 9999-12-31T23:59:59Z, the last
    253_402_300_800,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1_800_000_000,
)
_NANOS = (0, 1, 999_999_999, 1_000_000_000, -1, -999_999_999, 2**31 - 1, -(2**31))
NOW = 1_790_000_000  # near the time of writing; recent windows reach the run's own calls


def _timestamp(seconds: int, nanos: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


TIMESTAMPS = weighted(
    (2, st.builds(_timestamp, st.sampled_from(_TIMESTAMP_SECONDS), st.sampled_from(_NANOS))),
    (
        3,
        st.builds(
            _timestamp, st.integers(NOW - 10 * 86_400, NOW + 10**9), st.integers(0, 999_999_999)
        ),
    ),
    (1, st.builds(_timestamp, integers(-(2**63), 2**63 - 1), integers(-(2**31), 2**31 - 1))),
)
_DURATION_SECONDS = (0, 1, -1, 86_400, 315_576_000_000, 315_576_000_001, -315_576_000_001)


def _duration(seconds: int, nanos: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


DURATIONS = weighted(
    (2, st.builds(_duration, st.sampled_from(_DURATION_SECONDS), st.sampled_from(_NANOS))),
    (1, st.builds(_duration, integers(-(2**63), 2**63 - 1), integers(-(2**31), 2**31 - 1))),
)


def _money(code: str, units: int, nanos: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=code, units=units, nanos=nanos)


MONEY = st.builds(
    _money,
    weighted((3, st.sampled_from(["", "USD", "usd", "EUR", "XXX"])), (1, STRINGS)),
    weighted((3, st.integers(-5, 1000)), (1, integers(-(2**63), 2**63 - 1))),
    weighted((3, st.sampled_from(_NANOS)), (1, integers(-(2**31), 2**31 - 1))),
)
WELL_KNOWN: dict[str, Strategy[Message]] = {
    "google.protobuf.Timestamp": TIMESTAMPS,
    "google.protobuf.Duration": DURATIONS,
    "google.type.Money": MONEY,
}


def page_token(at: int, request_id: str, version: str = "1") -> str:
    """ExportUsage's token format (server/convert.py), so some tokens are well formed."""
    return base64.urlsafe_b64encode(f"{version}:{at}:{request_id}".encode()).decode()


_PAGE_TOKENS = weighted(
    (
        2,
        st.builds(
            page_token,
            integers(-(2**63), 2**63 - 1),
            st.text(min_size=0, max_size=20),
            st.sampled_from(["1", "1", "2", ""]),
        ),
    ),
    (1, st.text(_ASCII, max_size=60)),
    (1, STRINGS),
)
_ADMIN_FIELDS = ("daily_budget", "monthly_budget", "rpm", "tpm", "models", "labels", "identities")
_IDENTITIES = ("spiffe://example.org/svc/a", "svc.example.org", "", "a b", "x" * 600)
_SYMBOLS = (
    "switchyard.v1.GatewayService",
    "switchyard.v1.QuerySpec",
    "switchyard.admin.v1.AdminService",
    "grpc.health.v1.Health",
    "google.protobuf.Timestamp",
    "switchyard.v1.QuerySpec.prompt",
    "nope.Nothing",
    "",
)
_FILES = (
    "switchyard/v1/gateway.proto",
    "switchyard/admin/v1/admin.proto",
    "google/protobuf/timestamp.proto",
    "google/type/money.proto",
    "grpc/health/v1/health.proto",
    "missing.proto",
    "",
)


def _message(role: int, content: str) -> Message:
    return gateway_pb2.Message(role=role, content=content)  # type: ignore[arg-type]


# Queries a client would send: most are served (OK), so calls reach routing, the cache, the
# limiter, the relay and the ledger; the generic QuerySpec, with every field at any value,
# is mostly refused at validation.
QUERIES = st.builds(
    gateway_pb2.QuerySpec,
    prompt=PROMPTS,
    messages=weighted(
        (3, st.just([])),
        (
            1,
            st.lists(
                st.builds(_message, st.sampled_from([1, 2, 3]), PROMPTS), min_size=1, max_size=4
            ),
        ),
    ),
    task=st.integers(0, 4),
    model=st.sampled_from(("", "", *MODELS)),
    max_tokens=st.sampled_from([0, 1, 16, 256]),
    temperature=st.one_of(st.none(), st.floats(0, 2)),
    cache_mode=st.integers(0, 3),
    labels=st.dictionaries(st.sampled_from(["team", "env", "ticket"]), st.text(max_size=10)),
)


def _usd(units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", units=units)


# Tenants an operator would create (their names overlap, so creates, updates and deletes
# meet each other), and the keys they would make.
TENANT = st.builds(
    admin_pb2.Tenant,
    name=st.sampled_from(TENANTS[:3]),
    daily_budget=st.one_of(st.none(), st.integers(0, 100).map(_usd)),
    rpm=st.sampled_from([0, 1, 60, 1000]),
    tpm=st.sampled_from([0, 1000, 100_000]),
    models=st.lists(st.sampled_from(MODELS), max_size=2, unique=True),
    labels=st.dictionaries(st.sampled_from(["team", "env"]), st.text(max_size=8), max_size=2),
)
# Realistic values for some fields, mixed in with the generic ones (full field name -> values;
# a list for a repeated field, a dict for a map).
HINTS: dict[str, Strategy[Any]] = {
    "switchyard.v1.RouteRequest.query": QUERIES,
    "switchyard.v1.QueryRequest.query": QUERIES,
    "switchyard.v1.StreamQueryRequest.query": QUERIES,
    "switchyard.v1.QuerySpec.prompt": PROMPTS,
    "switchyard.v1.QuerySpec.model": st.sampled_from(("", *MODELS, "gpt-9")),
    "switchyard.v1.QuerySpec.max_tokens": st.sampled_from(
        [0, 1, 16, 256, 4096, 200_000, 2**32 - 1]
    ),
    "switchyard.v1.QuerySpec.temperature": st.floats(0, 2),
    "switchyard.v1.QuerySpec.top_p": st.floats(0, 1, exclude_min=True),
    "switchyard.v1.QuerySpec.stop": st.lists(st.text(min_size=1, max_size=5), max_size=4),
    "switchyard.v1.QuerySpec.labels": st.dictionaries(
        st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=4
    ),
    "switchyard.v1.Message.content": PROMPTS,
    "switchyard.v1.GetUsageRequest.caller": st.sampled_from(("", *CALLERS)),
    "switchyard.v1.ExportUsageRequest.caller": st.sampled_from(("", *CALLERS)),
    "switchyard.v1.ExportUsageRequest.page_size": st.sampled_from([0, 1, 10, 500, 5000, 5001]),
    "switchyard.v1.ExportUsageRequest.page_token": _PAGE_TOKENS,
    "switchyard.admin.v1.CreateTenantRequest.tenant": TENANT,
    "switchyard.admin.v1.UpdateTenantRequest.tenant": TENANT,
    "switchyard.admin.v1.CreateKeyRequest.name": st.sampled_from(["ci", "laptop", ""]),
    "switchyard.admin.v1.CreateKeyRequest.expires_in": st.builds(
        _duration, st.sampled_from([60, 86_400, 30 * 86_400]), st.just(0)
    ),
    "switchyard.admin.v1.RotateKeyRequest.grace": st.builds(
        _duration, st.sampled_from([0, 60, 3600]), st.just(0)
    ),
    "switchyard.admin.v1.Tenant.name": st.sampled_from(TENANTS),
    "switchyard.admin.v1.Tenant.models": st.lists(st.sampled_from((*MODELS, "gpt-9")), max_size=3),
    "switchyard.admin.v1.Tenant.identities": st.lists(st.sampled_from(_IDENTITIES), max_size=3),
    "switchyard.admin.v1.UpdateTenantRequest.update_mask": st.lists(
        st.sampled_from((*_ADMIN_FIELDS, "name", "")), max_size=3
    ),
    "switchyard.admin.v1.CreateKeyRequest.tenant": st.sampled_from(TENANTS),
    "switchyard.admin.v1.ListKeysRequest.tenant": st.sampled_from(TENANTS),
    "switchyard.admin.v1.DeleteTenantRequest.name": st.sampled_from(TENANTS),
    "grpc.health.v1.HealthCheckRequest.service": st.sampled_from(
        ("", "switchyard.v1.GatewayService", "switchyard.admin.v1.AdminService", "nope")
    ),
    "grpc.reflection.v1alpha.ServerReflectionRequest.file_containing_symbol": st.sampled_from(
        _SYMBOLS
    ),
    "grpc.reflection.v1alpha.ServerReflectionRequest.file_by_filename": st.sampled_from(_FILES),
    "grpc.reflection.v1alpha.ServerReflectionRequest.all_extension_numbers_of_type": (
        st.sampled_from(_SYMBOLS)
    ),
}

_INTEGER_RANGES = {
    _FIELD.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FIELD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FIELD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FIELD.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FIELD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FIELD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FIELD.TYPE_UINT32: (0, 2**32 - 1),
    _FIELD.TYPE_FIXED32: (0, 2**32 - 1),
    _FIELD.TYPE_UINT64: (0, 2**64 - 1),
    _FIELD.TYPE_FIXED64: (0, 2**64 - 1),
}


def _enum(descriptor: EnumDescriptor) -> Strategy[int]:
    known = [value.number for value in descriptor.values]
    return weighted((4, st.sampled_from(known)), (1, integers(-(2**31), 2**31 - 1)))


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _single(field: FieldDescriptor, depth: int) -> Strategy[Any]:
    """Values of one element of `field` (the field itself, or one entry of a repeated one)."""
    kind = field.type
    if kind in _INTEGER_RANGES:
        return integers(*_INTEGER_RANGES[kind])
    if kind in (_FIELD.TYPE_DOUBLE, _FIELD.TYPE_FLOAT):
        return FLOATS
    if kind == _FIELD.TYPE_BOOL:
        return st.booleans()
    if kind == _FIELD.TYPE_STRING:
        return STRINGS
    if kind == _FIELD.TYPE_BYTES:
        return BYTES
    if kind == _FIELD.TYPE_ENUM:
        assert field.enum_type is not None
        return _enum(field.enum_type)
    if kind == _FIELD.TYPE_MESSAGE:
        assert field.message_type is not None
        return messages(field.message_type, depth + 1)
    raise AssertionError(f"no strategy for field type {kind} of {field.full_name}")


def _values(field: FieldDescriptor, depth: int) -> Strategy[Any]:
    """What `field` may be set to: one value, a list (repeated) or a dict (map)."""
    if _is_map(field):
        entry = field.message_type
        assert entry is not None
        key, value = (
            _single(entry.fields_by_name["key"], depth),
            _single(entry.fields_by_name["value"], depth),
        )
        many = st.tuples(value, st.integers(17, 5000)).map(
            lambda drawn: {f"k{i}": drawn[0] for i in range(drawn[1])}
        )
        generic: Strategy[Any] = weighted((50, st.dictionaries(key, value, max_size=5)), (1, many))
    elif _repeated(field):
        element = _single(field, depth)
        generic = weighted(
            (80, st.lists(element, max_size=5)),
            (10, st.lists(element, min_size=5, max_size=40)),
            (1, st.tuples(element, st.integers(1000, 50_000)).map(lambda t: [t[0]] * t[1])),
        )
    else:
        generic = _single(field, depth)
    hint = HINTS.get(field.full_name)
    return generic if hint is None else weighted((2, hint), (1, generic))


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if _is_map(field):
        assert field.message_type is not None
        if field.message_type.fields_by_name["value"].message_type is not None:
            for key, item in value.items():
                target[key].CopyFrom(item)
        else:
            target.update(value)
    elif _repeated(field):
        target.extend(value)
    elif field.type == _FIELD.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


_MESSAGES: dict[tuple[str, int], Strategy[Message]] = {}


def messages(descriptor: Descriptor, depth: int = 0) -> Strategy[Message]:
    """Messages of `descriptor`'s type, each field set or left unset, at any value it takes."""
    cached = _MESSAGES.get((descriptor.full_name, depth))
    if cached is not None:
        return cached
    strategy = WELL_KNOWN.get(descriptor.full_name)
    if strategy is None:
        cls = GetMessageClass(descriptor)
        fields = (
            [(field, _values(field, depth)) for field in descriptor.fields]
            if depth < MAX_DEPTH
            else []
        )

        @st.composite
        def build(draw: st.DrawFn) -> Message:
            message = cls()
            for field, values in fields:
                if draw(st.integers(0, 9)) < 6:  # set six fields in ten
                    _assign(message, field, draw(values))
            return message

        strategy = build()
    _MESSAGES[(descriptor.full_name, depth)] = strategy
    return strategy


# ---- raw bytes ---------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """`value` as a protobuf varint (negative numbers as their 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """A field's tag: its number and wire type."""
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field `number` holding `payload` (a string, bytes or a nested message)."""
    return tag(number, 2) + varint(len(payload)) + payload


# Bytes that are no protobuf message, whatever the type: each a different parser path.
CORRUPT = (
    b"\xff\xff\xff",  # a tag whose varint never ends
    b"\x0a",  # a length-delimited field without its length
    b"\x0a\xff\xff\xff\xff\x0f",  # a length of 4 GB and no data
    b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # a varint longer than 10 bytes
    b"\x00",  # field number 0
    b"\x0e\x00",  # wire type 6
    b"\x0f\x00",  # wire type 7
    b"\x7c",  # the end of a group that never began
    b"\x7b" * 200 + b"\x7c" * 200,  # groups nested deeper than the parser allows
    b"\xf8\xff\xff\xff\xff\x0f\x01",  # a field number past 2**29 - 1
    b"\x0d\x01\x02",  # a fixed32 cut short
    b"\x09\x01\x02\x03",  # a fixed64 cut short
)
_BAD_UTF8 = (
    b"\xff",
    b"\xfe",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"\x80",
)


def string_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[int, ...]]:
    """The field numbers leading to every string field, map keys and values included."""
    paths: list[tuple[int, ...]] = []
    for field in descriptor.fields:
        if field.type == _FIELD.TYPE_STRING:
            paths.append((field.number,))
        elif field.message_type is not None and depth < 3:
            paths.extend(
                (field.number, *path) for path in string_paths(field.message_type, depth + 1)
            )
    return paths


def _nest(path: Sequence[int], payload: bytes) -> bytes:
    data = payload
    for number in reversed(path):
        data = length_delimited(number, data)
    return data


def invalid_utf8(descriptor: Descriptor) -> Strategy[bytes]:
    """The message with one string field (at any depth) holding bytes that are not UTF-8."""
    paths = string_paths(descriptor)
    if not paths:
        return st.sampled_from(CORRUPT)
    text = st.text(max_size=8).map(str.encode)
    payload = st.builds(
        lambda before, bad, after: before + bad + after, text, st.sampled_from(_BAD_UTF8), text
    )
    return st.builds(_nest, st.sampled_from(paths), payload)


_WIRE_VALUES = {
    0: integers(-(2**63), 2**63 - 1).map(varint),
    1: st.binary(min_size=8, max_size=8),
    2: st.binary(max_size=20).map(lambda b: varint(len(b)) + b),
    5: st.binary(min_size=4, max_size=4),
}


def extra_fields(descriptor: Descriptor) -> Strategy[bytes]:
    """Well-formed fields the message does not expect: unknown numbers, or known numbers
    with another wire type (legal on the wire; a parser keeps or skips them)."""
    numbers = [field.number for field in descriptor.fields] or [1]
    number = st.one_of(st.sampled_from(numbers), st.integers(1, 2**29 - 1))
    wire = st.sampled_from(sorted(_WIRE_VALUES))
    one = st.tuples(number, wire).flatmap(
        lambda nw: _WIRE_VALUES[nw[1]].map(lambda value: tag(nw[0], nw[1]) + value)
    )
    return st.lists(one, min_size=1, max_size=4).map(b"".join)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few bytes flipped, inserted, deleted, set or duplicated, or cut short."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.integers(0, 5))
        at = draw(st.integers(0, len(buffer)))
        if operation == 0 and buffer:
            buffer[min(at, len(buffer) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif operation == 1:
            buffer[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif operation == 2:
            del buffer[at : at + draw(st.integers(1, 8))]
        elif operation == 3:
            del buffer[at:]
        elif operation == 4 and buffer:
            buffer[min(at, len(buffer) - 1)] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A]))
        elif operation == 5:
            buffer[at:at] = buffer[at : at + draw(st.integers(1, 16))]
    return bytes(buffer)


def serialize(message: Message) -> bytes:
    """The message's wire bytes."""
    return message.SerializeToString()


def raw_payloads(descriptor: Descriptor) -> Strategy[bytes]:
    """Bytes sent as `descriptor`'s message that no generated stub would send."""
    valid = messages(descriptor).map(serialize)
    return weighted(
        (4, valid.flatmap(mutated)),
        (3, invalid_utf8(descriptor)),
        (1, st.tuples(valid, invalid_utf8(descriptor)).map(b"".join)),
        (2, st.tuples(valid, extra_fields(descriptor)).map(b"".join)),
        (1, st.sampled_from(CORRUPT)),
        (1, st.binary(max_size=64)),
    )


# ---- metadata and the shape of a call -------------------------------------------------------

_HEX = "0123456789abcdef"
_HEADER_VALUE = st.text(_ASCII, max_size=100)  # what gRPC lets a non-binary header carry


def _caller_values() -> Strategy[str]:
    return weighted(
        (5, st.sampled_from(CALLERS[:-1])),  # the last one is not ASCII: not a header value
        (3, st.text(_ASCII, max_size=40)),
        (1, st.text(_ASCII, min_size=120, max_size=400)),
    )


def _authorizations(admin_key: str) -> Strategy[str]:
    sy_key = st.builds(
        lambda key_id, secret: f"Bearer sy-{key_id}-{secret}",
        st.text(_HEX, max_size=20),
        st.text(_HEX + "ghijkLMNOP_-", max_size=50),
    )
    return weighted(
        (3, st.just(f"Bearer {admin_key}")),
        (2, st.just(LEARNED_KEY)),
        (2, sy_key),
        (2, _HEADER_VALUE),
        (
            1,
            st.sampled_from(
                [
                    "Bearer",
                    "Bearer ",
                    "bearer   x",
                    "Basic dXNlcjpwYXNz",
                    f"Bearer {admin_key}x",
                    f"Bearer {admin_key[:-1]}",
                    f"bearer {admin_key}",
                    "Bearer sy--",
                    "Bearer sy-a-",
                ]
            ),
        ),
    )


_TRACEPARENTS = weighted(
    (
        2,
        st.builds(
            lambda version, trace, span, flags: f"{version}-{trace}-{span}-{flags}",
            st.sampled_from(["00", "ff", "01", "0"]),
            st.text(_HEX, min_size=32, max_size=32),
            st.text(_HEX, min_size=16, max_size=16),
            st.text(_HEX, min_size=2, max_size=2),
        ),
    ),
    (1, _HEADER_VALUE),
)


def metadata(admin_key: str) -> Strategy[tuple[tuple[str, str | bytes], ...]]:
    """A call's metadata: who calls, credentials, trace context and headers of no meaning."""
    item: Strategy[tuple[str, str | bytes]] = weighted(
        (5, st.tuples(st.just("x-switchyard-caller"), _caller_values())),
        (3, st.tuples(st.just("authorization"), _authorizations(admin_key))),
        (1, st.tuples(st.just("traceparent"), _TRACEPARENTS)),
        (1, st.tuples(st.sampled_from(["tracestate", "baggage"]), _HEADER_VALUE)),
        (
            1,
            st.tuples(
                st.from_regex(r"x-fuzz-[a-z0-9]{1,8}-bin", fullmatch=True), st.binary(max_size=100)
            ),
        ),
        (1, st.tuples(st.from_regex(r"x-fuzz-[a-z0-9._-]{1,12}", fullmatch=True), _HEADER_VALUE)),
    )
    return st.lists(item, max_size=5).map(tuple)


TIMEOUTS: Strategy[float | None] = weighted(
    (6, st.none()),
    (6, st.floats(0.5, 10)),
    (2, st.floats(1e-4, 0.05)),  # tiny: the call ends mid-way on the server
    (1, st.just(0.0)),
    (1, st.floats(1e4, 1e9)),  # huge
)
CANCEL_AFTER: Strategy[float | None] = weighted((9, st.none()), (1, st.floats(0, 0.05)))
READ_LIMITS: Strategy[int | None] = weighted((7, st.none()), (3, st.integers(0, 3)))
COMPRESSIONS: Strategy[grpc.Compression | None] = weighted(
    (8, st.none()), (1, st.sampled_from([grpc.Compression.Gzip, grpc.Compression.Deflate]))
)


@dataclass(frozen=True, slots=True)
class Shape:
    """How a call is made, apart from what it sends."""

    metadata: tuple[tuple[str, str | bytes], ...]
    timeout: float | None
    cancel_after: float | None  # cancel the call this many seconds after starting it
    read_limit: int | None  # cancel a stream after reading this many messages
    compression: grpc.Compression | None


def shapes(admin_key: str, *, admin: bool = False) -> Strategy[Shape]:
    """Metadata, deadline, cancellation and compression of a call; an admin API call carries
    the admin key first three times in four, so most of them get past authentication."""
    sent = metadata(admin_key)
    if admin:
        credential = (("authorization", f"Bearer {admin_key}"),)
        sent = st.tuples(st.integers(0, 3), sent).map(
            lambda drawn: drawn[1] if drawn[0] == 0 else credential + drawn[1]
        )
    return st.builds(Shape, sent, TIMEOUTS, CANCEL_AFTER, READ_LIMITS, COMPRESSIONS)


def unknown_paths() -> Strategy[str]:
    """Method paths no service serves: unknown services, unknown methods, near misses."""
    name = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,15}", fullmatch=True)
    return st.one_of(
        st.builds("/switchyard.v1.GatewayService/{}".format, name).filter(
            lambda path: (
                path.rsplit("/", 1)[1]
                not in ("Route", "Query", "StreamQuery", "GetUsage", "ExportUsage")
            )
        ),
        st.builds("/{}.{}/{}".format, name, name, name),
        st.sampled_from(
            [
                "/switchyard.v1.gatewayservice/Query",
                "/switchyard.v1.GatewayService/query",
                "/switchyard.v2.GatewayService/Query",
                "/switchyard.admin.v1.AdminService/DropEverything",
                "/grpc.health.v1.Health/Reset",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            ]
        ),
    )
