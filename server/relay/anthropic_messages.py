"""The Anthropic Messages wire: ``POST {relay}/messages``.

System messages travel in the top-level ``system`` field. Anthropic accepts
temperatures from 0 to 1 only, so higher values are clamped to 1. A stream
reports input usage in ``message_start``, output usage in ``message_delta``,
and is complete only at ``message_stop``.

Anthropic's ``input_tokens`` excludes prompt-cache traffic, reported apart
as ``cache_read_input_tokens`` and ``cache_creation_input_tokens``. Usage
here counts all three as input, with the reads as `cached_input_tokens` so
they are priced at the cached-input price. Cache writes are priced as plain
input: Switchyard never sets cache breakpoints, so a relay reports writes
only if it caches on its own (Anthropic bills them at 1.25x the input price).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

import orjson

from server.domain import FinishReason, Message, Part, Request, Role, TextPart, Usage
from server.errors import RelayError, RelayProtocolError, RelayUnavailableError

if TYPE_CHECKING:
    from server.domain import ModelSpec
    from server.relay.sse import ServerSentEvent

API_VERSION = "2023-06-01"
STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "tool_use": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "refusal": FinishReason.CONTENT_FILTER,
}


class AnthropicMessages:
    """Translator for the Anthropic Messages wire."""

    path = "/messages"

    def headers(self, api_key: str) -> dict[str, str]:
        """x-api-key authentication and the pinned API version."""
        return {"x-api-key": api_key, "anthropic-version": API_VERSION}

    def encode(self, request: Request, model: ModelSpec, max_tokens: int, stream: bool) -> bytes:
        """The messages request body."""
        system = [m.text for m in request.messages if m.role is Role.SYSTEM]
        body: dict[str, Any] = {
            "model": model.name,
            "max_tokens": max_tokens,
            "messages": [
                {"role": m.role.value, "content": _content(m)}
                for m in request.messages
                if m.role is not Role.SYSTEM
            ],
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if stream:
            body["stream"] = True
        return orjson.dumps(body)

    def decode(self, body: bytes) -> tuple[str, Usage | None, FinishReason]:
        """Text, usage and stop reason of a message object."""
        try:
            parsed = orjson.loads(body)
            text = "".join(
                block["text"] for block in parsed["content"] if block.get("type") == "text"
            )
            finish = STOP_REASONS.get(parsed.get("stop_reason"), FinishReason.UNKNOWN)
            raw = parsed.get("usage")
            input_tokens = _input_tokens(raw)
            usage = None
            if input_tokens is not None and "output_tokens" in raw:
                usage = Usage(
                    input_tokens,
                    int(raw["output_tokens"]),
                    cached_input_tokens=_cache_reads(raw),
                )
        except (KeyError, TypeError, AttributeError, ValueError):  # JSONDecodeError is a ValueError
            raise RelayProtocolError("the relay sent a malformed message") from None
        return text, usage, finish

    def stream_decoder(self) -> AnthropicStreamDecoder:
        """A decoder for one messages event stream."""
        return AnthropicStreamDecoder()


class AnthropicStreamDecoder:
    """Accumulates a messages event stream."""

    __slots__ = (
        "_cached_input_tokens",
        "_input_tokens",
        "_output_tokens",
        "done",
        "error",
        "finish_reason",
        "usage_final",
    )

    def __init__(self) -> None:
        self.done = False
        self.finish_reason = FinishReason.UNKNOWN
        self.error: RelayError | None = None
        self.usage_final = False  # message_start's output count is provisional
        self._input_tokens: int | None = None
        self._cached_input_tokens = 0
        self._output_tokens: int | None = None

    @property
    def usage(self) -> Usage | None:
        """Usage as reported so far; None until the relay reported output tokens."""
        if self._input_tokens is None or self._output_tokens is None:
            return None
        return Usage(
            self._input_tokens, self._output_tokens, cached_input_tokens=self._cached_input_tokens
        )

    @property
    def input_tokens(self) -> int | None:
        """Input tokens reported by message_start, if it came."""
        return self._input_tokens

    @property
    def cached_input_tokens(self) -> int:
        """Of the input tokens, the prompt-cache reads reported by message_start."""
        return self._cached_input_tokens

    def feed(self, events: list[ServerSentEvent]) -> str:
        """Text of `events`; records usage, stop reason and message_stop."""
        parts: list[str] = []
        for event in events:
            if self.error is not None:
                break
            try:
                data = orjson.loads(event.data)
                kind = data["type"]
                if kind == "content_block_delta":
                    delta = data["delta"]
                    if delta.get("type") == "text_delta":
                        parts.append(delta["text"])
                elif kind == "message_start":
                    usage = data["message"].get("usage") or {}
                    self._input_tokens = _input_tokens(usage)
                    if self._input_tokens is not None:
                        self._cached_input_tokens = _cache_reads(usage)
                    if "output_tokens" in usage:  # reported already, usually 1
                        self._output_tokens = int(usage["output_tokens"])
                elif kind == "message_delta":
                    reason = data.get("delta", {}).get("stop_reason")
                    if reason:
                        self.finish_reason = STOP_REASONS.get(reason, FinishReason.UNKNOWN)
                    usage = data.get("usage")
                    if usage and "output_tokens" in usage:
                        self._output_tokens = int(usage["output_tokens"])
                        self.usage_final = True
                elif kind == "message_stop":
                    self.done = True
                elif kind == "error":
                    self.error = RelayUnavailableError(
                        "the relay reported an error inside the stream"
                    )
            except (KeyError, TypeError, AttributeError, ValueError):  # incl. JSONDecodeError
                self.error = RelayProtocolError("the relay sent a malformed stream event")
        return "".join(parts) if len(parts) != 1 else parts[0]


def _content(message: Message) -> str | list[dict[str, Any]]:
    """A message's content: the plain string of a one-part text message, else one
    content block each."""
    parts = message.parts
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return parts[0].text
    return [_block(part) for part in parts]


def _block(part: Part) -> dict[str, Any]:
    match part:
        case TextPart(text=text):
            return {"type": "text", "text": text}
        case _:
            assert_never(part)


def _cache_reads(usage: Any) -> int:
    """Prompt-cache reads: part of the input, priced at the cached-input price."""
    return max(int(usage.get("cache_read_input_tokens") or 0), 0)


def _input_tokens(usage: Any) -> int | None:
    """Every input token: uncached input plus prompt-cache writes and reads."""
    if not usage or "input_tokens" not in usage:
        return None
    return (
        int(usage["input_tokens"])
        + int(usage.get("cache_creation_input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0)
    )
