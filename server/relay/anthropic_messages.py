"""The Anthropic Messages wire: ``POST {relay}/messages``.

System messages travel in the top-level ``system`` field. Anthropic accepts
temperatures from 0 to 1 only, so higher values are clamped to 1. A stream
reports input usage in ``message_start``, output usage in ``message_delta``,
and is complete only at ``message_stop``.

Anthropic's ``input_tokens`` excludes prompt-cache traffic, reported apart
as ``cache_read_input_tokens`` and ``cache_creation_input_tokens``. Usage
here counts all three as input, with the reads as `cached_input_tokens` and
the writes as `cache_write_tokens`, so each is priced at its own price (the
catalog's cache-write price is Anthropic's 1.25x the input price). Thinking
is part of ``output_tokens``; Anthropic reports no separate count of it.

Content is a list of blocks: ``text``, ``image`` (base64 ``source`` or a
URL), ``tool_use`` (assistant) and ``tool_result`` (in a user message: a
ROLE_TOOL message becomes one, merged with an adjacent user turn), and
``thinking`` / ``redacted_thinking``, which must come back in the next turn
exactly as they came, signature and all (a reasoning part without a
signature, from another wire, is left out: Anthropic would refuse it).
Streams carry one content block per ``index``: a ``tool_use`` block's
arguments arrive as ``input_json_delta`` fragments and are parsed at its
``content_block_stop``; a ``thinking`` block's text as ``thinking_delta`` and
its signature as ``signature_delta``. ``stop_reason: tool_use`` is
TOOL_CALLS. Tool choice maps to ``auto``/``any``/``tool``/``none`` (with
``disable_parallel_tool_use``); reasoning to ``thinking.budget_tokens``; a
JSON answer to the native ``output_config.format``. A base64 image over 5 MB
is refused before any call (`refusal`), as are settings Anthropic refuses
with thinking on (a temperature, a top_p below 0.95, a forced tool).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, assert_never

import orjson

from server.domain import (
    FinishReason,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningPart,
    RedactedReasoningPart,
    Request,
    ResponseKind,
    Role,
    StreamEvent,
    TextPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)
from server.errors import RelayError, RelayProtocolError, RelayUnavailableError
from server.relay.events import (
    Answer,
    MalformedToolCallError,
    check_input,
    finish_feed,
    flush_text,
    parse_arguments,
)

if TYPE_CHECKING:
    from server.domain import ModelSpec
    from server.relay.sse import ServerSentEvent

API_VERSION = "2023-06-01"
STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "tool_use": FinishReason.TOOL_CALLS,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "refusal": FinishReason.CONTENT_FILTER,
}
MAX_IMAGE_BASE64 = 5 * 1024 * 1024  # Anthropic's limit per image, on its base64 text
MIN_THINKING_BUDGET = 1024
# A reasoning effort's share of max_tokens as the thinking budget (at least 1,024).
_EFFORT_SHARE = {ReasoningEffort.LOW: 4, ReasoningEffort.MEDIUM: 2}  # 1/4, 1/2; HIGH 3/4
_TOOL_CHOICES = {
    ToolChoiceMode.AUTO: "auto",
    ToolChoiceMode.NONE: "none",
    ToolChoiceMode.REQUIRED: "any",
    ToolChoiceMode.TOOL: "tool",
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
        if request.plain:
            messages: list[dict[str, Any]] = [
                {"role": m.role.text, "content": _content(m)}
                for m in request.messages
                if m.role is not Role.SYSTEM
            ]
        else:
            messages = _messages(request.messages)
        body: dict[str, Any] = {
            "model": model.name,
            "max_tokens": max_tokens,
            "messages": messages,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if not request.plain:
            _structured(body, request, max_tokens)
        if stream:
            body["stream"] = True
        return orjson.dumps(body)

    def decode(self, body: bytes) -> Answer:
        """Text, tool calls, thinking, usage and stop reason of a message object."""
        try:
            parsed = orjson.loads(body)
            texts: list[str] = []
            calls: list[ToolCallPart] = []
            reasoning: list[Reasoning] = []
            for block in parsed["content"]:
                kind = block.get("type")
                if kind == "text":
                    texts.append(block["text"])
                elif kind == "tool_use":
                    calls.append(_tool_use(len(calls), block))
                elif kind == "thinking":
                    reasoning.append(ReasoningPart(block["thinking"], block.get("signature") or ""))
                elif kind == "redacted_thinking":
                    reasoning.append(RedactedReasoningPart(block["data"]))
            finish = STOP_REASONS.get(parsed.get("stop_reason"), FinishReason.UNKNOWN)
            raw = parsed.get("usage")
            input_tokens = _input_tokens(raw)
            usage = None
            if input_tokens is not None and "output_tokens" in raw:
                usage = Usage(
                    input_tokens,
                    int(raw["output_tokens"]),
                    cached_input_tokens=_cache_reads(raw),
                    cache_write_tokens=_cache_writes(raw),
                )
            text = "".join(texts)
        except MalformedToolCallError as error:
            raise RelayProtocolError(str(error)) from None
        except (KeyError, TypeError, AttributeError, ValueError):  # JSONDecodeError is a ValueError
            raise RelayProtocolError("the relay sent a malformed message") from None
        return Answer(text, usage, _finish(finish, calls), tuple(calls), tuple(reasoning))

    def refusal(self, request: Request, model: ModelSpec, max_tokens: int) -> str | None:
        """Why Anthropic would refuse `request` with `max_tokens`, before asking it."""
        for index, message in enumerate(request.messages):
            for number, part in enumerate(message.parts):
                if type(part) is ImagePart and part.data:
                    size = -(-len(part.data) // 3) * 4  # its base64 text
                    if size > MAX_IMAGE_BASE64:
                        return (
                            f"query.messages[{index}].parts[{number}].image is {size:,} bytes"
                            f" as base64; the anthropic wire takes at most {MAX_IMAGE_BASE64:,}"
                            " (5 MB) an image: send it smaller, or by URL"
                        )
        budget = thinking_budget(request, max_tokens)
        if budget is None:
            return None
        if budget >= max_tokens:
            return (
                f"the thinking budget ({budget:,} tokens) must be less than max_tokens"
                f" ({max_tokens:,}) on the anthropic wire; raise query.max_tokens or lower"
                " the budget"
            )
        if request.temperature is not None and request.temperature != 1.0:
            return "the anthropic wire takes no temperature with thinking on; leave it unset"
        if request.top_p is not None and request.top_p < 0.95:
            return "the anthropic wire takes top_p from 0.95 with thinking on; leave it unset"
        choice = request.tool_choice
        if choice is not None and choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.TOOL):
            return (
                "the anthropic wire cannot force a tool call with thinking on; use"
                " TOOL_CHOICE_MODE_AUTO or no reasoning"
            )
        return None

    def stream_decoder(self) -> AnthropicStreamDecoder:
        """A decoder for one messages event stream."""
        return AnthropicStreamDecoder()


class _Block:
    """A content block of a stream that is more than text, open until its stop."""

    __slots__ = ("fragments", "id", "index", "initial", "name", "signature", "tool")

    def __init__(self, index: int, tool: bool, call_id: str = "", name: str = "") -> None:
        self.index = index  # the call's index, or the reasoning part's
        self.tool = tool
        self.id = call_id
        self.name = name
        self.fragments: list[str] = []  # argument JSON, or thinking text
        self.signature: list[str] = []
        self.initial: object = None  # a tool_use block's `input` as it started


class AnthropicStreamDecoder:
    """Accumulates a messages event stream."""

    __slots__ = (
        "_blocks",
        "_cache_writes",
        "_cached_input_tokens",
        "_calls",
        "_finish",
        "_input_tokens",
        "_output_tokens",
        "_reasoning",
        "done",
        "error",
        "events",
        "usage_final",
    )

    def __init__(self) -> None:
        self.done = False
        self._finish = FinishReason.UNKNOWN
        self.error: RelayError | None = None
        self.usage_final = False  # message_start's output count is provisional
        self._input_tokens: int | None = None
        self._cached_input_tokens = 0
        self._cache_writes = 0
        self._output_tokens: int | None = None
        self.events: list[StreamEvent] = []
        self._blocks: dict[int, _Block] = {}  # open non-text blocks, by content-block index
        self._calls: list[ToolCallPart] = []
        self._reasoning: list[Reasoning | None] = []  # a slot per part, filled at its stop

    @property
    def usage(self) -> Usage | None:
        """Usage as reported so far; None until the relay reported output tokens."""
        if self._input_tokens is None or self._output_tokens is None:
            return None
        return Usage(
            self._input_tokens,
            self._output_tokens,
            cached_input_tokens=self._cached_input_tokens,
            cache_write_tokens=self._cache_writes,
        )

    @property
    def input_tokens(self) -> int | None:
        """Input tokens reported by message_start, if it came."""
        return self._input_tokens

    @property
    def cached_input_tokens(self) -> int:
        """Of the input tokens, the prompt-cache reads reported by message_start."""
        return self._cached_input_tokens

    @property
    def finish_reason(self) -> FinishReason:
        """Why the model stopped; TOOL_CALLS whenever it made calls."""
        return _finish(self._finish, self._calls)

    @property
    def tool_calls(self) -> tuple[ToolCallPart, ...]:
        """The tool calls completed so far, in order."""
        return tuple(self._calls)

    @property
    def reasoning(self) -> tuple[Reasoning, ...]:
        """The thinking blocks completed so far, in order, signatures included."""
        return tuple(part for part in self._reasoning if part is not None)

    def feed(self, events: list[ServerSentEvent]) -> str:
        """Text of `events`; records usage, stop reason and message_stop.

        A text delta costs what it did before tools existed; every other
        block (tool_use, thinking) goes through `_start`, `_delta` and `_stop`.
        """
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
                    else:
                        self._delta(data["index"], delta, parts)
                elif kind == "content_block_start":
                    block = data["content_block"]
                    if block.get("type") != "text":
                        self._start(data["index"], block, parts)
                elif kind == "content_block_stop":
                    if self._blocks:
                        self._stop(data["index"], parts)
                elif kind == "message_start":
                    usage = data["message"].get("usage") or {}
                    self._input_tokens = _input_tokens(usage)
                    if self._input_tokens is not None:
                        self._cached_input_tokens = _cache_reads(usage)
                        self._cache_writes = _cache_writes(usage)
                    if "output_tokens" in usage:  # reported already, usually 1
                        self._output_tokens = int(usage["output_tokens"])
                elif kind == "message_delta":
                    reason = data.get("delta", {}).get("stop_reason")
                    if reason:
                        self._finish = STOP_REASONS.get(reason, FinishReason.UNKNOWN)
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
            except MalformedToolCallError as error:
                self.error = RelayProtocolError(str(error))
            except (KeyError, TypeError, AttributeError, ValueError):  # incl. JSONDecodeError
                self.error = RelayProtocolError("the relay sent a malformed stream event")
        if self.events:
            return finish_feed(parts, self.events)
        return "".join(parts) if len(parts) != 1 else parts[0]

    def _start(self, at: int, block: dict[str, Any], parts: list[str]) -> None:
        kind = block.get("type")
        events = self.events
        if kind == "tool_use":
            call_id, name = block["id"], block["name"]
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise TypeError("tool_use id and name must be strings")
            index = len(self._calls) + sum(1 for b in self._blocks.values() if b.tool)
            opened = self._blocks[at] = _Block(index, True, call_id, name)
            opened.initial = block.get("input")
            flush_text(parts, events)
            events.append(ToolCallStart(index, call_id, name))
        elif kind == "thinking":
            index = len(self._reasoning)
            self._reasoning.append(None)
            opened = self._blocks[at] = _Block(index, False)
            thought, signature = block.get("thinking") or "", block.get("signature") or ""
            if thought or signature:
                opened.fragments.append(thought)
                opened.signature.append(signature)
                flush_text(parts, events)
                events.append(ReasoningDelta(index, text=thought, signature=signature))
        elif kind == "redacted_thinking":
            data = block["data"]
            if not isinstance(data, str):
                raise TypeError("redacted_thinking data must be a string")
            index = len(self._reasoning)
            self._reasoning.append(RedactedReasoningPart(data))
            flush_text(parts, events)
            events.append(ReasoningDelta(index, redacted_data=data))

    def _delta(self, at: int, delta: dict[str, Any], parts: list[str]) -> None:
        block = self._blocks.get(at)
        if block is None:
            return  # a delta of a block kind not kept (citations, server tools)
        kind = delta.get("type")
        if kind == "input_json_delta" and block.tool:
            fragment = delta["partial_json"]
            if not isinstance(fragment, str):
                raise TypeError("partial_json must be a string")
            if fragment:
                block.fragments.append(fragment)
                flush_text(parts, self.events)
                self.events.append(ToolCallDelta(block.index, fragment))
        elif kind == "thinking_delta" and not block.tool:
            thought = delta["thinking"]
            if not isinstance(thought, str):
                raise TypeError("thinking must be a string")
            block.fragments.append(thought)
            flush_text(parts, self.events)
            self.events.append(ReasoningDelta(block.index, text=thought))
        elif kind == "signature_delta" and not block.tool:
            signature = delta["signature"]
            if not isinstance(signature, str):
                raise TypeError("signature must be a string")
            block.signature.append(signature)
            flush_text(parts, self.events)
            self.events.append(ReasoningDelta(block.index, signature=signature))

    def _stop(self, at: int, parts: list[str]) -> None:
        block = self._blocks.pop(at, None)
        if block is None:
            return
        if not block.tool:
            thought = ReasoningPart("".join(block.fragments), "".join(block.signature))
            self._reasoning[block.index] = thought
            return
        where = f"call {block.index} to {block.name!r}"
        if block.fragments:
            arguments = parse_arguments("".join(block.fragments), where)
        elif block.initial:  # a relay that sent the input whole, in the start
            arguments = check_input(block.initial, where)
        else:
            arguments = {}
        call = ToolCallPart(block.id, block.name, arguments)
        self._calls.append(call)
        flush_text(parts, self.events)
        self.events.append(ToolCallEnd(block.index, call))


def _finish(reported: FinishReason, calls: list[ToolCallPart]) -> FinishReason:
    """An answer that made tool calls waits for their results, whatever stop it reported."""
    if calls and reported in (FinishReason.STOP, FinishReason.UNKNOWN):
        return FinishReason.TOOL_CALLS
    return reported


def _tool_use(number: int, block: dict[str, Any]) -> ToolCallPart:
    call_id, name = block["id"], block["name"]
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise TypeError("tool_use id and name must be strings")
    return ToolCallPart(
        call_id, name, check_input(block.get("input", {}), f"call {number} to {name!r}")
    )


def _content(message: Message) -> str | list[dict[str, Any]]:
    """A plain message's content: the plain string of a one-part text message, else
    one text block each."""
    parts = message.parts
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return parts[0].text
    return [{"type": "text", "text": part.text} for part in parts if type(part) is TextPart]


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """The conversation as Anthropic turns: tool results are user content, and
    adjacent turns of one side are merged (tool results first, as required)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        role = "assistant" if message.role is Role.ASSISTANT else "user"
        blocks = [block for part in message.parts if (block := _block(part)) is not None]
        if not blocks:
            continue  # only reasoning this wire cannot take back
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _block(part: Part) -> dict[str, Any] | None:
    match part:
        case TextPart(text=text):
            return {"type": "text", "text": text}
        case ImagePart(media_type=media_type, data=data, url=url):
            if url:
                return {"type": "image", "source": {"type": "url", "url": url}}
            source = {
                "type": "base64",
                "media_type": media_type,
                "data": base64.b64encode(data).decode(),
            }
            return {"type": "image", "source": source}
        case ToolCallPart(id=call_id, name=name, arguments=arguments):
            return {"type": "tool_use", "id": call_id, "name": name, "input": dict(arguments)}
        case ToolResultPart(tool_call_id=call_id, content=content, is_error=is_error):
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            if content:
                result["content"] = content
            if is_error:
                result["is_error"] = True
            return result
        case ReasoningPart(text=text, signature=signature):
            if not signature:
                return None  # reasoning from another wire: Anthropic would refuse it unsigned
            return {"type": "thinking", "thinking": text, "signature": signature}
        case RedactedReasoningPart(data=data):
            return {"type": "redacted_thinking", "data": data}
        case _:
            assert_never(part)


