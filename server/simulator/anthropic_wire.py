"""The Anthropic Messages wire: request validation and every body and SSE event.

Follows the public API reference: a unary ``message`` object; a stream of
named events ``message_start`` (usage with the input tokens and
``output_tokens: 1``), ``content_block_start``, ``ping``, one
``content_block_delta`` per token, ``content_block_stop``, ``message_delta``
(stop reason and the cumulative ``output_tokens``) and ``message_stop``.
Errors are ``{"type": "error", "error": {type, message}}``, in a body or, once
a stream has started, as an ``error`` event.

Beyond text it takes ``tools`` (``input_schema``), ``tool_choice`` (auto, any,
tool, none, ``disable_parallel_tool_use``), ``thinking`` with
``budget_tokens``, ``output_config.format`` (and the beta's
``output_format``), ``cache_control`` breakpoints and the content blocks
``image``, ``tool_use``, ``tool_result``, ``thinking``,
``redacted_thinking``, checked as Anthropic checks them (tool pairing, the
thinking block a tool-use turn must keep, 5 MB per base64 image); answers
carry those blocks, ``stop_reason: tool_use`` and the cache usage fields.
Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import orjson

from server.simulator.content import IMAGE_TOKENS, Answer, Extras, Finish
from server.simulator.instances import schema_error
from server.simulator.parts import IMAGE_MEDIA_TYPES, TOOL_NAME, digest, json_tokens, sniff_image
from server.simulator.wire import (
    Call,
    ChatRequest,
    ErrorKind,
    Features,
    Frame,
    Message,
    OutputFormat,
    OutputKind,
    SignedBlock,
    Tool,
    ToolChoice,
    ToolChoiceKind,
    UsageReport,
    WireError,
    check_number,
    optional_bool,
    optional_int,
    sse_event,
    text_of,
)
from server.tokens import conversation_tokens, text_tokens

ROLES = frozenset({"user", "assistant"})
# Body fields that make a request more than plain text (see server.simulator.features).
FEATURE_FIELDS = frozenset({"tools", "tool_choice", "thinking", "output_config", "output_format"})
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # per base64 image, measured on the base64 text
MIN_THINKING_BUDGET = 1024
_STOP_REASON = {
    Finish.END: "end_turn",
    Finish.STOP_SEQUENCE: "stop_sequence",
    Finish.LENGTH: "max_tokens",
    Finish.TOOL_CALLS: "tool_use",
}

# kind -> (error type, message) as Anthropic reports them.
_ERRORS: Mapping[ErrorKind, tuple[str, str]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", "Invalid request (simulated fault)."),
    ErrorKind.CONTEXT_LENGTH: (
        "invalid_request_error",
        "prompt is too long: {input_tokens} tokens > 200000 maximum (simulated fault)",
    ),
    ErrorKind.AUTHENTICATION: ("authentication_error", "invalid x-api-key"),
    ErrorKind.PERMISSION: (
        "permission_error",
        "Your API key does not have permission to use {model} (simulated fault).",
    ),
    ErrorKind.NOT_FOUND: ("not_found_error", "model: {model}"),
    ErrorKind.METHOD_NOT_ALLOWED: ("invalid_request_error", "Method not allowed."),
    ErrorKind.REQUEST_TIMEOUT: ("api_error", "Request timed out (simulated fault)."),
    ErrorKind.CONFLICT: ("invalid_request_error", "Conflicting request (simulated fault)."),
    ErrorKind.TOO_LARGE: ("request_too_large", "Request exceeds the maximum allowed size."),
    ErrorKind.UNPROCESSABLE: ("invalid_request_error", "Unprocessable request (simulated fault)."),
    ErrorKind.RATE_LIMIT: (
        "rate_limit_error",
        "This request would exceed the rate limit for {model} (simulated).",
    ),
    ErrorKind.SPEND_LIMIT: (
        "rate_limit_error",
        "This request would exceed your organization's monthly spend limit (simulated).",
    ),
    ErrorKind.SERVER_ERROR: ("api_error", "Internal server error (simulated fault)."),
    ErrorKind.BAD_GATEWAY: ("api_error", "Bad gateway (simulated fault)."),
    ErrorKind.UNAVAILABLE: ("overloaded_error", "Service unavailable (simulated fault)."),
    ErrorKind.OVERLOADED: ("overloaded_error", "Overloaded"),
}
_PING = sse_event(b'{"type":"ping"}', "ping")


class AnthropicWire:
    """Messages, as documented by Anthropic."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """Short name used in messages."""
        return "anthropic"

    @property
    def id_prefix(self) -> str:
        """Response ids look like ``msg_...``."""
        return "msg_"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        """``x-api-key``, or a bearer token as some relays accept."""
        if "x-api-key" in headers:
            return headers["x-api-key"]
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def parse(self, body: object) -> ChatRequest:
        """Validate a Messages request body."""
        if not isinstance(body, dict):
            raise WireError(ErrorKind.INVALID_REQUEST, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError(ErrorKind.INVALID_REQUEST, "model: Field required")
        max_tokens = optional_int(body, "max_tokens", 1)
        if max_tokens is None:
            raise WireError(ErrorKind.INVALID_REQUEST, "max_tokens: Field required")
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise WireError(ErrorKind.INVALID_REQUEST, "messages: expected a non-empty array")
        messages = []
        turns: _Turns | None = None  # created at the first message beyond plain text
        for i, raw in enumerate(raw_messages):
            role = raw.get("role") if isinstance(raw, dict) else None
            if not isinstance(role, str) or role not in ROLES:
                raise WireError(
                    ErrorKind.INVALID_REQUEST,
                    f"messages.{i}: expected an object with role 'user' or 'assistant'",
                )
            content = raw.get("content")
            if turns is None and _plain(content):
                messages.append(Message(role, text_of(content, f"messages.{i}.content")))
                continue
            if turns is None:
                turns = _Turns(i)
            messages.append(turns.message(i, role, content))
        system = body.get("system")
        check_number(body, "temperature", 1)
        check_number(body, "top_p", 1)
        stop = body.get("stop_sequences")
        if stop is not None and not (
            isinstance(stop, list) and all(isinstance(item, str) for item in stop)
        ):
            raise WireError(
                ErrorKind.INVALID_REQUEST, "stop_sequences: expected an array of strings"
            )
        system_text = None if system is None else text_of(system, "system")
        features = None
        if (
            turns is not None
            or (
                not FEATURE_FIELDS.isdisjoint(body)  # a C-speed check first: plain text skips on
                and any(body.get(field) is not None for field in FEATURE_FIELDS)
            )
            or not _plain(system)
        ):
            request = _Request(body, raw_messages, messages, system_text, max_tokens)
            features = request.features(turns or _Turns(len(messages)))
        return ChatRequest(
            model=model,
            messages=tuple(messages),
            system=system_text,
            max_tokens=max_tokens,
            stop=tuple(str(item) for item in stop or ()),
            stream=optional_bool(body, "stream"),
            include_usage=True,
            features=features,
        )

    def default_message(self, kind: ErrorKind, *, model: str, input_tokens: int = 0) -> str:
        """The message Anthropic sends with ``kind``."""
        return _ERRORS[kind][1].format(model=model, input_tokens=input_tokens)

    def error_body(self, kind: ErrorKind, message: str, param: str | None = None) -> bytes:
        """``{"type": "error", "error": {...}}`` (Anthropic names the field in the message)."""
        return orjson.dumps(_error(kind, message))

    def unary_body(self, call: Call, answer: Answer, *, usage: bool) -> tuple[bytes, UsageReport]:
        """A ``message`` object."""
        if answer.extras is not None:
            return _feature_message(call, answer, answer.extras, usage=usage)
        body: dict[str, object] = {
            **_message(call, answer),
            "content": [{"type": "text", "text": answer.text}] if answer.tokens else [],
        }
        if not usage:
            del body["usage"]
            return orjson.dumps(body), UsageReport()
        return orjson.dumps(body), UsageReport(call.input_tokens, len(answer.tokens))

    def stream_open(self, call: Call, request: ChatRequest) -> Sequence[Frame]:
        """``message_start``, ``content_block_start`` and a ``ping``, as Anthropic opens."""
        message: dict[str, object] = {
            "id": call.response_id,
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": call.input_tokens, "output_tokens": 1},
        }
        start = {"type": "message_start", "message": message}
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        return (
            Frame(
                sse_event(orjson.dumps(start), "message_start"), UsageReport(call.input_tokens, 1)
            ),
            Frame(sse_event(orjson.dumps(block), "content_block_start")),
            Frame(_PING),
        )

    def stream_token(self, call: Call, request: ChatRequest, token: str) -> Frame:
        """One ``text_delta``."""
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": token},
        }
        return Frame(sse_event(orjson.dumps(delta), "content_block_delta"), tokens=1)

    def stream_close(
        self, call: Call, request: ChatRequest, answer: Answer, *, usage: bool, terminator: bool
    ) -> Sequence[Frame]:
        """``content_block_stop``, ``message_delta`` and ``message_stop``."""
        stop = {"type": "content_block_stop", "index": 0}
        delta: dict[str, object] = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASON[answer.finish],
                "stop_sequence": answer.stop_sequence,
            },
        }
        report = None
        if usage:
            delta["usage"] = {"output_tokens": len(answer.tokens)}
            report = UsageReport(output_tokens=len(answer.tokens))
        frames = [
            Frame(sse_event(orjson.dumps(stop), "content_block_stop")),
            Frame(sse_event(orjson.dumps(delta), "message_delta"), report),
        ]
        if terminator:
            frames.append(Frame(sse_event(b'{"type":"message_stop"}', "message_stop")))
        return frames

    def stream_answer(
        self, call: Call, request: ChatRequest, answer: Answer, *, usage: bool, terminator: bool
    ) -> tuple[Sequence[Frame], Sequence[Frame]]:
        """``message_start``, one content block after another, ``message_delta``, ``message_stop``.

        Blocks in Anthropic's order and shapes: ``thinking`` (``thinking_delta``
        per token, then one ``signature_delta``) or ``redacted_thinking``
        (whole in its start event), ``text`` (``text_delta``), each
        ``tool_use`` (start with ``input: {}``, an empty ``input_json_delta``,
        then the argument fragments). A ``ping`` follows the first block's
        start, as Anthropic sends it.
        """
        extras = answer.extras or Extras()
        start = {"type": "message_start", "message": _opening(call, extras)}
        body = [
            Frame(
                sse_event(orjson.dumps(start), "message_start"),
                UsageReport(_uncached(call, extras), 1, extras.cache_read, extras.cache_write),
            )
        ]
        blocks = _stream_blocks(answer, extras)
        for index, (opening, deltas) in enumerate(blocks):
            if index:
                body.append(
                    _event("content_block_stop", {"type": "content_block_stop", "index": index - 1})
                )
            block = {"type": "content_block_start", "index": index, "content_block": opening}
            body.append(
                _event("content_block_start", block, tokens=int(opening["type"] == "tool_use"))
            )
            if index == 0:
                body.append(Frame(_PING))
            for delta, tokens in deltas:
                event = {"type": "content_block_delta", "index": index, "delta": delta}
                body.append(_event("content_block_delta", event, tokens=tokens))
        stop = {"type": "content_block_stop", "index": len(blocks) - 1}
        message_delta: dict[str, object] = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASON[answer.finish],
                "stop_sequence": answer.stop_sequence,
            },
        }
        report = None
        if usage:
            message_delta["usage"] = {"output_tokens": answer.output_tokens}
            report = UsageReport(output_tokens=answer.output_tokens)
        close = [
            _event("content_block_stop", stop),
            Frame(sse_event(orjson.dumps(message_delta), "message_delta"), report),
        ]
        if terminator:
            close.append(Frame(sse_event(b'{"type":"message_stop"}', "message_stop")))
        return body, close

    def stream_error(self, kind: ErrorKind, message: str) -> Frame:
        """An ``error`` event."""
        return Frame(sse_event(orjson.dumps(_error(kind, message)), "error"))

    def keepalive(self) -> Frame:
        """A ``ping`` event."""
        return Frame(_PING)

    def empty_choices(self, call: Call, request: ChatRequest) -> Frame | None:
        """Messages has no choices array, so no such frame exists."""
        return None


def _event(name: str, payload: Mapping[str, object], tokens: int = 0) -> Frame:
    return Frame(sse_event(orjson.dumps(payload), name), tokens=tokens)


def _uncached(call: Call, extras: Extras) -> int:
    """Anthropic's ``input_tokens``: the input that neither read nor wrote the prompt cache."""
    return call.input_tokens - extras.cache_read - extras.cache_write


