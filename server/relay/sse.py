"""An incremental decoder of server-sent events (the text/event-stream format).

Pure: bytes in, events out, no I/O. The relay client feeds it whatever each
socket read returned; every event completed by that read comes back at once,
so the tokens of one read can be forwarded to the caller as one message.

    >>> decoder = SSEDecoder()
    >>> decoder.feed(b'event: ping\\ndata: {}\\n\\ndata: {"a"')
    [ServerSentEvent(event='ping', data=b'{}')]
    >>> decoder.feed(b': 1}\\n\\n')
    [ServerSentEvent(event='', data=b'{"a": 1}')]

Lines end in LF or CRLF (a lone CR is not used by any relay we know of and is
not supported). Comment lines (":" first) are keep-alives and are dropped.
Fields other than `event` and `data` (`id`, `retry`) mean nothing to a
one-shot completion stream and are ignored.
"""

from __future__ import annotations

from typing import NamedTuple


class ServerSentEvent(NamedTuple):
    """One event: its type ('' when the stream did not name one) and its data."""

    event: str
    data: bytes


class SSEDecoder:
    """Turns a byte stream into events; keeps partial lines between feeds."""

    __slots__ = ("_data", "_event", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume `chunk`; return the events it completed, in order."""
        buffer = self._pending + chunk if self._pending else chunk
        lines = buffer.split(b"\n")
        self._pending = lines.pop()  # the unterminated tail, often b""
        events: list[ServerSentEvent] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    events.append(ServerSentEvent(self._event, b"\n".join(self._data)))
                    self._data = []
                self._event = ""
                continue
            if line[0] == 0x3A:  # ':' starts a comment
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        return events

    @property
    def has_partial_event(self) -> bool:
        """True when bytes of an unfinished event are buffered."""
        return bool(self._pending or self._data)
