"""The OpenAI Chat Completions wire: request validation and every body and SSE frame.

Follows the public API reference: a unary ``chat.completion`` object; a
stream of ``chat.completion.chunk`` frames (role delta, one content delta per
token, an empty delta carrying ``finish_reason``, then, only when
``stream_options.include_usage`` is set, a chunk with ``"choices": []`` and
the usage, every other chunk then carrying ``"usage": null``), closed by
``data: [DONE]``. Errors are ``{"error": {message, type, param, code}}``.

Beyond text it takes ``tools``, ``tool_choice``, ``parallel_tool_calls``,
``response_format`` (``json_object``, ``json_schema`` with ``strict``),
``reasoning_effort``, image parts and the tool round trip (assistant
``tool_calls``, ``tool`` messages), validated as OpenAI does, with its
messages and ``param``; answers carry ``tool_calls`` (``finish_reason:
tool_calls``) and usage details (``cached_tokens``, ``reasoning_tokens``).
Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import orjson

from server.simulator.content import IMAGE_TOKENS, REASONING_TOKENS, Answer, Extras, Finish
from server.simulator.instances import schema_error, strict_violation
from server.simulator.parts import IMAGE_MEDIA_TYPES, TOOL_NAME, digest, json_tokens, json_type
from server.simulator.wire import (
    Call,
    ChatRequest,
    ErrorKind,
    Features,
    Frame,
    Message,
    OutputFormat,
    OutputKind,
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

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP_SEQUENCES = 4
# Body fields that make a request more than plain text (see server.simulator.features).
FEATURE_FIELDS = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
    }
)
_FINISH = {
    Finish.END: "stop",
    Finish.STOP_SEQUENCE: "stop",
    Finish.LENGTH: "length",
    Finish.TOOL_CALLS: "tool_calls",
}
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,", re.ASCII)
_NAME_PATTERN = "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."

# kind -> (type, code) as OpenAI reports them.
_ERRORS: Mapping[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorKind.CONTEXT_LENGTH: ("invalid_request_error", "context_length_exceeded"),
    ErrorKind.AUTHENTICATION: ("invalid_request_error", "invalid_api_key"),
    ErrorKind.PERMISSION: ("invalid_request_error", "permission_denied"),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "model_not_found"),
    ErrorKind.METHOD_NOT_ALLOWED: ("invalid_request_error", "method_not_allowed"),
    ErrorKind.REQUEST_TIMEOUT: ("timeout", "request_timeout"),
    ErrorKind.CONFLICT: ("invalid_request_error", "conflict"),
    ErrorKind.TOO_LARGE: ("invalid_request_error", "request_too_large"),
    ErrorKind.UNPROCESSABLE: ("invalid_request_error", "unprocessable_entity"),
    ErrorKind.RATE_LIMIT: ("requests", "rate_limit_exceeded"),
    ErrorKind.SPEND_LIMIT: ("insufficient_quota", "insufficient_quota"),
    ErrorKind.SERVER_ERROR: ("server_error", None),
    ErrorKind.BAD_GATEWAY: ("server_error", "bad_gateway"),
    ErrorKind.UNAVAILABLE: ("server_error", "service_unavailable"),
    ErrorKind.OVERLOADED: ("server_error", "overloaded"),
}
_MESSAGES: Mapping[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "Invalid request (simulated fault).",
    ErrorKind.AUTHENTICATION: "Incorrect API key provided.",
    ErrorKind.PERMISSION: "You are not allowed to use model {model} (simulated fault).",
    ErrorKind.NOT_FOUND: "The model `{model}` does not exist or you do not have access to it.",
    ErrorKind.METHOD_NOT_ALLOWED: "Method not allowed.",
    ErrorKind.REQUEST_TIMEOUT: "Request timed out (simulated fault).",
    ErrorKind.CONFLICT: "Conflicting request (simulated fault).",
    ErrorKind.TOO_LARGE: "Request too large (simulated fault).",
    ErrorKind.UNPROCESSABLE: "Unprocessable request (simulated fault).",
    ErrorKind.CONTEXT_LENGTH: (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in {input_tokens} tokens (simulated fault). Please reduce the length "
        "of the messages."
    ),
    ErrorKind.RATE_LIMIT: "Rate limit reached for {model} (simulated).",
    ErrorKind.SPEND_LIMIT: (
        "You exceeded your current quota, please check your plan and billing details "
        "(simulated spend limit)."
    ),
    ErrorKind.SERVER_ERROR: "The server had an error while processing your request (simulated).",
    ErrorKind.BAD_GATEWAY: "Bad gateway (simulated fault).",
    ErrorKind.UNAVAILABLE: "The service is temporarily unavailable (simulated fault).",
    ErrorKind.OVERLOADED: "The server is overloaded (simulated fault).",
}


class OpenAIWire:
    """Chat Completions, as documented by OpenAI."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """Short name used in messages."""
        return "openai"

    @property
    def id_prefix(self) -> str:
        """Response ids look like ``chatcmpl-...``."""
        return "chatcmpl-"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        """The bearer token of ``Authorization``."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def parse(self, body: object) -> ChatRequest:
        """Validate a Chat Completions request body."""
        if not isinstance(body, dict):
            raise WireError(ErrorKind.INVALID_REQUEST, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError(ErrorKind.INVALID_REQUEST, "you must provide a model parameter")
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
                    f"messages[{i}]: expected an object with role one of {sorted(ROLES)}",
                )
            content = raw.get("content")
            if turns is None and role != "tool" and "tool_calls" not in raw and _plain(content):
                messages.append(Message(role, text_of(content, f"messages[{i}].content")))
                continue
            if turns is None:
                turns = _Turns(i)
            messages.append(turns.message(i, raw, role, content))
        check_number(body, "temperature", 2)
        check_number(body, "top_p", 1)
        if body.get("n") not in (None, 1):
            raise WireError(ErrorKind.INVALID_REQUEST, "n: the simulator answers with n=1 only")
        max_tokens = optional_int(body, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = optional_int(body, "max_tokens", 1)
        stream = optional_bool(body, "stream")
        options = body.get("stream_options")
        if options is not None and not stream:
            raise WireError(
                ErrorKind.INVALID_REQUEST,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
        if options is not None and not isinstance(options, dict):
            raise WireError(ErrorKind.INVALID_REQUEST, "stream_options: expected an object")
        features = None
        if turns is not None or (
            not FEATURE_FIELDS.isdisjoint(body)  # a C-speed check first: plain text skips the rest
            and any(body.get(field) is not None for field in FEATURE_FIELDS)
        ):
            features = _features(body, raw_messages, messages, turns or _Turns(len(messages)))
        return ChatRequest(
            model=model,
            messages=tuple(messages),
            max_tokens=max_tokens,
            stop=_stop(body.get("stop")),
            stream=stream,
            include_usage=options is not None and optional_bool(options, "include_usage"),
            features=features,
        )

    def default_message(self, kind: ErrorKind, *, model: str, input_tokens: int = 0) -> str:
        """The message OpenAI sends with ``kind``."""
        return _MESSAGES[kind].format(model=model, input_tokens=input_tokens)

    def error_body(self, kind: ErrorKind, message: str, param: str | None = None) -> bytes:
        """``{"error": {...}}``."""
        return orjson.dumps(_error(kind, message, param))

    def unary_body(self, call: Call, answer: Answer, *, usage: bool) -> tuple[bytes, UsageReport]:
        """A ``chat.completion`` object."""
        if answer.extras is not None:
            return _feature_body(call, answer, answer.extras, usage=usage)
        body: dict[str, object] = {
            "id": call.response_id,
            "object": "chat.completion",
            "created": call.created,
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "finish_reason": _FINISH[answer.finish],
                }
            ],
        }
        if not usage:
            return orjson.dumps(body), UsageReport()
        body["usage"] = _usage(call.input_tokens, len(answer.tokens))
        return orjson.dumps(body), UsageReport(call.input_tokens, len(answer.tokens))

    def stream_open(self, call: Call, request: ChatRequest) -> Sequence[Frame]:
        """The role chunk."""
        delta = {"role": "assistant", "content": ""}
        return (Frame(_chunk(call, request, [_choice(delta, None)])),)

    def stream_token(self, call: Call, request: ChatRequest, token: str) -> Frame:
        """One content delta."""
        return Frame(_chunk(call, request, [_choice({"content": token}, None)]), tokens=1)

    def stream_close(
        self, call: Call, request: ChatRequest, answer: Answer, *, usage: bool, terminator: bool
    ) -> Sequence[Frame]:
        """The finish chunk, the usage chunk when asked for, and ``[DONE]``."""
        frames = [Frame(_chunk(call, request, [_choice({}, _FINISH[answer.finish])]))]
        if usage and request.include_usage:
            output = len(answer.tokens)
            body = _chunk_body(call, [])
            body["usage"] = _usage(call.input_tokens, output)
            frames.append(
                Frame(sse_event(orjson.dumps(body)), UsageReport(call.input_tokens, output))
            )
        if terminator:
            frames.append(Frame(b"data: [DONE]\n\n"))
        return frames

    def stream_answer(
        self, call: Call, request: ChatRequest, answer: Answer, *, usage: bool, terminator: bool
    ) -> tuple[Sequence[Frame], Sequence[Frame]]:
        """Role chunk, then content deltas or tool-call deltas; finish, usage, ``[DONE]``.

        Tool calls stream as OpenAI's do: a first delta per call with its
        ``index``, ``id``, ``type`` and ``name`` (``arguments: ""``), then
        ``{index, function: {arguments: fragment}}`` deltas. Several calls
        are interleaved by index (first deltas, then fragments round-robin),
        so a client must key them by index; an empty-arguments call sends one
        more ``arguments: ""`` delta and nothing else.
        """
        extras = answer.extras or Extras()
        calls = extras.tool_calls
        body = [
            Frame(
                _chunk(
                    call,
                    request,
                    [_choice({"role": "assistant", "content": None if calls else ""}, None)],
                )
            )
        ]
        if calls:
            lanes: list[list[Frame]] = []
            for index, tool_call in enumerate(calls):
                head = {
                    "index": index,
                    "id": "call_" + tool_call.ref,
                    "type": "function",
                    "function": {"name": tool_call.name, "arguments": ""},
                }
                lane = [
                    Frame(_chunk(call, request, [_choice({"tool_calls": [head]}, None)]), tokens=1)
                ]
                pieces = tool_call.fragments or ("",)
                for piece in pieces:
                    delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    lane.append(
                        Frame(
                            _chunk(call, request, [_choice(delta, None)]), tokens=1 if piece else 0
                        )
                    )
                lanes.append(lane)
            for step in range(max(len(lane) for lane in lanes)):
                body.extend(lane[step] for lane in lanes if step < len(lane))
        else:
            body.extend(self.stream_token(call, request, token) for token in answer.tokens)
        close = [Frame(_chunk(call, request, [_choice({}, _FINISH[answer.finish])]))]
        if usage and request.include_usage:
            chunk = _chunk_body(call, [])
            chunk["usage"] = _feature_usage(call, answer, extras)
            close.append(Frame(sse_event(orjson.dumps(chunk)), _report(call, answer, extras)))
        if terminator:
            close.append(Frame(b"data: [DONE]\n\n"))
        return body, close

    def stream_error(self, kind: ErrorKind, message: str) -> Frame:
        """``data: {"error": {...}}``, as OpenAI sends when a stream fails midway."""
        return Frame(sse_event(orjson.dumps(_error(kind, message))))

    def keepalive(self) -> Frame:
        """An SSE comment line, which clients must ignore."""
        return Frame(b": ping\n\n")

    def empty_choices(self, call: Call, request: ChatRequest) -> Frame | None:
        """A chunk with ``"choices": []`` and no usage (as Azure's filter results are)."""
        return Frame(_chunk(call, request, []))


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if (
        isinstance(value, list)
        and len(value) <= MAX_STOP_SEQUENCES
        and all(isinstance(item, str) for item in value)
    ):
        return tuple(str(item) for item in value)
    raise WireError(
        ErrorKind.INVALID_REQUEST,
        f"stop: expected a string or up to {MAX_STOP_SEQUENCES} strings",
    )


