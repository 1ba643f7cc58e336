"""The vocabulary both wire formats share: requests, usage reports, frames, errors.

The simulator speaks two public wires (OpenAI Chat Completions and Anthropic
Messages). Each wire module parses its JSON into a :class:`ChatRequest` and
encodes answers into bytes; everything between (content, latency, faults,
stats) works on these wire-neutral types, so a behaviour is written once and
both wires get it. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from server.simulator.content import Answer


class ErrorKind(enum.StrEnum):
    """A failure the simulator can answer with; each wire spells it its own way."""

    INVALID_REQUEST = "invalid_request"
    CONTEXT_LENGTH = "context_length"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    UNPROCESSABLE = "unprocessable"
    RATE_LIMIT = "rate_limit"
    SPEND_LIMIT = "spend_limit"
    SERVER_ERROR = "server_error"
    BAD_GATEWAY = "bad_gateway"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"

    @property
    def status(self) -> int:
        """The HTTP status this failure is answered with."""
        return _STATUS[self]


_STATUS: Mapping[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.CONTEXT_LENGTH: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.PERMISSION: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.REQUEST_TIMEOUT: 408,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNPROCESSABLE: 422,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.SPEND_LIMIT: 429,
    ErrorKind.SERVER_ERROR: 500,
    ErrorKind.BAD_GATEWAY: 502,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.OVERLOADED: 529,
}


class WireError(Exception):
    """A request the simulator refuses; carries what the wire needs to say so."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.headers = headers  # e.g. retry-after on a concurrency 429
        self.param = param  # the request field at fault, as OpenAI's ``error.param`` names it


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn, its content already flattened to text."""

    role: str
    content: str


class ToolChoiceKind(enum.Enum):
    """What the client lets the model do with the tools it offers."""

    AUTO = "auto"  # call tools or answer text, as the prompt asks
    NONE = "none"  # never call a tool
    REQUIRED = "required"  # call at least one tool (Anthropic's ``any``)
    NAMED = "named"  # call this one tool


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``tool_choice``, wire-neutral; ``name`` is set for :attr:`ToolChoiceKind.NAMED` only."""

    kind: ToolChoiceKind = ToolChoiceKind.AUTO
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    """One offered tool: its name and the JSON Schema its arguments must fit."""

    name: str
    parameters: Mapping[str, object] | None = None  # None: the tool takes no arguments


class OutputKind(enum.Enum):
    """The answer format a client asks for."""

    JSON_OBJECT = "json_object"  # any JSON object
    JSON_SCHEMA = "json_schema"  # JSON that fits ``OutputFormat.schema``


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """Structured output: OpenAI's ``response_format``, Anthropic's ``output_config.format``."""

    kind: OutputKind
    schema: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class SignedBlock:
    """A thinking block a client sent back, to check against what the simulator signed.

    Anthropic refuses a turn whose thinking was altered; the simulator checks
    the same way, with its own key (see :func:`server.simulator.content.sign`).
    """

    path: str  # where the block is, for the error: ``messages.1.content.0``
    text: str | None  # the thinking text; None for a redacted_thinking block
    seal: str  # the signature, or the redacted block's data


