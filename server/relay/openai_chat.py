"""The OpenAI Chat Completions wire: ``POST {relay}/chat/completions``.

Streams are requested with ``stream_options.include_usage`` so the relay
reports usage in a last chunk whose ``choices`` is empty; the stream is
complete only at ``data: [DONE]``. ``prompt_tokens`` counts every input
token; ``prompt_tokens_details.cached_tokens`` says how many of them the
provider served from its prompt cache (priced at the cached-input price),
and ``completion_tokens_details.reasoning_tokens`` how many of the output
tokens went to reasoning. The chat wire reports no prompt-cache writes.

Tools: ``tools`` (functions), ``tool_choice``, ``parallel_tool_calls``;
assistant messages carry ``tool_calls`` with their arguments as a JSON string,
and each tool result is a ``role: tool`` message (the wire has no error flag:
the content alone says). Streamed calls arrive as ``delta.tool_calls`` keyed
by ``index``: the first fragment of an index carries the id and name, later
ones argument text cut anywhere. A fragment under a known index with a
*different* id is a new call (some compatible relays number every call 0),
and every open call is complete at the ``finish_reason``. Reasoning is asked
for with ``reasoning_effort`` (a thinking budget maps to the nearest effort);
the chat wire gives back no reasoning text except the ``reasoning_content``
some compatible relays send, which is kept, but never sent back (they refuse
it in a request). Images travel as ``image_url`` parts (bytes as a data URL),
JSON answers as ``response_format``.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, assert_never

import orjson

from server.domain import (
    FinishReason,
    ImagePart,
    Message,
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
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)
from server.errors import RelayError, RelayProtocolError, RelayUnavailableError
from server.relay.events import (
    Answer,
    MalformedToolCallError,
    finish_feed,
    flush_text,
    parse_arguments,
)

if TYPE_CHECKING:
    from server.domain import ModelSpec
    from server.relay.sse import ServerSentEvent

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}
_DONE = b"[DONE]"
# A thinking budget below these many tokens is the effort named (else "high").
_EFFORT_BELOW = ((4096, ReasoningEffort.LOW), (16384, ReasoningEffort.MEDIUM))


class OpenAIChat:
    """Translator for the OpenAI Chat Completions wire."""

    path = "/chat/completions"

    def headers(self, api_key: str) -> dict[str, str]:
        """Bearer authentication."""
        return {"authorization": f"Bearer {api_key}"}

    def encode(self, request: Request, model: ModelSpec, max_tokens: int, stream: bool) -> bytes:
        """The chat.completions request body."""
        if request.plain:
            messages: list[dict[str, Any]] = [
                {"role": m.role.text, "content": _content(m)} for m in request.messages
            ]
        else:
            messages = []
            for m in request.messages:
                messages.extend(_message(m))
        body: dict[str, Any] = {
            "model": model.name,
            "messages": messages,
            "max_tokens": max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if not request.plain:
            _structured(body, request)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    def decode(self, body: bytes) -> Answer:
        """Content, tool calls, reasoning, usage and finish reason of a chat.completion."""
        try:
            parsed = orjson.loads(body)
            choice = parsed["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            finish = FINISH_REASONS.get(choice.get("finish_reason"), FinishReason.UNKNOWN)
            usage = _usage(parsed.get("usage"))
            raw_calls = message.get("tool_calls")
            calls = tuple(_call(n, raw) for n, raw in enumerate(raw_calls)) if raw_calls else ()
            thought = message.get("reasoning_content")
        except MalformedToolCallError as error:
            raise RelayProtocolError(str(error)) from None
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise RelayProtocolError("the relay sent a malformed chat completion") from None
        if not isinstance(content, str) or (thought is not None and not isinstance(thought, str)):
            raise RelayProtocolError("the relay sent a malformed chat completion")
        reasoning: tuple[Reasoning, ...] = (ReasoningPart(thought),) if thought else ()
        return Answer(content, usage, _finish(finish, calls), calls, reasoning)

    def refusal(self, request: Request, model: ModelSpec, max_tokens: int) -> str | None:
        """The chat wire takes every request the contract allows."""
        return None

    def stream_decoder(self) -> OpenAIStreamDecoder:
        """A decoder for one chat.completion.chunk stream."""
        return OpenAIStreamDecoder()


class _OpenCall:
    """A streamed tool call not complete yet: its fragments so far."""

    __slots__ = ("fragments", "id", "index", "name")

    def __init__(self, index: int, call_id: str, name: str) -> None:
        self.index = index
        self.id = call_id
        self.name = name
        self.fragments: list[str] = []


class OpenAIStreamDecoder:
    """Accumulates a chat.completion.chunk stream."""

    __slots__ = (
        "_calls",
        "_finish",
        "_open",
        "_thought",
        "done",
        "error",
        "events",
        "usage",
    )

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self._finish = FinishReason.UNKNOWN
        self.error: RelayError | None = None
        self.events: list[StreamEvent] = []
        self._open: dict[int, _OpenCall] = {}  # by the wire's index
        self._calls: list[ToolCallPart] = []  # complete, in order
        self._thought: list[str] = []  # reasoning_content, where a relay sends it

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

    @property
    def finish_reason(self) -> FinishReason:
        """Why the model stopped; TOOL_CALLS whenever it made calls and said only "stop"."""
        return _finish(self._finish, self._calls)

    @property
    def tool_calls(self) -> tuple[ToolCallPart, ...]:
        """The tool calls completed so far, in order."""
        return tuple(self._calls)

    @property
    def reasoning(self) -> tuple[Reasoning, ...]:
        """The reasoning text a relay sent (``reasoning_content``), as one part."""
        return (ReasoningPart("".join(self._thought)),) if self._thought else ()

    def feed(self, events: list[ServerSentEvent]) -> str:
        """Text of `events`; records usage, finish reason and [DONE].

        A chunk whose delta holds more than its content (the role, tool calls,
        reasoning) goes the slow way, through `_more`; a content delta is one
        dict lookup and one length check.
        """
        parts: list[str] = []
        for event in events:
            if self.error is not None:
                break
            data = event.data
            if data == _DONE:
                self.done = True
                if self._open:
                    self._end_calls(parts)
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
                    if delta:
                        text = delta.get("content")
                        if text:
                            parts.append(text)
                        if text is None or len(delta) > 1:
                            self._more(delta, parts)
                    reason = choice.get("finish_reason")
                    if reason:
                        self._finish = FINISH_REASONS.get(reason, FinishReason.UNKNOWN)
                        if self._open:
                            self._end_calls(parts)
                if chunk.get("usage"):
                    self.usage = _usage(chunk["usage"])
            except MalformedToolCallError as error:
                self.error = RelayProtocolError(str(error))
            except (AttributeError, TypeError, KeyError, ValueError):
                self.error = RelayProtocolError("the relay sent a malformed stream chunk")
        if self.events:
            return finish_feed(parts, self.events)
        return "".join(parts) if len(parts) != 1 else parts[0]

    def _more(self, delta: dict[str, Any], parts: list[str]) -> None:
        """The rest of a delta: tool-call fragments and reasoning text."""
        calls = delta.get("tool_calls")
        if calls:
            for raw in calls:
                self._call_fragment(raw, parts)
        thought = delta.get("reasoning_content")
        if thought:
            if not isinstance(thought, str):
                raise TypeError("reasoning_content")
            flush_text(parts, self.events)
            self._thought.append(thought)
            self.events.append(ReasoningDelta(0, text=thought))

    def _call_fragment(self, raw: dict[str, Any], parts: list[str]) -> None:
        wire_index = raw.get("index", 0)
        call_id = raw.get("id")
        function = raw.get("function") or {}
        call = self._open.get(wire_index)
        if call is None or (call_id and call_id != call.id):
            if call is not None:  # the index was reused for another call: this one is done
                self._end(call, parts)
                del self._open[wire_index]
            name = function.get("name")
            if not call_id or not name or not isinstance(call_id, str):
                raise MalformedToolCallError(
                    "the relay streamed a tool call without its id and name first"
                )
            index = len(self._calls) + len(self._open)  # every call started so far
            call = self._open[wire_index] = _OpenCall(index, call_id, name)
            flush_text(parts, self.events)
            self.events.append(ToolCallStart(index, call_id, name))
        fragment = function.get("arguments")
        if fragment:
            if not isinstance(fragment, str):
                raise MalformedToolCallError(
                    f"the relay sent tool call arguments that are not text (call {call.index})"
                )
            call.fragments.append(fragment)
            flush_text(parts, self.events)
            self.events.append(ToolCallDelta(call.index, fragment))

    def _end(self, call: _OpenCall, parts: list[str]) -> None:
        arguments = parse_arguments("".join(call.fragments), f"call {call.index} to {call.name!r}")
        done = ToolCallPart(call.id, call.name, arguments)
        self._calls.append(done)
        flush_text(parts, self.events)
        self.events.append(ToolCallEnd(call.index, done))

    def _end_calls(self, parts: list[str]) -> None:
        """Every open call is complete: parse each, in the order they started."""
        for call in sorted(self._open.values(), key=lambda c: c.index):
            self._end(call, parts)
        self._open.clear()


def _finish(
    reported: FinishReason, calls: tuple[ToolCallPart, ...] | list[ToolCallPart]
) -> FinishReason:
    """An answer that made tool calls waits for their results, whatever "stop" it gave."""
    if calls and reported in (FinishReason.STOP, FinishReason.UNKNOWN):
        return FinishReason.TOOL_CALLS
    return reported


def _call(number: int, raw: dict[str, Any]) -> ToolCallPart:
    """One tool call of a unary answer."""
    function = raw["function"]
    call_id, name = raw["id"], function["name"]
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise TypeError("tool call id and name must be strings")
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, str):
        raise MalformedToolCallError(
            f"the relay sent tool call arguments that are not text (call {number})"
        )
    return ToolCallPart(
        call_id, name, parse_arguments(arguments or "", f"call {number} to {name!r}")
    )


def _content(message: Message) -> str | list[dict[str, Any]]:
    """A plain message's content: the plain string of a one-part text message (what
    every relay takes), else one text part each."""
    parts = message.parts
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return parts[0].text
    return [{"type": "text", "text": part.text} for part in parts if type(part) is TextPart]


def _message(message: Message) -> list[dict[str, Any]]:
    """One message as the chat wire's messages: one, or one per tool result."""
    content: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for part in message.parts:
        match part:
            case TextPart(text=text):
                content.append({"type": "text", "text": text})
                texts.append(text)
            case ImagePart():
                content.append({"type": "image_url", "image_url": {"url": _image_url(part)}})
            case ToolCallPart(id=call_id, name=name, arguments=arguments):
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
                    }
                )
            case ToolResultPart(tool_call_id=call_id, content=result):
                results.append({"role": "tool", "tool_call_id": call_id, "content": result})
            case ReasoningPart() | RedactedReasoningPart():
                pass  # the chat wire takes no reasoning back (compatible relays refuse it)
            case _:
                assert_never(part)
    if message.role is Role.TOOL:
        return results
    if message.role is Role.ASSISTANT:
        body: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            body["tool_calls"] = calls
        return [body]
    return [{"role": message.role.text, "content": content}]


