"""The OpenAI Chat Completions wire: ``POST {relay}/chat/completions``.

Streams are requested with ``stream_options.include_usage`` so the relay
reports usage in a last chunk whose ``choices`` is empty; the stream is
complete only at ``data: [DONE]``. ``prompt_tokens`` counts every input
token; ``prompt_tokens_details.cached_tokens`` says how many of them the
provider served from its prompt cache (priced at the cached-input price).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

import orjson

from server.domain import FinishReason, Message, Part, Request, TextPart, Usage
from server.errors import RelayError, RelayProtocolError, RelayUnavailableError

if TYPE_CHECKING:
    from server.domain import ModelSpec
    from server.relay.sse import ServerSentEvent

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.STOP,
    "function_call": FinishReason.STOP,
}
_DONE = b"[DONE]"


class OpenAIChat:
    """Translator for the OpenAI Chat Completions wire."""

    path = "/chat/completions"

    def headers(self, api_key: str) -> dict[str, str]:
        """Bearer authentication."""
        return {"authorization": f"Bearer {api_key}"}

    def encode(self, request: Request, model: ModelSpec, max_tokens: int, stream: bool) -> bytes:
        """The chat.completions request body."""
        body: dict[str, Any] = {
            "model": model.name,
            "messages": [{"role": m.role.value, "content": _content(m)} for m in request.messages],
            "max_tokens": max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    def decode(self, body: bytes) -> tuple[str, Usage | None, FinishReason]:
        """Content, usage and finish reason of a chat.completion object."""
        try:
            parsed = orjson.loads(body)
            choice = parsed["choices"][0]
            content = choice["message"].get("content") or ""
            finish = FINISH_REASONS.get(choice.get("finish_reason"), FinishReason.UNKNOWN)
            usage = _usage(parsed.get("usage"))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise RelayProtocolError("the relay sent a malformed chat completion") from None
        if not isinstance(content, str):
            raise RelayProtocolError("the relay sent a malformed chat completion")
        return content, usage, finish

    def stream_decoder(self) -> OpenAIStreamDecoder:
        """A decoder for one chat.completion.chunk stream."""
        return OpenAIStreamDecoder()


class OpenAIStreamDecoder:
    """Accumulates a chat.completion.chunk stream."""

    __slots__ = ("done", "error", "finish_reason", "usage")

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self.finish_reason = FinishReason.UNKNOWN
        self.error: RelayError | None = None

    @property
    def input_tokens(self) -> int | None:
        """Input tokens reported so far: only the final usage chunk has them."""
        return self.usage.input_tokens if self.usage else None

    @property
    def usage_final(self) -> bool:
        """The usage chunk comes after the last content: it is always the final count."""
        return self.usage is not None

    @property
    def cached_input_tokens(self) -> int:
        """Of the input tokens, those served from the prompt cache (0 until reported)."""
        return self.usage.cached_input_tokens if self.usage else 0

    def feed(self, events: list[ServerSentEvent]) -> str:
        """Text of `events`; records usage, finish reason and [DONE]."""
        parts: list[str] = []
        for event in events:
            if self.error is not None:
                break
            data = event.data
            if data == _DONE:
                self.done = True
                continue
            try:
                chunk = orjson.loads(data)
                if "error" in chunk:
                    self.error = RelayUnavailableError(
                        "the relay reported an error inside the stream"
                    )
                    break
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta")
                    text = delta.get("content") if delta else None
                    if text:
                        parts.append(text)
                    reason = choice.get("finish_reason")
                    if reason:
                        self.finish_reason = FINISH_REASONS.get(reason, FinishReason.UNKNOWN)
                if chunk.get("usage"):
                    self.usage = _usage(chunk["usage"])
            except (AttributeError, TypeError, KeyError, ValueError):
                self.error = RelayProtocolError("the relay sent a malformed stream chunk")
        return "".join(parts) if len(parts) != 1 else parts[0]


def _content(message: Message) -> str | list[dict[str, Any]]:
    """A message's content: the plain string of a one-part text message (what every
    relay takes), else one content part each."""
    parts = message.parts
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return parts[0].text
    return [_part(part) for part in parts]


def _part(part: Part) -> dict[str, Any]:
    match part:
        case TextPart(text=text):
            return {"type": "text", "text": text}
        case _:
            assert_never(part)


def _usage(raw: Any) -> Usage | None:
    """Usage of a completion; `prompt_tokens` includes the cached ones."""
    if not raw:
        return None
    input_tokens = int(raw["prompt_tokens"])
    details = raw.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if details else 0
    return Usage(
        input_tokens,
        int(raw["completion_tokens"]),
        cached_input_tokens=min(max(cached, 0), input_tokens),
    )