def _error(kind: ErrorKind, message: str, param: str | None = None) -> dict[str, object]:
    error_type, code = _ERRORS[kind]
    if kind is ErrorKind.CONTEXT_LENGTH:
        param = "messages"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _feature_usage(call: Call, answer: Answer, extras: Extras) -> dict[str, object]:
    """Usage with OpenAI's details: cached prompt tokens, reasoning tokens among the output."""
    output = answer.output_tokens
    return {
        **_usage(call.input_tokens, output),
        "prompt_tokens_details": {"cached_tokens": extras.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": extras.hidden_reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _report(call: Call, answer: Answer, extras: Extras) -> UsageReport:
    return UsageReport(call.input_tokens, answer.output_tokens, cache_read_tokens=extras.cache_read)


def _feature_body(
    call: Call, answer: Answer, extras: Extras, *, usage: bool
) -> tuple[bytes, UsageReport]:
    """A ``chat.completion`` answering a request with features: tool calls, JSON, reasoning."""
    message: dict[str, object] = {
        "role": "assistant",
        "content": (answer.text or None) if extras.tool_calls else answer.text,
        "refusal": None,
    }
    if extras.tool_calls:
        message["tool_calls"] = [
            {
                "id": "call_" + tool_call.ref,
                "type": "function",
                "function": {"name": tool_call.name, "arguments": tool_call.arguments},
            }
            for tool_call in extras.tool_calls
        ]
    body: dict[str, object] = {
        "id": call.response_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [{"index": 0, "message": message, "finish_reason": _FINISH[answer.finish]}],
    }
    if not usage:
        return orjson.dumps(body), UsageReport()
    body["usage"] = _feature_usage(call, answer, extras)
    return orjson.dumps(body), _report(call, answer, extras)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _choice(delta: Mapping[str, object], finish_reason: str | None) -> dict[str, object]:
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}


def _chunk_body(call: Call, choices: list[dict[str, object]]) -> dict[str, object]:
    return {
        "id": call.response_id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "choices": choices,
    }


def _chunk(call: Call, request: ChatRequest, choices: list[dict[str, object]]) -> bytes:
    body = _chunk_body(call, choices)
    if request.include_usage:
        body["usage"] = None  # documented: every chunk but the last carries "usage": null
    return sse_event(orjson.dumps(body))


def _invalid(message: str, param: str | None = None) -> WireError:
    return WireError(ErrorKind.INVALID_REQUEST, message, param=param)


def _plain(content: object) -> bool:
    """Whether ``content`` is text only: a string, or an array of text parts."""
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" for part in content
    )