def _image_url(image: ImagePart) -> str:
    if image.url:
        return image.url
    return f"data:{image.media_type};base64,{base64.b64encode(image.data).decode()}"


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    match choice.mode:
        case ToolChoiceMode.AUTO:
            return "auto"
        case ToolChoiceMode.NONE:
            return "none"
        case ToolChoiceMode.REQUIRED:
            return "required"
        case ToolChoiceMode.TOOL:
            return {"type": "function", "function": {"name": choice.name}}
        case _:
            assert_never(choice.mode)


def effort(request: Request) -> ReasoningEffort | None:
    """The reasoning effort to ask for: the request's, or the nearest to its budget."""
    if request.reasoning_effort is not None:
        return request.reasoning_effort
    budget = request.thinking_budget
    if budget is None:
        return None
    for below, named in _EFFORT_BELOW:
        if budget < below:
            return named
    return ReasoningEffort.HIGH


def _structured(body: dict[str, Any], request: Request) -> None:
    """Tools, tool choice, response format and reasoning effort, as the chat wire has them."""
    if request.tools:
        tools = []
        for tool in request.tools:
            function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
            if tool.description:
                function["description"] = tool.description
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.response_format
    if fmt is not None:
        if fmt.kind is ResponseKind.JSON_SCHEMA:
            schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
            if fmt.strict:
                schema["strict"] = True
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif fmt.kind is ResponseKind.JSON_OBJECT:
            body["response_format"] = {"type": "json_object"}
    wanted = effort(request)
    if wanted is not None:
        body["reasoning_effort"] = wanted.text


def _usage(raw: Any) -> Usage | None:
    """Usage of a completion; `prompt_tokens` includes the cached ones, and
    `completion_tokens` the reasoning ones."""
    if not raw:
        return None
    input_tokens = int(raw["prompt_tokens"])
    output_tokens = int(raw["completion_tokens"])
    details = raw.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if details else 0
    output_details = raw.get("completion_tokens_details")
    reasoning = int(output_details.get("reasoning_tokens") or 0) if output_details else 0
    return Usage(
        input_tokens,
        output_tokens,
        cached_input_tokens=min(max(cached, 0), input_tokens),
        reasoning_tokens=min(max(reasoning, 0), output_tokens),
    )