def thinking_budget(request: Request, max_tokens: int) -> int | None:
    """The thinking budget to ask for: the request's, or its effort's share of max_tokens."""
    if request.thinking_budget is not None:
        return request.thinking_budget
    effort = request.reasoning_effort
    if effort is None:
        return None
    share = max_tokens // _EFFORT_SHARE[effort] if effort in _EFFORT_SHARE else max_tokens * 3 // 4
    return max(share, MIN_THINKING_BUDGET)


def _structured(body: dict[str, Any], request: Request, max_tokens: int) -> None:
    """Tools, tool choice, thinking and the JSON format, as the Messages wire has them."""
    if request.tools:
        tools = []
        for tool in request.tools:
            spec: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
            if tool.description:
                spec["description"] = tool.description
            tools.append(spec)
        body["tools"] = tools
        choice = request.tool_choice
        parallel = request.parallel_tool_calls
        if choice is not None or parallel is False:
            mode = choice.mode if choice is not None else ToolChoiceMode.AUTO
            wire: dict[str, Any] = {"type": _TOOL_CHOICES[mode]}
            if mode is ToolChoiceMode.TOOL and choice is not None:
                wire["name"] = choice.name
            if parallel is False and mode is not ToolChoiceMode.NONE:
                wire["disable_parallel_tool_use"] = True
            body["tool_choice"] = wire
    budget = thinking_budget(request, max_tokens)
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    fmt = request.response_format
    if fmt is not None and fmt.kind is not ResponseKind.TEXT:
        schema = fmt.schema if fmt.schema is not None else {"type": "object"}
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}


def _cache_reads(usage: Any) -> int:
    """Prompt-cache reads: part of the input, priced at the cached-input price."""
    return max(int(usage.get("cache_read_input_tokens") or 0), 0)


def _cache_writes(usage: Any) -> int:
    """Prompt-cache writes: part of the input, priced at the cache-write price."""
    return max(int(usage.get("cache_creation_input_tokens") or 0), 0)


def _input_tokens(usage: Any) -> int | None:
    """Every input token: uncached input plus prompt-cache writes and reads."""
    if not usage or "input_tokens" not in usage:
        return None
    return (
        int(usage["input_tokens"])
        + int(usage.get("cache_creation_input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0)
    )