class _Turns:
    """A conversation with tool calls, tool results or images, as its messages are parsed.

    OpenAI's rules: a ``tool`` message answers a ``tool_calls`` id of the
    assistant message before it, and every such id is answered before any
    other message comes.
    """

    __slots__ = ("calls_at", "extra", "images", "pending", "results")

    def __init__(self, before: int) -> None:
        self.extra = [0] * before  # input tokens beyond text, per message
        self.images = 0
        self.pending: list[str] = []  # tool_call ids not answered yet
        self.calls_at = 0  # index of the assistant message that made them
        self.results: list[str] = []  # the tool results since that message

    def message(self, i: int, raw: dict[str, object], role: str, content: object) -> Message:
        where = f"messages[{i}]"
        if role == "tool":
            return self._result(i, raw, content)
        self.close(i)
        self.results = []
        if role == "assistant" and raw.get("tool_calls") is not None:
            return self._calls(i, raw, content)
        text, images = _content_parts(content, where, images=role == "user")
        self.images += images
        self.extra.append(images * IMAGE_TOKENS)
        return Message(role, text)

    def close(self, i: int) -> None:
        """Refuse message ``i`` (or the end) while tool calls wait for their results."""
        if self.pending:
            raise _invalid(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(self.pending)}",
                f"messages.[{self.calls_at}].role",
            )

    def _result(self, i: int, raw: dict[str, object], content: object) -> Message:
        where = f"messages[{i}]"
        if not self.pending and not self.results:
            raise _invalid(
                "Invalid parameter: messages with role 'tool' must be a response to a "
                "preceeding message with 'tool_calls'.",
                f"messages.[{i}].role",
            )
        call_id = raw.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _invalid(
                f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id"
            )
        if call_id not in self.pending:
            raise _invalid(
                f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
                "previous message.",
                f"{where}.tool_call_id",
            )
        self.pending.remove(call_id)
        text = text_of(content, f"{where}.content")
        self.results.append(text)
        self.extra.append(text_tokens(text))
        return Message("tool", "")

    def _calls(self, i: int, raw: dict[str, object], content: object) -> Message:
        where = f"messages[{i}].tool_calls"
        calls = raw["tool_calls"]
        if not isinstance(calls, list) or not calls:
            raise _invalid(
                f"Invalid type for '{where}': expected a non-empty array of tool calls.", where
            )
        tokens = 0
        for j, call in enumerate(calls):
            at = f"{where}[{j}]"
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(call, dict) or not isinstance(function, dict):
                raise _invalid(f"Missing required parameter: '{at}.function'.", f"{at}.function")
            call_id, name, arguments = (
                call.get("id"),
                function.get("name"),
                function.get("arguments"),
            )
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"Missing required parameter: '{at}.id'.", f"{at}.id")
            if call.get("type") != "function":
                raise _invalid(f"Invalid value for '{at}.type': expected 'function'.", f"{at}.type")
            if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
                raise _invalid(
                    f"Invalid '{at}.function.name': string does not match pattern. "
                    + _NAME_PATTERN,
                    f"{at}.function.name",
                )
            if not isinstance(arguments, str):
                raise _invalid(
                    f"Invalid type for '{at}.function.arguments': expected a string, but got "
                    f"{json_type(arguments)} instead.",
                    f"{at}.function.arguments",
                )
            if call_id in self.pending:
                raise _invalid(
                    f"Invalid '{at}.id': duplicate tool call id '{call_id}'.", f"{at}.id"
                )
            self.pending.append(call_id)
            tokens += text_tokens(name) + text_tokens(arguments)
        self.calls_at = i
        text = "" if content is None else _content_parts(content, f"messages[{i}]", images=False)[0]
        self.extra.append(tokens)
        return Message("assistant", text)