def _feature_usage(call: Call, answer: Answer, extras: Extras, output: int) -> dict[str, int]:
    return {
        "input_tokens": _uncached(call, extras),
        "cache_creation_input_tokens": extras.cache_write,
        "cache_read_input_tokens": extras.cache_read,
        "output_tokens": output,
    }


def _opening(call: Call, extras: Extras) -> dict[str, object]:
    """The message of ``message_start``: no content yet, usage with the cache counts."""
    return {
        "id": call.response_id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _feature_usage(call, Answer((), Finish.END), extras, 1),
    }


Delta = tuple[dict[str, object], int]  # a content_block_delta's delta, and the tokens it carries


def _stream_blocks(answer: Answer, extras: Extras) -> list[tuple[dict[str, object], list[Delta]]]:
    """Each content block's start payload and its deltas, in order."""
    blocks: list[tuple[dict[str, object], list[Delta]]] = []
    reasoning = extras.reasoning
    if reasoning is not None and reasoning.redacted is not None:
        blocks.append(({"type": "redacted_thinking", "data": reasoning.redacted}, []))
    elif reasoning is not None:
        deltas: list[Delta] = [
            ({"type": "thinking_delta", "thinking": token}, 1) for token in reasoning.tokens
        ]
        deltas.append(({"type": "signature_delta", "signature": reasoning.signature}, 0))
        thinking: dict[str, object] = {"type": "thinking", "thinking": "", "signature": ""}
        blocks.append((thinking, deltas))
    if answer.tokens or not (blocks or extras.tool_calls):
        texts: list[Delta] = [({"type": "text_delta", "text": token}, 1) for token in answer.tokens]
        blocks.append(({"type": "text", "text": ""}, texts))
    for tool_call in extras.tool_calls:
        pieces: list[Delta] = [({"type": "input_json_delta", "partial_json": ""}, 0)]
        pieces.extend(
            ({"type": "input_json_delta", "partial_json": piece}, 1)
            for piece in tool_call.fragments
        )
        opening: dict[str, object] = {
            "type": "tool_use",
            "id": "toolu_01" + tool_call.ref,
            "name": tool_call.name,
            "input": {},
        }
        blocks.append((opening, pieces))
    return blocks


