"""The translator interface and THE registry of wire formats.

A wire format turns a domain request into the relay's JSON, and the relay's
JSON or event stream back into text, tool calls, reasoning, usage and a
finish reason. Translators are pure: no I/O, no clock. `WIRES` is the only list of wire formats: the
relay client sends with it and the settings check each model's `wire`
against it, so adding a wire format is one new module and one line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from server.domain import FinishReason, Reasoning, Request, StreamEvent, ToolCallPart, Usage
from server.relay import anthropic_messages, openai_chat
from server.relay.events import Answer

if TYPE_CHECKING:
    from server.domain import ModelSpec
    from server.errors import RelayError
    from server.relay.sse import ServerSentEvent

__all__ = ["WIRES", "Answer", "StreamDecoder", "Wire"]


class StreamDecoder(Protocol):
    """The state of one streamed answer, fed event by event."""

    @property
    def done(self) -> bool:
        """The stream's terminal event ([DONE] / message_stop) arrived."""
        ...

    @property
    def usage(self) -> Usage | None:
        """The usage the relay reported last (None until it reported any)."""
        ...

    @property
    def usage_final(self) -> bool:
        """True once the relay sent its closing usage report, which counts the whole answer."""
        ...

    @property
    def finish_reason(self) -> FinishReason:
        """Why the model stopped, as far as reported."""
        ...

    @property
    def input_tokens(self) -> int | None:
        """Input tokens the relay reported before the end, if any."""
        ...

    @property
    def error(self) -> RelayError | None:
        """The failure the stream reported (an error event, a malformed chunk)."""
        ...

    @property
    def cached_input_tokens(self) -> int:
        """Of `input_tokens`, those served from the provider's prompt cache."""
        ...

    @property
    def tool_calls(self) -> tuple[ToolCallPart, ...]:
        """The tool calls completed so far, in order, arguments parsed."""
        ...

    @property
    def reasoning(self) -> tuple[Reasoning, ...]:
        """The reasoning parts completed so far, in order (signatures included)."""
        ...

    @property
    def events(self) -> list[StreamEvent]:
        """What the last `feed` produced besides plain text, in order, the text
        around it as TextDeltas; empty when it was text only. The caller empties it."""
        ...

    def feed(self, events: list[ServerSentEvent]) -> str:
        """Consume events; return the text they carry (may be empty).

        When they carried more than text (a tool call, reasoning), the text
        goes into `events` with the rest, in order, and "" is returned. At an
        error event or a malformed chunk (tool call arguments that are not a
        JSON object among them), decoding stops: what came before it is kept
        and `error` is set, so text that did arrive is never lost.
        """
        ...


class Wire(Protocol):
    """One wire format of the relay."""

    path: str  # appended to the relay base URL

    def headers(self, api_key: str) -> dict[str, str]:
        """Authentication and version headers for every request."""
        ...

    def encode(self, request: Request, model: ModelSpec, max_tokens: int, stream: bool) -> bytes:
        """The JSON body asking `model` to answer `request`."""
        ...

    def decode(self, body: bytes) -> Answer:
        """Text, tool calls, reasoning, reported usage (None if absent) and finish
        reason of a JSON answer.

        Raises RelayProtocolError when the body is not a well-formed answer.
        """
        ...

    def refusal(self, request: Request, model: ModelSpec, max_tokens: int) -> str | None:
        """Why this wire cannot carry `request` at `max_tokens` (a limit of its
        provider, such as an image size), or None; asked before any relay call."""
        ...

    def stream_decoder(self) -> StreamDecoder:
        """A fresh decoder for one streamed answer."""
        ...


WIRES: Mapping[str, Wire] = MappingProxyType(
    {
        "openai": openai_chat.OpenAIChat(),
        "anthropic": anthropic_messages.AnthropicMessages(),
    }
)