def _content_parts(content: object, where: str, *, images: bool) -> tuple[str, int]:
    """The text of a content (string or parts) and how many images it holds."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise _invalid(f"{where}.content: expected a string or an array of content parts")
    texts: list[str] = []
    count = 0
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and images and isinstance(part, dict):
            _check_image_url(part.get("image_url"), at)
            count += 1
        else:
            allowed = "'text' and 'image_url'" if images else "'text'"
            raise _invalid(
                f"Invalid value: '{kind}'. Supported values are: {allowed}.", f"{at}.type"
            )
    return "".join(texts), count


def _check_image_url(image: object, at: str) -> None:
    url = image.get("url") if isinstance(image, dict) else None
    where = f"{at}.image_url.url"
    if not isinstance(url, str):
        raise _invalid(f"Missing required parameter: '{where}'.", where)
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        mime = match.group(1) if match else url[5:].partition(";")[0]
        if match is None or mime not in IMAGE_MEDIA_TYPES:
            raise _invalid(
                f"Invalid '{where}'. Expected a base64-encoded data URL with an image MIME type "
                "(e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), but got unsupported MIME "
                f"type '{mime}'.",
                where,
            )
    elif not url.startswith(("https://", "http://")):
        raise _invalid(
            f"Invalid '{where}'. Expected a valid URL, but got a value with an invalid format.",
            where,
        )


def _features(
    body: dict[str, object],
    raw_messages: list[object],
    messages: list[Message],
    turns: _Turns,
) -> Features:
    """The request's tools, tool choice, response format and reasoning, validated."""
    turns.close(len(messages))
    raw_tools = body.get("tools")
    tools, tool_tokens = _tools(raw_tools)
    choice = _tool_choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _invalid(
                "Invalid type for 'parallel_tool_calls': expected a boolean, but got "
                f"{json_type(parallel)} instead.",
                "parallel_tool_calls",
            )
        if not tools:
            raise _invalid(
                "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only "
                "allowed when 'tools' are specified.",
                "parallel_tool_calls",
            )
    effort = body.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in REASONING_TOKENS):
        raise _invalid(
            f"Invalid value: '{effort}'. Supported values are: 'none', 'minimal', 'low', "
            "'medium', 'high', and 'xhigh'.",
            "reasoning_effort",
        )
    last = messages[-1]
    texts = [m.content for m in messages]
    return Features(
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel is not False,
        output=_response_format(body.get("response_format"), texts),
        reasoning_effort=effort if isinstance(effort, str) else None,
        images=turns.images,
        extra_tokens=tool_tokens + sum(turns.extra),
        digest=digest(
            raw_messages,
            raw_tools,
            body.get("tool_choice"),
            parallel,
            body.get("response_format"),
            effort,
        ),
        tool_results=tuple(turns.results) if last.role == "tool" else (),
        last_text=last.content,
        prefix_tokens=tool_tokens + conversation_tokens(texts[:-1]) + sum(turns.extra[:-1]),
    )