def _feature_message(
    call: Call, answer: Answer, extras: Extras, *, usage: bool
) -> tuple[bytes, UsageReport]:
    """A ``message`` answering a request with features: thinking, tool_use, cache usage."""
    content: list[dict[str, object]] = []
    reasoning = extras.reasoning
    if reasoning is not None and reasoning.redacted is not None:
        content.append({"type": "redacted_thinking", "data": reasoning.redacted})
    elif reasoning is not None:
        content.append(
            {"type": "thinking", "thinking": reasoning.text, "signature": reasoning.signature}
        )
    if answer.tokens:
        content.append({"type": "text", "text": answer.text})
    content.extend(
        {"type": "tool_use", "id": "toolu_01" + c.ref, "name": c.name, "input": c.input}
        for c in extras.tool_calls
    )
    body: dict[str, object] = {
        **_message(call, answer),
        "content": content,
        "usage": _feature_usage(call, answer, extras, answer.output_tokens),
    }
    if not usage:
        del body["usage"]
        return orjson.dumps(body), UsageReport()
    report = UsageReport(
        _uncached(call, extras), answer.output_tokens, extras.cache_read, extras.cache_write
    )
    return orjson.dumps(body), report


def _error(kind: ErrorKind, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": _ERRORS[kind][0], "message": message}}


def _message(call: Call, answer: Answer) -> dict[str, object]:
    return {
        "id": call.response_id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": _STOP_REASON[answer.finish],
        "stop_sequence": answer.stop_sequence,
        "usage": {"input_tokens": call.input_tokens, "output_tokens": len(answer.tokens)},
    }


def _invalid(message: str) -> WireError:
    return WireError(ErrorKind.INVALID_REQUEST, message)


def _plain(content: object) -> bool:
    """Whether ``content`` is text only: absent, a string, or text blocks without cache_control."""
    if content is None or isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(block, dict) and block.get("type") == "text" and "cache_control" not in block
        for block in content
    )


