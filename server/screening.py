"""Large requests counted before they are decoded, so a flood is refused without parsing it.

grpc decodes a request in one step of the event loop, before any handler runs:
500,000 one-letter messages (3.5 MB, under the 4 MiB receive limit) take 18-60 ms
there, what every other call and the health checks then wait for, only for the
call to be refused afterwards for having more messages than one call may. A
request over `SCREEN_FROM` bytes holding a QuerySpec (Route, Query, StreamQuery)
is first walked at the wire level, without building any message: its messages,
their parts and its lists are counted, and the walk stops at the first bound
exceeded. What is within the bounds is then decoded as usual (the walk costs a
few hundred microseconds at the largest allowed call); what is not is refused
with the same INVALID_ARGUMENT, bound and setting that the conversion gives
(`server/convert.py`), saying "more than" the bound, since the walk stopped there.

Tool definitions and the response format are counted in bytes
(SWITCHYARD_MAX_SCHEMA_BYTES), so a flood inside their JSON Schemas (Structs) is
refused unread too. Bytes that are not plain protobuf wire format are left to
the decoder, which says why. What the walk does not reach is bounded only by
the receive limit: a tool call's arguments inside a message's parts, which grpc
parses in one step as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from server.convert import MAX_LABELS, MAX_STOP_SEQUENCES, MAX_TOOLS, SMALLER_SCHEMAS
from server.errors import RequestTooLargeError
from server.settings import LimitSettings

# Below this a request decodes in well under a millisecond, whatever it holds.
SCREEN_FROM = 64 * 1024

# QuerySpec's fields the walk counts (proto/switchyard/v1/gateway.proto)
_PROMPT, _MESSAGES, _STOP, _LABELS, _SYSTEM, _TOOLS = 1, 2, 8, 10, 12, 13
_FORMAT = 16  # response_format
_DEFINITIONS = frozenset({_TOOLS, _FORMAT})  # bounded in bytes (SWITCHYARD_MAX_SCHEMA_BYTES)
_PARTS = 3  # Message.parts
_SPEC = 1  # RouteRequest.query, QueryRequest.query, StreamQueryRequest.query
_LENGTH_DELIMITED = 2

Screen = Callable[[bytes], str | None]


class _MalformedError(Exception):
    """The bytes are not plain wire format: the decoder will say why."""


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """The varint at data[i] (its first byte already known to have the high bit set)."""
    value, shift = 0, 0
    while i < end:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            break
    raise _MalformedError


def _skip(data: bytes, i: int, end: int, wire: int) -> int:
    """Past a field's value that is not length-delimited."""
    if wire == 0:
        while i < end and data[i] >= 0x80:
            i += 1
        i += 1
    elif wire == 1:
        i += 8
    elif wire == 5:
        i += 4
    else:  # groups (never in proto3) and wire types that do not exist
        raise _MalformedError
    if i > end:
        raise _MalformedError
    return i


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Each field between start and end: its tag, and where its value begins and ends
    (a length-delimited value's bytes; any other's, skipped)."""
    i = start
    while i < end:
        tag = data[i]
        i += 1
        if tag >= 0x80:
            tag, i = _varint(data, i - 1, end)
        if tag & 7 != _LENGTH_DELIMITED:
            after = _skip(data, i, end, tag & 7)
            yield tag, i, after
            i = after
            continue
        size = data[i] if i < end else 0x80
        i += 1
        if size >= 0x80:
            if i < end and data[i] < 0x80:  # two bytes: up to 16 KiB, most messages
                size = size & 0x7F | data[i] << 7
                i += 1
            else:
                size, i = _varint(data, i - 1, end)
        after = i + size
        if after > end:
            raise _MalformedError
        yield tag, i, after
        i = after


def _spans(data: bytes, start: int, end: int, number: int) -> list[tuple[int, int]]:
    """The values of the message field `number` between start and end (few: a request's
    top level)."""
    wanted = number << 3 | _LENGTH_DELIMITED
    spans: list[tuple[int, int]] = []
    for tag, begins, ends in _fields(data, start, end):
        if tag == wanted:
            spans.append((begins, ends))
        elif tag >> 3 == number:  # the field, but not as a message: let the decoder say so
            raise _MalformedError
    return spans


def _count(data: bytes, start: int, end: int, number: int, most: int) -> int:
    """How many values of the length-delimited field `number` lie between start and end,
    counting no further than `most` + 1."""
    wanted = number << 3 | _LENGTH_DELIMITED
    count = 0
    for tag, _, _ in _fields(data, start, end):
        if tag == wanted:
            count += 1
            if count > most:
                break
    return count


class _Spec:
    """What the walk of one request's QuerySpec values has counted so far."""

    __slots__ = ("definitions", "lists", "messages", "parts", "texts", "walk")

    def __init__(self) -> None:
        self.messages = 0
        self.parts = 0  # of the messages that are a role and a text content (one each)
        self.walk: list[tuple[int, int]] = []  # the other messages, their parts counted later
        self.texts = {_PROMPT: False, _SYSTEM: False}  # set, by the last value on the wire
        self.lists = {_STOP: 0, _LABELS: 0, _TOOLS: 0, _FORMAT: 0}  # entries on the wire
        self.definitions = 0  # bytes of tools and response_format on the wire