def _tools(value: object) -> tuple[tuple[Tool, ...], int]:
    """The offered functions, and the input tokens their definitions cost."""
    if value is None:
        return (), 0
    if not isinstance(value, list):
        raise _invalid(
            f"Invalid type for 'tools': expected an array of objects, but got "
            f"{json_type(value)} instead.",
            "tools",
        )
    if not value:
        raise _invalid(
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            "tools",
        )
    tools: list[Tool] = []
    for i, raw in enumerate(value):
        at = f"tools[{i}]"
        if not isinstance(raw, dict) or raw.get("type") != "function":
            kind = raw.get("type") if isinstance(raw, dict) else None
            raise _invalid(
                f"Invalid value: '{kind}'. Supported values are: 'function'.", f"{at}.type"
            )
        function = raw.get("function")
        if not isinstance(function, dict):
            raise _invalid(f"Missing required parameter: '{at}.function'.", f"{at}.function")
        name = function.get("name")
        if not isinstance(name, str):
            raise _invalid(
                f"Missing required parameter: '{at}.function.name'.", f"{at}.function.name"
            )
        if len(name) > 64:
            raise _invalid(
                f"Invalid '{at}.function.name': string too long. Expected a string with maximum "
                f"length 64, but got a string with length {len(name)} instead.",
                f"{at}.function.name",
            )
        if not TOOL_NAME.fullmatch(name):
            raise _invalid(
                f"Invalid '{at}.function.name': string does not match pattern. " + _NAME_PATTERN,
                f"{at}.function.name",
            )
        if any(tool.name == name for tool in tools):
            raise _invalid(f"Invalid 'tools': function name '{name}' is defined twice.", "tools")
        parameters = function.get("parameters")
        if parameters is not None:
            _check_schema(parameters, f"function '{name}'", f"{at}.function.parameters")
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _invalid(
                f"Invalid type for '{at}.function.strict': expected a boolean, but got "
                f"{json_type(strict)} instead.",
                f"{at}.function.strict",
            )
        if strict and parameters is not None and (reason := strict_violation(parameters)):
            raise _invalid(
                f"Invalid schema for function '{name}': {reason}", f"{at}.function.parameters"
            )
        tools.append(Tool(name, parameters))
    return tuple(tools), sum(json_tokens(raw) for raw in value)


