"""What both stream decoders share: tool-call arguments parsed strictly, and the
ordered queue of events that are more than text.

Pure: no I/O. A decoder's `feed` returns the text of a read as one string
(the fast path every text-only stream takes); only when a read also carried a
tool call or reasoning does the decoder queue events instead, the text around
them as TextDeltas, so the caller sees everything in the order produced.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from server.domain import FinishReason, Reasoning, StreamEvent, TextDelta, ToolCallPart, Usage


class Answer(NamedTuple):
    """A unary answer as a wire decodes it; `usage` None when the relay reported none."""

    text: str
    usage: Usage | None
    finish_reason: FinishReason
    tool_calls: tuple[ToolCallPart, ...] = ()
    reasoning: tuple[Reasoning, ...] = ()


class MalformedToolCallError(ValueError):
    """A tool call the relay sent cannot be used: the message says which and why."""


def parse_arguments(text: str, where: str) -> dict[str, Any]:
    """A tool call's arguments as a JSON object.

    Empty text is no arguments, ``{}``: OpenAI streams a call without
    parameters as ``"arguments": ""`` (the peers' bug was to pass ``""`` on).
    Anything else must be a JSON object; text that is not JSON, or JSON that
    is not an object, is a malformed answer (a failed attempt), never
    something a caller would have to guess at.
    """
    if not text or text.isspace():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise MalformedToolCallError(
            f"the relay sent tool call arguments that are not JSON ({where})"
        ) from None
    if not isinstance(value, dict):
        raise MalformedToolCallError(
            f"the relay sent tool call arguments that are not a JSON object ({where})"
        )
    return value


def check_input(value: object, where: str) -> dict[str, Any]:
    """A tool call's arguments that came parsed already (Anthropic's `input`)."""
    if not isinstance(value, dict):
        raise MalformedToolCallError(
            f"the relay sent tool call arguments that are not a JSON object ({where})"
        )
    return value


def flush_text(parts: list[str], events: list[StreamEvent]) -> None:
    """Move the text gathered so far into `events`, ahead of the event that follows it."""
    if parts:
        events.append(TextDelta(parts[0] if len(parts) == 1 else "".join(parts)))
        parts.clear()


def finish_feed(parts: list[str], events: list[StreamEvent]) -> str:
    """What `feed` returns: the text, or "" when events are queued (the text went with them)."""
    if events:
        flush_text(parts, events)
        return ""
    return "".join(parts) if len(parts) != 1 else parts[0]