class _Turns:
    """A conversation with content blocks beyond text, as its messages are parsed.

    Anthropic's rules: every ``tool_use`` of an assistant message has its
    ``tool_result`` in the next message, and a ``tool_result`` answers a
    ``tool_use`` of the message before it.
    """

    __slots__ = (
        "answering",
        "breakpoint",
        "extra",
        "first",
        "images",
        "open",
        "results",
        "signed",
        "thinking_at",
        "uses_tools",
    )

    def __init__(self, before: int) -> None:
        self.extra = [0] * before  # input tokens beyond text, per message
        self.first: dict[int, str] = {}  # type of the first block of each assistant message
        self.images = 0
        self.open: list[str] = []  # tool_use ids of the previous message
        self.results: list[str] = []  # tool results of the latest message
        self.signed: list[SignedBlock] = []
        self.thinking_at: set[int] = set()  # messages holding thinking blocks
        self.breakpoint: int | None = None  # the last message with a cache_control block
        self.uses_tools = False
        self.answering: set[int] = set()  # user messages carrying tool results

    def message(self, i: int, role: str, content: object) -> Message:
        where = f"messages.{i}"
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise _invalid(f"{where}.content: expected a string or an array of content blocks")
        texts: list[str] = []
        tokens = 0
        calls: list[str] = []
        answered: list[tuple[int, str]] = []
        results: list[str] = []
        for j, block in enumerate(content):
            at = f"{where}.content.{j}"
            if not isinstance(block, dict):
                raise _invalid(f"{at}: Input should be a valid dictionary")
            kind = block.get("type")
            if "cache_control" in block:
                self.breakpoint = i
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "image" and role == "user":
                _check_image(block, f"{at}.image")
                self.images += 1
                tokens += IMAGE_TOKENS
            elif kind == "tool_result" and role == "user":
                call_id, text = self._result(block, f"{at}.tool_result")
                answered.append((j, call_id))
                results.append(text)
                tokens += text_tokens(text)
            elif kind == "tool_use" and role == "assistant":
                call_id, cost = _tool_use(block, f"{at}.tool_use")
                calls.append(call_id)
                tokens += cost
            elif kind in _THINKING_BLOCKS and role == "assistant":
                tokens += self._thinking(i, at, block)
            elif kind == "text":
                raise _invalid(f"{at}.text.text: Field required")
            elif isinstance(kind, str) and kind in _BLOCK_ROLES:
                raise _invalid(
                    f"{at}: `{kind}` blocks may appear in `{_BLOCK_ROLES[kind]}` messages only"
                )
            else:
                raise _invalid(
                    f"{at}.type: Input tag '{kind}' found using 'type' does not match any of the "
                    "expected tags: 'text', 'image', 'tool_use', 'tool_result', 'thinking', "
                    "'redacted_thinking'"
                )
        self._pair(i, answered)
        if role == "assistant":
            self.first[i] = content[0].get("type", "text") if content else "text"
        self.open, self.results = calls, results
        self.uses_tools = self.uses_tools or bool(calls or answered)
        if answered:
            self.answering.add(i)
        self.extra.append(tokens)
        return Message(role, "".join(texts))

    def _thinking(self, i: int, at: str, block: dict[str, object]) -> int:
        """Keep a thinking or redacted_thinking block for the signature check; its tokens."""
        self.thinking_at.add(i)
        if block["type"] == "redacted_thinking":
            data = block.get("data")
            if not isinstance(data, str):
                raise _invalid(f"{at}.redacted_thinking.data: Field required")
            self.signed.append(SignedBlock(at, None, data))
            return 0
        thinking, signature = block.get("thinking"), block.get("signature")
        if not isinstance(thinking, str) or not isinstance(signature, str):
            raise _invalid(f"{at}.thinking: `thinking` and `signature` are required strings")
        self.signed.append(SignedBlock(at, thinking, signature))
        return text_tokens(thinking)

    def _pair(self, i: int, answered: list[tuple[int, str]]) -> None:
        ids = {call_id for _, call_id in answered}
        missing = [call_id for call_id in self.open if call_id not in ids]
        if missing:
            raise _invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        for j, call_id in answered:
            if call_id not in self.open:
                raise _invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {call_id}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )

    def _result(self, block: dict[str, object], at: str) -> tuple[str, str]:
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str):
            raise _invalid(f"{at}.tool_use_id: Field required")
        if block.get("is_error") is not None and not isinstance(block.get("is_error"), bool):
            raise _invalid(f"{at}.is_error: Input should be a valid boolean")
        content = block.get("content")
        if content is None or isinstance(content, str):
            return call_id, content or ""
        if not isinstance(content, list):
            raise _invalid(f"{at}.content: expected a string or an array of text and image blocks")
        texts: list[str] = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image" and isinstance(part, dict):
                _check_image(part, f"{at}.content.{k}.image")
                self.images += 1
            else:
                raise _invalid(f"{at}.content.{k}: tool results hold text and image blocks only")
        return call_id, "".join(texts)