def _check_schema(schema: object, owner: str, param: str) -> None:
    """Refuse what OpenAI refuses of a schema: not an object schema, or no JSON Schema at all."""
    if not isinstance(schema, dict):
        raise _invalid(
            f"Invalid type for '{param}': expected an object, but got {json_type(schema)} instead.",
            param,
        )
    if schema.get("type", "object") != "object":
        raise _invalid(
            f"Invalid schema for {owner}: schema must be a JSON Schema of 'type: \"object\"', "
            f"got 'type: \"{schema.get('type')}\"'.",
            param,
        )
    if reason := schema_error(schema):
        raise _invalid(f"Invalid schema for {owner}: {reason}.", param)


def _tool_choice(value: object, tools: tuple[Tool, ...]) -> ToolChoice:
    if value is None:
        return ToolChoice()
    if not tools:
        raise _invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    if isinstance(value, str):
        try:
            kind = {
                "auto": ToolChoiceKind.AUTO,
                "none": ToolChoiceKind.NONE,
                "required": ToolChoiceKind.REQUIRED,
            }[value]
        except KeyError:
            raise _invalid(
                f"Invalid value: '{value}'. Supported values are: 'none', 'auto', and 'required'.",
                "tool_choice",
            ) from None
        return ToolChoice(kind)
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise _invalid(
            "Invalid 'tool_choice': expected 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": "..."}}.',
            "tool_choice",
        )
    if all(tool.name != name for tool in tools):
        raise _invalid(
            f"Invalid 'tool_choice': no function named '{name}' is among 'tools'.",
            "tool_choice.function.name",
        )
    return ToolChoice(ToolChoiceKind.NAMED, name)