@dataclass(frozen=True, slots=True)
class Features:
    """Everything of a request beyond plain text messages: tools, formats, reasoning, images.

    A request without any of these has ``features=None``, so the text-only
    path never looks at them.
    """

    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    output: OutputFormat | None = None
    reasoning_effort: str | None = None  # OpenAI ``reasoning_effort``
    thinking_budget: int | None = None  # Anthropic ``thinking.budget_tokens``, when enabled
    images: int = 0  # image parts, each counted as IMAGE_TOKENS of input
    extra_tokens: int = 0  # input tokens of tool definitions, calls, results and thinking
    digest: bytes = b""  # of everything above that makes two requests differ
    tool_results: tuple[str, ...] = ()  # contents of the results that end the conversation
    last_text: str = ""  # the last message's own text, where answer directives are read
    prefix_tokens: int = 0  # input tokens before the last message (what a cache may hold)
    breakpoint: tuple[int, bytes] | None = None  # Anthropic cache_control: tokens, prefix digest
    signed: tuple[SignedBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated completion request, whichever wire it came in on."""

    model: str
    messages: tuple[Message, ...]
    system: str | None = None  # Anthropic's top-level system; OpenAI keeps it in messages
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False  # OpenAI stream_options.include_usage; Anthropic always reports
    features: Features | None = None  # tools, formats, reasoning, images; None for plain text

    def contents(self) -> tuple[str, ...]:
        """Every text the model reads, system first, in order."""
        texts = tuple(message.content for message in self.messages)
        return texts if self.system is None else (self.system, *texts)


@dataclass(frozen=True, slots=True)
class Call:
    """What every frame of one response repeats: its id, timestamp, model and input size."""

    response_id: str
    created: int
    model: str
    input_tokens: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage a frame tells the client; ``None`` fields are not mentioned by that frame.

    Anthropic's counts are cumulative (message_delta's output_tokens supersedes
    message_start's), and OpenAI reports once, so "the latest value of each
    field wins" describes both wires.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None  # prompt-cache reads (OpenAI cached_tokens)
    cache_write_tokens: int | None = None  # prompt-cache writes (Anthropic cache_creation)


@dataclass(frozen=True, slots=True)
class Frame:
    """Bytes ready for the socket, plus the usage they report (for the stats)."""

    data: bytes
    usage: UsageReport | None = None
    tokens: int = 0  # answer tokens carried, so stats count what was really sent


def text_of(content: object, field: str) -> str:
    """Flatten a content that is a string or an array of text parts (both wires allow both)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part.get("text")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        if len(texts) == len(content) and all(isinstance(text, str) for text in texts):
            return "".join(str(text) for text in texts)
    raise WireError(
        ErrorKind.INVALID_REQUEST, f"{field}: expected a string or an array of text parts"
    )


def optional_int(body: Mapping[str, object], field: str, minimum: int) -> int | None:
    """An optional integer field, at least ``minimum``; JSON booleans are not integers."""
    value = body.get(field)
    if value is None:
        return None
    if type(value) is not int or value < minimum:
        raise WireError(ErrorKind.INVALID_REQUEST, f"{field}: expected an integer >= {minimum}")
    return value


def check_number(body: Mapping[str, object], field: str, highest: float) -> None:
    """Reject an optional sampling parameter outside 0..``highest`` (its value is unused)."""
    value = body.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= highest:
        raise WireError(
            ErrorKind.INVALID_REQUEST, f"{field}: expected a number from 0 to {highest}"
        )


def optional_bool(body: Mapping[str, object], field: str) -> bool:
    """An optional boolean field, false when absent or null."""
    value = body.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise WireError(ErrorKind.INVALID_REQUEST, f"{field}: expected a boolean")
    return value


def sse_event(data: bytes, event: str | None = None) -> bytes:
    """One server-sent event, optionally named."""
    head = b"" if event is None else b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


class Wire(Protocol):
    """One wire format: parsing, auth header, and every body or SSE frame it sends."""

    @property
    def name(self) -> str:
        """Short name used in messages: ``openai`` or ``anthropic``."""
        ...

    @property
    def id_prefix(self) -> str:
        """How this wire's response ids start: ``chatcmpl-`` or ``msg_``."""
        ...

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        """The credential the client presented, if any."""
        ...

    def parse(self, body: object) -> ChatRequest:
        """Validate a decoded JSON body; raise :class:`WireError` when invalid."""
        ...

    def default_message(self, kind: ErrorKind, *, model: str, input_tokens: int = 0) -> str:
        """The message this wire's real service sends with ``kind``."""
        ...

    def error_body(self, kind: ErrorKind, message: str, param: str | None = None) -> bytes:
        """A complete JSON error body; ``param`` names the field at fault, where the wire says."""
        ...

    def unary_body(self, call: Call, answer: Answer, *, usage: bool) -> tuple[bytes, UsageReport]:
        """The JSON answer and the usage it reports (empty when ``usage`` is false)."""
        ...

    def stream_open(self, call: Call, request: ChatRequest) -> Sequence[Frame]:
        """Frames sent before the first answer token."""
        ...

    def stream_token(self, call: Call, request: ChatRequest, token: str) -> Frame:
        """One answer token."""
        ...

    def stream_close(
        self, call: Call, request: ChatRequest, answer: Answer, *, usage: bool, terminator: bool
    ) -> Sequence[Frame]:
        """Frames after the last token: finish reason, usage if ``usage``, end marker."""
        ...

    def stream_answer(
        self, call: Call, request: ChatRequest, answer: Answer, *, usage: bool, terminator: bool
    ) -> tuple[Sequence[Frame], Sequence[Frame]]:
        """Every frame of an answer with :attr:`Answer.extras` (tools, thinking, JSON...).

        Returns the body (opening frames, then steps: frames with ``tokens``
        set, each paced like one token) and the closing frames, which the
        exchange sends after the last step unless a fault cuts the stream.
        """
        ...

    def stream_error(self, kind: ErrorKind, message: str) -> Frame:
        """An error reported inside an HTTP 200 event stream."""
        ...

    def keepalive(self) -> Frame:
        """A frame a client must skip: Anthropic's ping event, an SSE comment on OpenAI."""
        ...

    def empty_choices(self, call: Call, request: ChatRequest) -> Frame | None:
        """A chunk with no choices and no usage, or None where the wire has none."""
        ...
