"""What a stream's ``events()`` yields: text, tool calls and reasoning, in the order produced.

Example::

    from switchyard_client import events

    with client.stream("Weather in Lisbon?", tools=[weather]) as stream:
        for event in stream.events():
            match event:
                case events.TextDelta(text=text):
                    print(text, end="")
                case events.ToolCallCompleted(call=call):
                    print(call.name, call.arguments)
                case events.StreamFinished(summary=summary):
                    print(summary.cost)

Iterating the stream itself still yields only its text (``str``), as it always
has; both read the same messages, and the stream keeps the tool calls and the
reasoning either way (``stream.tool_calls``, ``stream.reasoning``).
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard_client.conversation import ToolCall
from switchyard_client.results import Summary


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """A tool call opens: its id and name, before any of its arguments."""

    index: int  # which call of the answer, from 0, in the order the calls started
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArguments:
    """The next fragment of a tool call's arguments: JSON text that may end anywhere."""

    index: int
    fragment: str


@dataclass(frozen=True, slots=True)
class ToolCallCompleted:
    """A tool call is complete, its arguments parsed into a dict ({} for none)."""

    index: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """The next piece of the model's reasoning, ahead of its answer."""

    index: int  # which reasoning part of the answer, from 0
    text: str
    signature: str = ""  # sent once, when the part is complete (Anthropic)
    redacted_data: str = ""  # a redacted part's data, whole; text is then empty


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The stream ended: usage, exact cost, attempts and validation."""

    summary: Summary


StreamEvent = (
    TextDelta
    | ToolCallStarted
    | ToolCallArguments
    | ToolCallCompleted
    | ReasoningDelta
    | StreamFinished
)