_ROLE_TAG = 1 << 3  # Message.role, a varint
_CONTENT_TAG = 2 << 3 | _LENGTH_DELIMITED  # Message.content


def _walk_spec(spec: _Spec, data: bytes, start: int, end: int, limits: LimitSettings) -> None:
    """Count one QuerySpec value's messages and lists into `spec`, stopping past a bound.

    The walk of `_fields`, written out: the largest allowed call has 1,000 messages, and
    the generator's step per field made this 1.6 ms -> 2.7 ms (measured side by side)."""
    texts, lists, walk = spec.texts, spec.lists, spec.walk
    most = limits.max_messages
    i = start
    while i < end:
        tag = data[i]
        i += 1
        if tag >= 0x80:
            tag, i = _varint(data, i - 1, end)
        wire = tag & 7
        if wire != _LENGTH_DELIMITED:
            i = _skip(data, i, end, wire)
            continue
        size = data[i]
        i += 1
        if size >= 0x80:
            if data[i] < 0x80:  # two bytes: up to 16 KiB, most messages
                size = size & 0x7F | data[i] << 7
                i += 1
            else:
                size, i = _varint(data, i - 1, end)
        after = i + size
        if after > end:
            raise _MalformedError
        number = tag >> 3
        if number == _MESSAGES:
            spec.messages += 1
            if spec.messages > most:
                return
            # The common message, a role and a text content, is one part, seen from its
            # first bytes; any other is walked once the number of messages is known.
            j = i + 2 if size > 2 and data[i] == _ROLE_TAG and data[i + 1] < 0x80 else i
            if j < after and data[j] == _CONTENT_TAG:
                length = data[j + 1]
                j += 2
                if length >= 0x80:
                    if data[j] < 0x80:
                        length = length & 0x7F | data[j] << 7
                        j += 1
                    else:
                        length, j = _varint(data, j - 1, after)
                if j + length == after:
                    spec.parts += 1
                    i = after
                    continue
            walk.append((i, after))
        elif number in texts:
            texts[number] = size > 0
        elif number in lists:
            lists[number] += 1
            spec.definitions += size * (number in _DEFINITIONS)
        i = after


def _refusal(spec: _Spec, data: bytes, limits: LimitSettings) -> str | None:
    """Why the counted request is over a bound, as the conversion would say; None if it
    is within them (the parts of the messages not seen whole are counted only then)."""
    extra = sum(spec.texts.values())
    if spec.messages + extra > limits.max_messages:
        return str(
            RequestTooLargeError(
                f"the query has more than {limits.max_messages} messages",
                str(limits.max_messages),
                "SWITCHYARD_MAX_MESSAGES",
            )
        )
    left = limits.max_parts - extra - spec.parts
    for start, end in spec.walk:
        # a message counts its parts, or one for its text content
        left -= _count(data, start, end, _PARTS, max(left, 0)) or 1
        if left < 0:
            break
    if left < 0:
        return str(
            RequestTooLargeError(
                f"the query has more than {limits.max_parts} content parts",
                str(limits.max_parts),
                "SWITCHYARD_MAX_PARTS",
            )
        )
    if spec.lists[_TOOLS] > MAX_TOOLS:
        return f"query.tools has more than {MAX_TOOLS} tools; at most {MAX_TOOLS} are allowed"
    if spec.definitions > limits.max_schema_bytes:
        return str(
            RequestTooLargeError(
                f"query.tools and query.response_format hold more than"
                f" {limits.max_schema_bytes} bytes",
                f"{limits.max_schema_bytes} bytes of tool definitions and schema",
                "SWITCHYARD_MAX_SCHEMA_BYTES",
                SMALLER_SCHEMAS,
            )
        )
    for number, bound, what in (
        (_STOP, MAX_STOP_SEQUENCES, "query.stop has more than {} sequences"),
        (_LABELS, MAX_LABELS, "query.labels has more than {} entries"),
    ):
        if spec.lists[number] > bound:
            return f"{what.format(bound)}; at most {bound} are allowed"
    return None


def screen(limits: LimitSettings) -> Screen:
    """A check of a request holding a QuerySpec at field 1: why it is over a bound of
    `limits`, or None to decode it (small, within the bounds, or not wire format)."""

    def check(data: bytes) -> str | None:
        if len(data) <= SCREEN_FROM:
            return None
        spec = _Spec()
        try:
            for start, end in _spans(data, 0, len(data), _SPEC):
                _walk_spec(spec, data, start, end, limits)
                if spec.messages > limits.max_messages:
                    break
            return _refusal(spec, data, limits)
        except (_MalformedError, IndexError):
            return None

    return check