_BLOCK_ROLES = {
    "image": "user",
    "tool_result": "user",
    "tool_use": "assistant",
    "thinking": "assistant",
    "redacted_thinking": "assistant",
}
_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_-]+")


def _tool_use(block: dict[str, object], at: str) -> tuple[str, int]:
    """Validate a tool_use block sent back; returns its id and its input tokens."""
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not _TOOL_USE_ID.fullmatch(call_id):
        raise _invalid(f"{at}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise _invalid(f"{at}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
    if not isinstance(arguments, dict):
        raise _invalid(f"{at}.input: Input should be a valid dictionary")
    return call_id, text_tokens(name) + json_tokens(arguments)


def _check_image(block: dict[str, object], at: str) -> None:
    """Refuse an image Anthropic refuses: bad source, unknown type, over 5 MB, mislabelled."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{at}.source: Field required")
    kind = source.get("type")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise _invalid(f"{at}.source.url.url: Input should be a valid URL")
        return
    if kind != "base64":
        raise _invalid(
            f"{at}.source: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'base64', 'url'"
        )
    media_type, data = source.get("media_type"), source.get("data")
    if media_type not in IMAGE_MEDIA_TYPES:
        raise _invalid(
            f"{at}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    if not isinstance(data, str):
        raise _invalid(f"{at}.source.base64.data: Field required")
    if len(data) > MAX_IMAGE_BYTES:  # the limit is on the base64 text, not the decoded bytes
        raise _invalid(
            f"{at}.source.base64: image exceeds 5 MB maximum: {len(data)} bytes > "
            f"{MAX_IMAGE_BYTES} bytes"
        )
    try:
        found = sniff_image(data)
    except ValueError:
        raise _invalid(f"{at}.source.base64.data: The image data is not valid base64.") from None
    if found is None:
        raise _invalid(f"{at}.source.base64.data: Could not process image")
    if found != media_type:
        raise _invalid(
            f"{at}.source.base64.data: The image was specified using the {media_type} media "
            f"type, but the image appears to be a {found} image"
        )


class _Request:
    """The request-level fields beyond text: tools, tool_choice, thinking, output format."""

    __slots__ = ("_body", "_max_tokens", "_messages", "_raw_messages", "_system")

    def __init__(
        self,
        body: dict[str, object],
        raw_messages: list[object],
        messages: list[Message],
        system: str | None,
        max_tokens: int,
    ) -> None:
        self._body = body
        self._raw_messages = raw_messages
        self._messages = messages
        self._system = system
        self._max_tokens = max_tokens

    def features(self, turns: _Turns) -> Features:
        """Validate and gather everything; ``turns`` holds what the messages carried."""
        body, messages = self._body, self._messages
        raw_tools = body.get("tools")
        tools, tool_tokens, tool_break = _tools(raw_tools)
        choice, parallel = _tool_choice(body.get("tool_choice"), tools)
        if turns.uses_tools and not tools:
            raise _invalid(
                "Requests which include `tool_use` or `tool_result` blocks must define tools."
            )
        budget = self._thinking(choice)
        last = len(messages) - 1
        if budget is not None and turns.results and last >= 1:
            # The assistant's turn began at the first assistant message of the trailing
            # tool loop (assistant, tool results, assistant, tool results...): that one
            # must open with its thinking; the continuations think no more.
            start = last - 1
            while (
                start >= 2
                and start - 1 in turns.answering
                and messages[start - 2].role == "assistant"
            ):
                start -= 2
            found = turns.first.get(start, "text")
            if messages[start].role == "assistant" and found not in _THINKING_BLOCKS:
                raise _invalid(
                    f"messages.{start}.content.0.type: " + _DROPPED_THINKING.format(found)
                )
        if budget is None and messages[last].role == "assistant" and last in turns.thinking_at:
            raise _invalid(
                f"messages.{last}: When thinking is disabled, an `assistant` message in the "
                "final position cannot contain `thinking`. To use thinking blocks, enable "
                "`thinking` in your request."
            )
        texts = [m.content for m in messages]
        if self._system is not None:
            texts.insert(0, self._system)
        offset = 0 if self._system is None else 1
        breakpoint_ = None
        system = body.get("system")
        if turns.breakpoint is not None:
            k = turns.breakpoint
            tokens = (
                tool_tokens
                + conversation_tokens(texts[: offset + k + 1])
                + sum(turns.extra[: k + 1])
            )
            breakpoint_ = (tokens, digest(raw_tools, system, self._raw_messages[: k + 1]))
        elif not _plain(system):
            tokens = tool_tokens + conversation_tokens(texts[:1])
            breakpoint_ = (tokens, digest(raw_tools, system))
        elif tool_break is not None and isinstance(raw_tools, list):
            head = raw_tools[: tool_break + 1]
            breakpoint_ = (sum(json_tokens(raw) for raw in head), digest(head))
        return Features(
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=parallel,
            output=_output(body),
            thinking_budget=budget,
            images=turns.images,
            extra_tokens=tool_tokens + sum(turns.extra),
            digest=digest(
                self._raw_messages,
                raw_tools,
                body.get("tool_choice"),
                body.get("thinking"),
                body.get("output_config"),
                body.get("output_format"),
                system,
            ),
            tool_results=tuple(turns.results),
            last_text=messages[last].content,
            prefix_tokens=tool_tokens + conversation_tokens(texts[:-1]) + sum(turns.extra[:-1]),
            breakpoint=breakpoint_,
            signed=tuple(turns.signed),
        )

    def _thinking(self, choice: ToolChoice) -> int | None:
        """``thinking.budget_tokens`` when thinking is enabled, checked as Anthropic checks it."""
        body = self._body
        value = body.get("thinking")
        if value is None:
            return None
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "disabled":
            return None
        if kind != "enabled" or not isinstance(value, dict):
            raise _invalid(
                f"thinking: Input tag '{kind}' found using 'type' does not match any of the "
                "expected tags: 'enabled', 'disabled'"
            )
        budget = value.get("budget_tokens")
        if type(budget) is not int:
            raise _invalid("thinking.enabled.budget_tokens: Field required")
        if budget < MIN_THINKING_BUDGET:
            raise _invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_THINKING_BUDGET}"
            )
        if budget >= self._max_tokens:
            raise _invalid(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                f"documentation at {_THINKING_DOCS}#max-tokens-and-context-window-size"
            )
        compatibility = (
            f"Please consult our documentation at {_THINKING_DOCS}#feature-compatibility"
        )
        if body.get("temperature") not in (None, 1):
            raise _invalid(
                f"`temperature` may only be set to 1 when thinking is enabled. {compatibility}"
            )
        top_p = body.get("top_p")
        if isinstance(top_p, int | float) and top_p < 0.95:
            raise _invalid(
                f"`top_p` must be unset or >= 0.95 when thinking is enabled. {compatibility}"
            )
        if body.get("top_k") is not None:
            raise _invalid(f"`top_k` must be unset when thinking is enabled. {compatibility}")
        if choice.kind in (ToolChoiceKind.REQUIRED, ToolChoiceKind.NAMED):
            raise _invalid("Thinking may not be enabled when tool_choice forces tool use.")
        return budget


_THINKING_BLOCKS = ("thinking", "redacted_thinking")
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
# Anthropic's words when a tool-use turn comes back without its thinking block.
_DROPPED_THINKING = (
    "Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is enabled, a "
    "final `assistant` message must start with a thinking block (preceeding the lastmost set of "
    "`tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
    "previous turns. To avoid this requirement, disable `thinking`. Please consult our "
    f"documentation at {_THINKING_DOCS}"
)


def _tools(value: object) -> tuple[tuple[Tool, ...], int, int | None]:
    """The offered tools, their definitions' input tokens, the last one with cache_control."""
    if value is None:
        return (), 0, None
    if not isinstance(value, list):
        raise _invalid("tools: Input should be a valid list")
    tools: list[Tool] = []
    cached = None
    for i, raw in enumerate(value):
        at = f"tools.{i}"
        if not isinstance(raw, dict):
            raise _invalid(f"{at}: Input should be a valid dictionary")
        if raw.get("type") not in (None, "custom"):
            raise _invalid(
                f"{at}: the simulator serves custom tools only (no `type`, or `custom`); "
                f"`{raw.get('type')}` is a server tool"
            )
        name = raw.get("name")
        if not isinstance(name, str):
            raise _invalid(f"{at}.custom.name: Field required")
        if not TOOL_NAME.fullmatch(name):
            raise _invalid(
                f"{at}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        schema = raw.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"{at}.custom.input_schema: Field required")
        if schema.get("type") != "object":
            raise _invalid(f"{at}.custom.input_schema.type: Input should be 'object'")
        if reason := schema_error(schema):
            raise _invalid(f"{at}.custom.input_schema: " + _INVALID_SCHEMA.format(reason))
        if any(tool.name == name for tool in tools):
            raise _invalid("tools: Tool names must be unique.")
        if "cache_control" in raw:
            cached = i
        tools.append(Tool(name, schema))
    return tuple(tools), sum(json_tokens(raw) for raw in value), cached


_INVALID_SCHEMA = (
    "JSON schema is invalid. It must match JSON Schema draft 2020-12 "
    "(https://json-schema.org/draft/2020-12). {}"
)
_CHOICES = {
    "auto": ToolChoiceKind.AUTO,
    "any": ToolChoiceKind.REQUIRED,
    "tool": ToolChoiceKind.NAMED,
    "none": ToolChoiceKind.NONE,
}


def _tool_choice(value: object, tools: tuple[Tool, ...]) -> tuple[ToolChoice, bool]:
    """``tool_choice`` and whether parallel tool use stays allowed."""
    if value is None:
        return ToolChoice(), True
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(value, dict) or not isinstance(kind, str) or kind not in _CHOICES:
        raise _invalid(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if not tools and kind != "none":
        raise _invalid("tool_choice: tool_choice may only be specified while providing tools.")
    disable = value.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise _invalid(
            f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean"
        )
    name = None
    if kind == "tool":
        name = value.get("name")
        if not isinstance(name, str):
            raise _invalid("tool_choice.tool.name: Field required")
        if all(tool.name != name for tool in tools):
            raise _invalid(f"tool_choice.tool.name: no tool named '{name}' is in `tools`")
    return ToolChoice(_CHOICES[kind], name), disable is not True


def _output(body: dict[str, object]) -> OutputFormat | None:
    """Structured output: ``output_config.format``, or the beta's ``output_format``."""
    config = body.get("output_config")
    if config is not None:
        if not isinstance(config, dict):
            raise _invalid("output_config: Input should be a valid dictionary")
        spec, where = config.get("format"), "output_config.format"
    else:
        spec, where = body.get("output_format"), "output_format"
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        raise _invalid(f"{where}.type: Input should be 'json_schema'")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise _invalid(f"{where}.schema: Field required")
    if reason := schema_error(schema):
        raise _invalid(f"{where}.schema: " + _INVALID_SCHEMA.format(reason))
    return OutputFormat(OutputKind.JSON_SCHEMA, schema)
