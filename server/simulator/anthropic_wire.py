"""The Anthropic Messages wire: request validation and every body and SSE event.

Follows the public API reference: a unary ``message`` object; a stream of
named events ``message_start`` (usage with the input tokens and
``output_tokens: 1``), ``content_block_start``, ``ping``, one
``content_block_delta`` per token, ``content_block_stop``, ``message_delta``
(stop reason and the cumulative ``output_tokens``) and ``message_stop``.
Errors are ``{"type": "error", "error": {type, message}}``, in a body or, once
a stream has started, as an ``error`` event. Pure: bytes in, bytes out.
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

ROLES = frozenset({"user", "assistant"})
_STOP_REASON = {
    Finish.END: "end_turn",
    Finish.STOP_SEQUENCE: "stop_sequence",
    Finish.LENGTH: "max_tokens",
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
        for i, raw in enumerate(raw_messages):
            if not isinstance(raw, dict) or raw.get("role") not in ROLES:
                raise WireError(
                    ErrorKind.INVALID_REQUEST,
                    f"messages.{i}: expected an object with role 'user' or 'assistant'",
                )
            content = text_of(raw.get("content"), f"messages.{i}.content")
            messages.append(Message(str(raw["role"]), content))
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
        return ChatRequest(
            model=model,
            messages=tuple(messages),
            system=None if system is None else text_of(system, "system"),
            max_tokens=max_tokens,
            stop=tuple(str(item) for item in stop or ()),
            stream=optional_bool(body, "stream"),
            include_usage=True,
        )

    def default_message(self, kind: ErrorKind, *, model: str, input_tokens: int = 0) -> str:
        """The message Anthropic sends with ``kind``."""
        return _ERRORS[kind][1].format(model=model, input_tokens=input_tokens)

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        """``{"type": "error", "error": {...}}``."""
        return orjson.dumps(_error(kind, message))

    def unary_body(self, call: Call, answer: Answer, *, usage: bool) -> tuple[bytes, UsageReport]:
        """A ``message`` object."""
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

    def stream_error(self, kind: ErrorKind, message: str) -> Frame:
        """An ``error`` event."""
        return Frame(sse_event(orjson.dumps(_error(kind, message)), "error"))

    def keepalive(self) -> Frame:
        """A ``ping`` event."""
        return Frame(_PING)

    def empty_choices(self, call: Call, request: ChatRequest) -> Frame | None:
        """Messages has no choices array, so no such frame exists."""
        return None


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
