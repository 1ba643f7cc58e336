"""The OpenAI Chat Completions wire: request validation and every body and SSE frame.

Follows the public API reference: a unary ``chat.completion`` object; a
stream of ``chat.completion.chunk`` frames (role delta, one content delta per
token, an empty delta carrying ``finish_reason``, then, only when
``stream_options.include_usage`` is set, a chunk with ``"choices": []`` and
the usage, every other chunk then carrying ``"usage": null``), closed by
``data: [DONE]``. Errors are ``{"error": {message, type, param, code}}``.
Pure: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from server.simulator.content import Answer, Finish
from server.simulator.wire import (
    Call,
    ChatRequest,
    ErrorKind,
    Frame,
    Message,
    UsageReport,
    WireError,
    check_number,
    optional_bool,
    optional_int,
    sse_event,
    text_of,
)

ROLES = frozenset({"system", "developer", "user", "assistant"})
MAX_STOP_SEQUENCES = 4
_FINISH = {Finish.END: "stop", Finish.STOP_SEQUENCE: "stop", Finish.LENGTH: "length"}

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
        for i, raw in enumerate(raw_messages):
            if not isinstance(raw, dict) or raw.get("role") not in ROLES:
                raise WireError(
                    ErrorKind.INVALID_REQUEST,
                    f"messages[{i}]: expected an object with role one of {sorted(ROLES)}",
                )
            content = text_of(raw.get("content"), f"messages[{i}].content")
            messages.append(Message(str(raw["role"]), content))
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
        return ChatRequest(
            model=model,
            messages=tuple(messages),
            max_tokens=max_tokens,
            stop=_stop(body.get("stop")),
            stream=stream,
            include_usage=options is not None and optional_bool(options, "include_usage"),
        )

    def default_message(self, kind: ErrorKind, *, model: str, input_tokens: int = 0) -> str:
        """The message OpenAI sends with ``kind``."""
        return _MESSAGES[kind].format(model=model, input_tokens=input_tokens)

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        """``{"error": {...}}``."""
        return orjson.dumps(_error(kind, message))

    def unary_body(self, call: Call, answer: Answer, *, usage: bool) -> tuple[bytes, UsageReport]:
        """A ``chat.completion`` object."""
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


def _error(kind: ErrorKind, message: str) -> dict[str, object]:
    error_type, code = _ERRORS[kind]
    param = "messages" if kind is ErrorKind.CONTEXT_LENGTH else None
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _choice(delta: dict[str, str], finish_reason: str | None) -> dict[str, object]:
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