def _response_format(value: object, texts: list[str]) -> OutputFormat | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        if not any("json" in text.lower() for text in texts):
            raise _invalid(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                "messages",
            )
        return OutputFormat(OutputKind.JSON_OBJECT)
    if kind != "json_schema" or not isinstance(value, dict):
        raise _invalid(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and "
            "'json_schema'.",
            "response_format.type",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _invalid(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
        )
    name = spec.get("name")
    where = "response_format.json_schema"
    if not isinstance(name, str):
        raise _invalid(f"Missing required parameter: '{where}.name'.", f"{where}.name")
    if not TOOL_NAME.fullmatch(name):
        raise _invalid(
            f"Invalid '{where}.name': string does not match pattern. " + _NAME_PATTERN,
            f"{where}.name",
        )
    schema = spec.get("schema", {})
    owner = f"response_format '{name}'"
    if not isinstance(schema, dict):
        raise _invalid(
            f"Invalid type for '{where}.schema': expected an object, but got "
            f"{json_type(schema)} instead.",
            f"{where}.schema",
        )
    if reason := schema_error(schema):
        raise _invalid(f"Invalid schema for {owner}: {reason}.", f"{where}.schema")
    if spec.get("strict") is True:
        if schema.get("type") != "object":
            raise _invalid(
                f"Invalid schema for {owner}: schema must be a JSON Schema of 'type: "
                f'"object"\', got \'type: "{schema.get("type")}"\'.',
                f"{where}.schema",
            )
        if reason := strict_violation(schema):
            raise _invalid(f"Invalid schema for {owner}: {reason}", f"{where}.schema")
    return OutputFormat(OutputKind.JSON_SCHEMA, schema)
