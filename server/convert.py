"""Protobuf <-> domain, and the validation of what callers send.

Every rule a request must meet is checked here, before any stage runs, and
each refusal names the field and says how to fix it. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, assert_never

import orjson
from google.protobuf import struct_pb2, timestamp_pb2
from google.type import money_pb2
from switchyard.v1 import gateway_pb2 as pb

from server.domain import (
    ADMITTED,
    NANOS_PER_USD,
    Admission,
    Attempt,
    CacheMode,
    Call,
    CircuitState,
    CircuitStatus,
    Completion,
    Complexity,
    FinishReason,
    ImagePart,
    Message,
    ModelSpec,
    Outcome,
    Part,
    Reasoning,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningPart,
    RedactedReasoningPart,
    Request,
    ResponseFormat,
    ResponseKind,
    Role,
    RouteBasis,
    RouteDecision,
    Task,
    TextPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    ToolSpec,
    Usage,
    Validation,
)
from server.errors import InvalidRequestError, RequestTooLargeError
from server.pipeline import Preview, UsageReport
from server.settings import LimitSettings
from server.state.ledger import ModelTotals
from server.state.rows import AttemptRow, CallRow
from server.structured import schema_problem
from server.tokens import text_bytes

MAX_STOP_SEQUENCES = 4
MAX_LABELS = 16
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256

_ROLES = {
    pb.ROLE_SYSTEM: Role.SYSTEM,
    pb.ROLE_USER: Role.USER,
    pb.ROLE_ASSISTANT: Role.ASSISTANT,
    pb.ROLE_TOOL: Role.TOOL,
}
_TASKS: dict[pb.Task.ValueType, Task | None] = {
    pb.TASK_UNSPECIFIED: None,
    pb.TASK_REASONING: Task.REASONING,
    pb.TASK_CREATIVE: Task.CREATIVE,
    pb.TASK_FAST: Task.FAST,
    pb.TASK_BATCH: Task.BATCH,
}
_CACHE_MODES = {
    pb.CACHE_MODE_UNSPECIFIED: CacheMode.DEFAULT,
    pb.CACHE_MODE_DEFAULT: CacheMode.DEFAULT,
    pb.CACHE_MODE_BYPASS: CacheMode.BYPASS,
    pb.CACHE_MODE_REFRESH: CacheMode.REFRESH,
}
_TASK_TO_PB = {task: number for number, task in _TASKS.items() if task is not None}
_COMPLEXITY_TO_PB = {
    Complexity.SIMPLE: pb.COMPLEXITY_SIMPLE,
    Complexity.MEDIUM: pb.COMPLEXITY_MEDIUM,
    Complexity.COMPLEX: pb.COMPLEXITY_COMPLEX,
}
_BASIS_TO_PB = {
    RouteBasis.MODEL: pb.ROUTE_BASIS_MODEL,
    RouteBasis.TASK: pb.ROUTE_BASIS_TASK,
    RouteBasis.COMPLEXITY: pb.ROUTE_BASIS_COMPLEXITY,
}
_FINISH_TO_PB = {
    FinishReason.UNKNOWN: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
}
_OUTCOME_TO_PB = {
    Outcome.SUCCESS: pb.ATTEMPT_OUTCOME_SUCCESS,
    Outcome.RETRYABLE_ERROR: pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR,
    Outcome.FINAL_ERROR: pb.ATTEMPT_OUTCOME_FINAL_ERROR,
    Outcome.CANCELLED: pb.ATTEMPT_OUTCOME_CANCELLED,
    Outcome.INTERRUPTED: pb.ATTEMPT_OUTCOME_INTERRUPTED,
    Outcome.SKIPPED: pb.ATTEMPT_OUTCOME_SKIPPED,
    Outcome.INVALID_OUTPUT: pb.ATTEMPT_OUTCOME_INVALID_OUTPUT,
}


DEFAULT_LIMITS = LimitSettings()
_SHORTEN = "shorten the text (or summarize it), or split the work across calls"
SMALLER_SCHEMAS = "send fewer or smaller tool definitions, or a smaller response schema"


def request_from_proto(spec: pb.QuerySpec, limits: LimitSettings = DEFAULT_LIMITS) -> Request:
    """Validate a QuerySpec and turn it into a Request.

    The per-call bounds of `limits` come first, so an oversized call costs no
    more than the bound's worth of work: the counts of messages and parts
    before any message is read, the bytes of text as the messages are read.
    """
    texts = _Texts(spec.prompt, spec.system)  # each a copy out of the protobuf: one
    parts, text_left = _check_bounds(spec, texts, limits)
    messages: list[Message] = []
    if parts:
        _convert_messages(spec.messages, parts, 0, text_left, limits=limits, into=messages)
    return _request(spec, texts, messages, any(parts))


def request_steps(
    spec: pb.QuerySpec, slice_messages: int, limits: LimitSettings = DEFAULT_LIMITS
) -> Generator[None, None, Request]:
    """`request_from_proto` a slice of `slice_messages` messages at a time: the generator
    yields before the bounds' pass over all messages, then before each slice (between two
    slices: where a caller can let other work run) and returns the same Request, or raises
    the same error, as `request_from_proto` does."""
    yield  # the bounds' pass in a turn of its own, not in the one that decoded the request
    texts = _Texts(spec.prompt, spec.system)
    parts, text_left = _check_bounds(spec, texts, limits)
    messages: list[Message] = []
    protos = spec.messages
    for start in range(0, len(protos), slice_messages):
        yield
        stop = start + slice_messages
        text_left = _convert_messages(
            protos[start:stop], parts[start:stop], start, text_left, limits=limits, into=messages
        )
    return _request(spec, texts, messages, any(parts))


class _Texts(NamedTuple):
    """query.prompt and query.system, read out of the protobuf once (each read is a copy)."""

    prompt: str
    system: str


def _check_bounds(
    spec: pb.QuerySpec, texts: _Texts, limits: LimitSettings
) -> tuple[list[int], int]:
    """The bounds checked before any message is read (see `_check_counts`): each message's
    number of parts, and the bytes of text left to the messages once the prompt and the
    system text have theirs."""
    parts = _check_counts(spec, texts, limits)
    # query.prompt and query.system are a message each: counted first, as one
    text_left = limits.max_text_bytes - text_bytes(texts.prompt) - text_bytes(texts.system)
    if text_left < 0:
        raise RequestTooLargeError(
            f"query.prompt and query.system have {limits.max_text_bytes - text_left} bytes of"
            " text (UTF-8)",
            f"{limits.max_text_bytes} bytes of text",
            "SWITCHYARD_MAX_TEXT_BYTES",
            _SHORTEN,
        )
    # Tool definitions and the response schema are turned into JSON and checked against
    # their meta-schema, some microseconds a property: bounded in bytes, before any is read.
    tools = spec.tools
    if len(tools) > MAX_TOOLS:
        raise InvalidRequestError(
            f"query.tools has {len(tools)} tools; at most {MAX_TOOLS} are allowed"
        )
    if not tools and not spec.HasField("response_format"):
        return parts, text_left  # most calls: 0.3 us here, against 2.7 for the sum below
    definitions = sum(tool.ByteSize() for tool in tools) + spec.response_format.ByteSize()
    if definitions > limits.max_schema_bytes:
        raise RequestTooLargeError(
            f"query.tools and query.response_format hold {definitions} bytes",
            f"{limits.max_schema_bytes} bytes of tool definitions and schema",
            "SWITCHYARD_MAX_SCHEMA_BYTES",
            SMALLER_SCHEMAS,
        )
    return parts, text_left


def _convert_messages(
    protos: Iterable[pb.Message],
    parts: Iterable[int],
    start: int,
    text_left: int,
    *,
    limits: LimitSettings,
    into: list[Message],
) -> int:
    """Convert `protos` (query.messages from index `start` on, each with its number of
    `parts`) into `into`, counting their text against the text left; what is left."""
    for index, (message, count) in enumerate(zip(protos, parts, strict=True), start):
        converted = _message(index, message, count)
        text_left -= _text_bytes(converted)
        if text_left < 0:
            raise RequestTooLargeError(
                f"the query's text reaches {limits.max_text_bytes - text_left} bytes (UTF-8)"
                f" at query.messages[{index}]",
                f"{limits.max_text_bytes} bytes of text",
                "SWITCHYARD_MAX_TEXT_BYTES",
                _SHORTEN,
            )
        into.append(converted)
    return text_left


def _request(
    spec: pb.QuerySpec, texts: _Texts, messages: list[Message], has_parts: bool
) -> Request:
    """The Request of `spec`, whose `messages` are converted: the prompt and the system
    text added, and every other field checked."""
    prompt, system = texts
    if prompt and not prompt.isspace():
        messages.append(Message.of(Role.USER, prompt))
    elif prompt:
        raise InvalidRequestError("query.prompt is blank; put the question in it")
    if system:
        if system.isspace():
            raise InvalidRequestError("query.system is blank; give instructions or leave it empty")
        messages.insert(0, Message.of(Role.SYSTEM, system))
    if not messages:
        raise InvalidRequestError(
            "query.prompt is empty and query.messages has none; set prompt to the question to ask"
        )
    if all(message.role is not Role.USER for message in messages):
        raise InvalidRequestError(
            "the query has no user message; set query.prompt or add a ROLE_USER message"
        )
    if spec.task not in _TASKS:
        raise InvalidRequestError(
            f"query.task {spec.task} is unknown; use one of "
            + ", ".join(pb.Task.Name(number) for number in _TASKS)
        )
    cache_mode = _CACHE_MODES.get(spec.cache_mode)
    if cache_mode is None:
        raise InvalidRequestError(
            f"query.cache_mode {spec.cache_mode} is unknown; use one of "
            + ", ".join(pb.CacheMode.Name(number) for number in _CACHE_MODES)
        )
    temperature = spec.temperature if spec.HasField("temperature") else None
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidRequestError(f"query.temperature must be from 0 to 2, got {temperature:g}")
    top_p = spec.top_p if spec.HasField("top_p") else None
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidRequestError(
            f"query.top_p must be greater than 0 and at most 1, got {top_p:g}"
        )
    return Request(
        messages=tuple(messages),
        task=_TASKS[spec.task],
        model=spec.model or None,
        max_tokens=spec.max_tokens or None,
        temperature=temperature,
        top_p=top_p,
        stop=_stop(spec.stop),
        fallback=not spec.disable_fallback,
        labels=_labels(spec.labels),
        cache_mode=cache_mode,
        **(_structured(spec, messages) if has_parts or _has_structure(spec) else {}),
    )


def _text_bytes(message: Message) -> int:
    """The bytes of text a message carries, for the text bound: its text parts, and the
    text of tool results and reasoning (images and tool calls count towards the message
    size limit only). One case per part kind, as `tokens.part_tokens` has."""
    parts = message.parts
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return text_bytes(parts[0].text)  # the common case: one text part
    total = 0
    for part in parts:
        match part:
            case TextPart(text=text) | ToolResultPart(content=text):
                total += text_bytes(text)
            case ReasoningPart(text=text, signature=signature):
                total += text_bytes(text) + len(signature)
            case RedactedReasoningPart(data=data):
                total += len(data)
            case ImagePart() | ToolCallPart():
                pass
            case _:
                assert_never(part)
    return total


def _check_counts(spec: pb.QuerySpec, texts: _Texts, limits: LimitSettings) -> list[int]:
    """Refuse a query with more messages or parts than one call may have (parts are counted
    only once the number of messages is known to be within its bound); the number of parts
    of each message (one pass over the messages, whose conversion reads them again)."""
    extra = (1 if texts.prompt else 0) + (1 if texts.system else 0)  # a message each
    protos = spec.messages
    count = len(protos) + extra
    if count > limits.max_messages:
        also = [name for name, text in zip(("prompt", "system"), texts, strict=True) if text]
        counted = " and ".join(f"query.{field}" for field in also)
        raise RequestTooLargeError(
            f"the query has {count} messages"
            + (
                f" ({counted} {'counts as one' if extra == 1 else 'count as one each'})"
                if extra
                else ""
            ),
            str(limits.max_messages),
            "SWITCHYARD_MAX_MESSAGES",
        )
    # A message counts its parts, or one for its text `content`; prompt and system one each.
    lengths = [len(m.parts) for m in protos] if protos else []  # most calls: a prompt alone
    parts = sum(lengths) + lengths.count(0) + extra
    if parts > limits.max_parts:
        raise RequestTooLargeError(
            f"the query has {parts} content parts", str(limits.max_parts), "SWITCHYARD_MAX_PARTS"
        )
    return lengths


def _message(index: int, message: pb.Message, parts: int) -> Message:
    """query.messages[index], which has `parts` content parts (counted by `_check_counts`)."""
    role = _ROLES.get(message.role)
    if role is None:
        raise InvalidRequestError(
            f"query.messages[{index}].role must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT"
            " or ROLE_TOOL"
        )
    if parts:
        if message.content:
            raise InvalidRequestError(
                f"query.messages[{index}] sets both content and parts; put the text in a"
                " text part, or use content alone"
            )
        return Message(role, _parts(index, role, message.parts))
    if role is Role.TOOL:
        raise InvalidRequestError(
            f"query.messages[{index}] is a ROLE_TOOL message without parts; give it one"
            " tool_result part per tool call it answers"
        )
    content = message.content  # one copy out of the protobuf, not two
    if not content or content.isspace():
        raise InvalidRequestError(
            f"query.messages[{index}].content is empty; give it text or remove the message"
        )
    return Message.of(role, content)


def _stop(stop: Sequence[str]) -> tuple[str, ...]:
    if not stop:
        return ()
    sequences = tuple(stop)
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(
            f"query.stop has {len(sequences)} sequences; at most {MAX_STOP_SEQUENCES} are allowed"
        )
    if any(not sequence for sequence in sequences):
        raise InvalidRequestError("query.stop contains an empty sequence; remove it")
    return sequences


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    if not labels:
        return {}
    result = dict(labels)
    if len(result) > MAX_LABELS:
        raise InvalidRequestError(
            f"query.labels has {len(result)} entries; at most {MAX_LABELS} are allowed"
        )
    for key, value in result.items():
        if not key or len(key) > MAX_LABEL_KEY:
            raise InvalidRequestError(
                f"query.labels key {key[:MAX_LABEL_KEY]!r} must be 1 to {MAX_LABEL_KEY} characters"
            )
        if len(value) > MAX_LABEL_VALUE:
            raise InvalidRequestError(
                f"query.labels[{key!r}] is longer than {MAX_LABEL_VALUE} characters; shorten it"
            )
    return result


def money(nanos: int) -> money_pb2.Money:
    """Nano-dollars as google.type.Money in USD."""
    message = money_pb2.Money()
    _set_money(message, nanos)
    return message


# The answers of Query and StreamQuery are filled in place, field by field: a message
# built from keyword arguments copies every nested message it is given once more (a
# QueryResponse holds a route, two costs, usage and attempts), a fifth of its cost.


# A field left at its default is the same on the wire as one set to it (these fields
# have no presence), and skipping it saves a setter (0.1 us each, a response sets some
# fifty). The first field of each message is set whatever it holds, so the message
# itself is present exactly as before.


def _set_money(target: money_pb2.Money, nanos: int) -> None:
    """Fill `target` with nano-dollars in USD."""
    target.currency_code = "USD"
    if nanos >= NANOS_PER_USD or nanos < 0:
        target.units, target.nanos = divmod(nanos, NANOS_PER_USD)
    elif nanos:
        target.nanos = nanos


def _set_usage(target: pb.Usage, usage: Usage) -> None:
    target.input_tokens = usage.input_tokens
    if usage.output_tokens:
        target.output_tokens = usage.output_tokens
    if usage.cached_input_tokens:
        target.cached_input_tokens = usage.cached_input_tokens
    if usage.estimated:
        target.estimated = True
    if usage.reasoning_tokens:
        target.reasoning_tokens = usage.reasoning_tokens
    if usage.cache_write_tokens:
        target.cache_write_input_tokens = usage.cache_write_tokens


def usage_to_proto(usage: Usage) -> pb.Usage:
    """Domain usage as the contract's Usage."""
    message = pb.Usage()
    _set_usage(message, usage)
    return message


_CIRCUIT_TO_PB = {
    CircuitState.CLOSED: pb.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: pb.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: pb.CIRCUIT_STATE_HALF_OPEN,
}


def model_state(model: ModelSpec, status: CircuitStatus) -> pb.ModelState:
    """A model's circuit breaker state as the contract's ModelState."""
    return pb.ModelState(
        model=model.name, circuit=_CIRCUIT_TO_PB[status.state], retry_in_ms=_ms(status.retry_in)
    )


def preview_to_proto(preview: Preview) -> pb.RouteDecision:
    """Route's answer: the decision, its admission, and the breakers of its chain."""
    decision = route_to_proto(preview.route, preview.admission)
    decision.model_states.extend(model_state(model, status) for model, status in preview.circuits)
    return decision


def route_to_proto(route: RouteDecision, admission: Admission = ADMITTED) -> pb.RouteDecision:
    """A routing decision as the contract's RouteDecision.

    Query and StreamQuery pass the default: a call that runs was admitted.
    """
    decision = pb.RouteDecision()
    _set_route(decision, route, admission)
    return decision


def _set_route(target: pb.RouteDecision, route: RouteDecision, admission: Admission) -> None:
    model = route.model
    target.model = model.name
    target.provider = model.provider
    if route.fallbacks:
        target.fallback_models.extend([fallback.name for fallback in route.fallbacks])
    target.task = _TASK_TO_PB[route.task]
    target.complexity = _COMPLEXITY_TO_PB[route.complexity]
    target.basis = _BASIS_TO_PB[route.basis]
    target.reason = route.reason
    target.estimated_input_tokens = route.input_tokens
    target.max_tokens = route.max_tokens
    cost = target.estimated_cost
    _set_money(cost.min, route.cost_min)
    _set_money(cost.max, route.cost_max)
    target.admission.admitted = admission.admitted
    if admission.reason:
        target.admission.reason = admission.reason
    for skip in route.skipped:
        target.skipped_models.add(model=skip.model, reason=skip.reason)


def attempt_to_proto(attempt: Attempt) -> pb.Attempt:
    """One attempt record as the contract's Attempt."""
    message = pb.Attempt()
    _set_attempt(message, attempt)
    return message


def _set_attempt(target: pb.Attempt, attempt: Attempt) -> None:
    target.model = attempt.model.name
    target.provider = attempt.model.provider
    target.outcome = _OUTCOME_TO_PB[attempt.outcome]
    if attempt.http_status:
        target.http_status = attempt.http_status
    if attempt.error:
        target.error = attempt.error
    target.latency_ms = _ms(attempt.latency)
    _set_usage(target.usage, attempt.usage)
    _set_money(target.cost, attempt.cost)


def query_response(call: Call, completion: Completion, now: float) -> pb.QueryResponse:
    """The unary answer: the completion plus what the call took."""
    assert call.route is not None
    response = pb.QueryResponse(
        content=completion.content,
        model=completion.model.name,
        provider=completion.model.provider,
        request_id=call.request_id,
        **(_answer_parts(completion) if not call.request.plain else {}),
    )
    _set_route(response.route, call.route, ADMITTED)
    _set_outcome(response, call, completion, now)
    return response


def stream_start(call: Call, model: ModelSpec) -> pb.StreamQueryResponse:
    """The first message of a stream, naming the model that answers."""
    assert call.route is not None
    message = pb.StreamQueryResponse()
    start = message.start
    start.model = model.name
    start.provider = model.provider
    start.request_id = call.request_id
    _set_route(start.route, call.route, ADMITTED)
    return message


def stream_end(call: Call, completion: Completion, now: float) -> pb.StreamQueryResponse:
    """The last message of a completed stream."""
    first = call.first_token_at
    message = pb.StreamQueryResponse()
    end = message.end
    end.time_to_first_token_ms = _ms(first - call.started) if first is not None else 0
    end.validation = _VALIDATION_TO_PB[completion.validation]
    end.validation_error = completion.validation_error
    _set_outcome(end, call, completion, now)
    return message


def _set_outcome(
    target: pb.QueryResponse | pb.StreamEnd, call: Call, completion: Completion, now: float
) -> None:
    """What QueryResponse and StreamEnd both report about a finished call."""
    _set_usage(target.usage, call.usage)
    _set_money(target.cost, call.cost)
    target.finish_reason = _FINISH_TO_PB[completion.finish_reason]
    for attempt in call.attempts:
        _set_attempt(target.attempts.add(), attempt)
    target.cached = call.cached
    target.latency_ms = _ms(now - call.started)
    if call.saved_cost:
        _set_money(target.saved_cost, call.saved_cost)


_LAST_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z, the last a Timestamp holds
_FIRST_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    """Wall-clock seconds as a protobuf Timestamp (to the microsecond), kept within the
    years 0001 to 9999 a Timestamp can hold (a window rounded past 9999 ends there)."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(min(max(round(seconds * 1_000_000), _FIRST_US), _LAST_US))
    return stamp


def usage_window(request: pb.GetUsageRequest, now: float) -> tuple[float, float]:
    """The [start, end) window a GetUsage request asks for; 24 hours up to now by default."""
    end = _seconds(request.end, "end") if request.HasField("end") else now
    start = _seconds(request.start, "start") if request.HasField("start") else end - 86_400
    if start >= end:
        raise InvalidRequestError("start must be before end; leave both unset for the last 24 h")
    return start, end


def _token_totals(totals: ModelTotals) -> pb.TokenTotals:
    return pb.TokenTotals(
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cached_input_tokens=totals.cached_input_tokens,
        reasoning_tokens=totals.reasoning_tokens,
        cache_write_input_tokens=totals.cache_write_tokens,
    )


def usage_response(report: UsageReport) -> pb.GetUsageResponse:
    """GetUsage's answer from the ledger's summary, the budgets and the providers' load."""
    summary = report.summary
    total = summary.total
    lookups = summary.cache_hits + summary.cache_misses
    return pb.GetUsageResponse(
        caller=summary.tenant,
        start=timestamp(summary.start),
        end=timestamp(summary.end),
        requests=summary.requests,
        errors=summary.errors,
        cost=money(total.cost),
        tokens=_token_totals(total),
        models=[
            pb.ModelUsage(
                model=model,
                attempts=totals.attempts,
                failed_attempts=totals.failed_attempts,
                tokens=_token_totals(totals),
                cost=money(totals.cost),
            )
            for model, totals in summary.models.items()
        ],
        cache=pb.CacheUsage(
            hits=summary.cache_hits,
            misses=summary.cache_misses,
            hit_rate=summary.cache_hits / lookups if lookups else 0.0,
            saved_cost=money(summary.saved_cost),
        ),
        budgets=[
            pb.BudgetUsage(
                period=budget.period,
                limit=money(budget.limit),
                spent=money(budget.spent),
                resets_at=timestamp(budget.resets_at),
            )
            for budget in report.budgets
        ],
        in_flight=[
            pb.ProviderLoad(provider=provider, in_flight=count, limit=limit)
            for provider, (count, limit) in report.provider_load.items()
        ],
    )


def _ms(seconds: float) -> int:
    return max(math.floor(seconds * 1000 + 0.5), 0)


MAX_PAGE_SIZE = 5000
DEFAULT_PAGE_SIZE = 500


def export_window(
    request: pb.ExportUsageRequest, now: float
) -> tuple[float, float, int, tuple[int, str]]:
    """ExportUsage's window [start, end), page size and resume position, validated."""
    if not request.HasField("start"):
        raise InvalidRequestError(
            "start is required: the export's window begins there (end defaults to now)"
        )
    start = _seconds(request.start, "start")
    end = _seconds(request.end, "end") if request.HasField("end") else now
    if start >= end:
        raise InvalidRequestError("start must be before end")
    size = request.page_size or DEFAULT_PAGE_SIZE
    if size > MAX_PAGE_SIZE:
        raise InvalidRequestError(
            f"page_size is {size}; at most {MAX_PAGE_SIZE} calls fit one message"
        )
    after = (-1, "")
    if request.page_token:
        after = page_position(request.page_token)
    return start, end, size, after


def _seconds(stamp: timestamp_pb2.Timestamp, field: str) -> float:
    try:
        return stamp.ToMicroseconds() / 1_000_000
    except ValueError:
        raise InvalidRequestError(
            f"{field} is not a valid timestamp; use one between 0001 and 9999"
        ) from None


def page_token(ended_at_us: int, request_id: str) -> str:
    """The opaque resume token after the call (ended_at_us, request_id)."""
    return base64.urlsafe_b64encode(f"1:{ended_at_us}:{request_id}".encode()).decode()


def page_position(token: str) -> tuple[int, str]:
    """The position a token resumes after; INVALID_ARGUMENT for a token not issued here."""
    try:
        version, at, request_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 2)
        if version != "1" or not request_id:
            raise ValueError
        return int(at), request_id
    except (ValueError, UnicodeError):
        raise InvalidRequestError(
            "page_token is not one this gateway issued; send the next_page_token of the last"
            " message received, or leave it empty to start at `start`"
        ) from None


def call_record(row: CallRow) -> pb.CallRecord:
    """One ledger row as the contract's CallRecord."""
    return pb.CallRecord(
        request_id=row.request_id,
        ended_at=_stamp_us(row.ended_at_us),
        caller=row.tenant,
        key_id=row.key_id or "",
        end_user=row.end_user or "",
        route_model=row.route_model,
        route_reason=row.route_reason,
        model=row.model,
        status=row.status,
        usage=_usage_row(row),
        cost=money(row.cost),
        latency_ms=_ms(row.latency_us / 1_000_000),
        time_to_first_token_ms=0 if row.ttft_us is None else _ms(row.ttft_us / 1_000_000),
        cached=row.cache == "hit",
        saved_cost=money(row.saved_cost) if row.saved_cost else None,
        labels=orjson.loads(row.labels) if row.labels != "{}" else {},
        attempts=[
            pb.Attempt(
                model=a.model,
                provider=a.provider,
                outcome=_OUTCOME_NAMES.get(a.outcome, pb.ATTEMPT_OUTCOME_UNSPECIFIED),
                http_status=a.http_status,
                error=a.error,
                latency_ms=_ms(a.latency_us / 1_000_000),
                usage=_usage_row(a),
                cost=money(a.cost),
            )
            for a in row.attempts
        ],
    )


def _usage_row(row: CallRow | AttemptRow) -> pb.Usage:
    return pb.Usage(
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cached_input_tokens=row.cached_input_tokens,
        estimated=row.estimated,
        reasoning_tokens=row.reasoning_tokens,
        cache_write_input_tokens=row.cache_write_tokens,
    )


def _stamp_us(microseconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(microseconds)
    return stamp


_OUTCOME_NAMES = {outcome.value: number for outcome, number in _OUTCOME_TO_PB.items()}


# --- content parts, tools, response formats and reasoning (issue 15) ----------------

MAX_TOOLS = 128  # OpenAI's limit, the lower of the two wires'
MIN_THINKING_BUDGET = 1024  # Anthropic's least budget_tokens
IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # tool and schema names, as both wires allow
_CALL_ID = re.compile(r"[a-zA-Z0-9_-]{1,128}")  # Anthropic's tool_use id alphabet
_NAME_RULE = "1 to 64 letters, digits, '_' or '-'"
# Which parts each role's messages may hold.
_PART_ROLES: dict[str, frozenset[Role]] = {
    "text": frozenset({Role.SYSTEM, Role.USER, Role.ASSISTANT}),
    "image": frozenset({Role.USER}),
    "tool_call": frozenset({Role.ASSISTANT}),
    "reasoning": frozenset({Role.ASSISTANT}),
    "redacted_reasoning": frozenset({Role.ASSISTANT}),
    "tool_result": frozenset({Role.TOOL}),
}
_TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: ToolChoiceMode.AUTO,
    pb.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    pb.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    pb.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
    pb.TOOL_CHOICE_MODE_TOOL: ToolChoiceMode.TOOL,
}
_RESPONSE_KINDS = {
    pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED: ResponseKind.TEXT,
    pb.RESPONSE_FORMAT_TYPE_TEXT: ResponseKind.TEXT,
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: ResponseKind.JSON_OBJECT,
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: ResponseKind.JSON_SCHEMA,
}
_EFFORTS = {
    pb.REASONING_EFFORT_LOW: ReasoningEffort.LOW,
    pb.REASONING_EFFORT_MEDIUM: ReasoningEffort.MEDIUM,
    pb.REASONING_EFFORT_HIGH: ReasoningEffort.HIGH,
}
_VALIDATION_TO_PB = {
    Validation.UNCHECKED: pb.OUTPUT_VALIDATION_UNSPECIFIED,
    Validation.VALID: pb.OUTPUT_VALIDATION_VALID,
    Validation.INVALID: pb.OUTPUT_VALIDATION_INVALID,
}
_NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}}


def _parts(index: int, role: Role, parts: Sequence[pb.Part]) -> tuple[Part, ...]:
    """A message's parts, each allowed for its role and well formed."""
    converted: list[Part] = []
    for number, part in enumerate(parts):
        where = f"query.messages[{index}].parts[{number}]"
        kind = part.WhichOneof("kind")
        if kind is None:
            raise InvalidRequestError(f"{where} is empty; set text, image, tool_call or another")
        if role not in _PART_ROLES[kind]:
            allowed = ", ".join(k for k, roles in _PART_ROLES.items() if role in roles)
            raise InvalidRequestError(
                f"{where}.{kind} cannot be in a {role.name} message; it may hold: {allowed}"
            )
        converted.append(_part(where, kind, part))
    return tuple(converted)


def _part(where: str, kind: str, part: pb.Part) -> Part:
    if kind == "text":
        if not part.text.strip():
            raise InvalidRequestError(f"{where}.text is empty; give it text or remove the part")
        return TextPart(part.text)
    if kind == "image":
        return _image(f"{where}.image", part.image)
    if kind == "tool_call":
        call = part.tool_call
        _check_call_id(f"{where}.tool_call.id", call.id)
        _check_name(f"{where}.tool_call.name", call.name)
        return ToolCallPart(call.id, call.name, _struct(call.arguments, f"{where}.tool_call"))
    if kind == "tool_result":
        result = part.tool_result
        _check_call_id(f"{where}.tool_result.tool_call_id", result.tool_call_id)
        return ToolResultPart(result.tool_call_id, result.content, result.is_error)
    if kind == "reasoning":
        return ReasoningPart(part.reasoning.text, part.reasoning.signature)
    if not part.redacted_reasoning.data:
        raise InvalidRequestError(
            f"{where}.redacted_reasoning.data is empty; send the part back as it came"
        )
    return RedactedReasoningPart(part.redacted_reasoning.data)


def _image(where: str, image: pb.Image) -> ImagePart:
    media_type = image.media_type
    if media_type and media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidRequestError(
            f"{where}.media_type {media_type[:64]!r} is not one the models take; use one of "
            + ", ".join(sorted(IMAGE_MEDIA_TYPES))
        )
    source = image.WhichOneof("source")
    if source == "data":
        if not image.data:
            raise InvalidRequestError(f"{where}.data is empty; give the image's bytes")
        if not media_type:
            raise InvalidRequestError(
                f"{where}.media_type is required with data; use one of "
                + ", ".join(sorted(IMAGE_MEDIA_TYPES))
            )
        return ImagePart(media_type, data=image.data)
    if source == "url":
        if not image.url.startswith(("https://", "http://")):
            raise InvalidRequestError(
                f"{where}.url must be an http(s) URL; send other images as data with a media_type"
            )
        return ImagePart(media_type, url=image.url)
    raise InvalidRequestError(f"{where} has neither url nor data; set one")


def _check_name(where: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidRequestError(f"{where} {name[:80]!r} must be {_NAME_RULE}")


def _check_call_id(where: str, call_id: str) -> None:
    if not _CALL_ID.fullmatch(call_id):
        raise InvalidRequestError(
            f"{where} {call_id[:80]!r} must be 1 to 128 letters, digits, '_' or '-';"
            " send the id of the tool call as the answer gave it"
        )


def _struct(struct: struct_pb2.Struct, where: str) -> dict[str, Any]:
    """A Struct as plain JSON values; whole numbers become ints (Struct keeps only
    doubles, and a schema's `"type": "integer"` or a tool's count should stay whole).

    Keys sorted: a Struct is a map, whose order differs from one process to the next,
    so the same request would otherwise reach the relay as different bytes after a
    restart (and miss provider prompt caches, or change a seeded answer)."""
    fields = struct.fields
    return {key: _value(fields[key], where) for key in sorted(fields)}


def _value(value: struct_pb2.Value, where: str) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise InvalidRequestError(f"{where} holds {number}, which JSON cannot carry")
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct(value.struct_value, where)
    if kind == "list_value":
        return [_value(item, where) for item in value.list_value.values]
    return None


def _object_schema(where: str, schema: Mapping[str, Any]) -> None:
    """Refuse a schema that is not a valid JSON Schema of an object."""
    if schema.get("type") != "object":
        raise InvalidRequestError(
            f'{where} must be an object schema ({{"type": "object", "properties": ...}}):'
            " both wires send arguments and JSON answers as objects"
        )
    problem = schema_problem(schema)
    if problem is not None:
        raise InvalidRequestError(f"{where} is not a valid JSON Schema: {problem[:300]}")


def _tools(spec: pb.QuerySpec) -> tuple[ToolSpec, ...]:
    """query.tools (their number and bytes were checked with the other bounds)."""
    tools: list[ToolSpec] = []
    names: set[str] = set()
    for number, tool in enumerate(spec.tools):
        where = f"query.tools[{number}]"
        _check_name(f"{where}.name", tool.name)
        if tool.name in names:
            raise InvalidRequestError(
                f"{where}.name {tool.name!r} is used twice; tool names are unique"
            )
        names.add(tool.name)
        parameters: Mapping[str, Any] = _NO_ARGUMENTS
        if tool.HasField("parameters"):
            parameters = _struct(tool.parameters, f"{where}.parameters")
            _object_schema(f"{where}.parameters", parameters)
        tools.append(ToolSpec(tool.name, tool.description, parameters))
    return tuple(tools)


def _tool_choice(spec: pb.QuerySpec, tools: tuple[ToolSpec, ...]) -> ToolChoice | None:
    choice = spec.tool_choice
    mode = _TOOL_CHOICE_MODES.get(choice.mode)
    if mode is None:
        raise InvalidRequestError(
            f"query.tool_choice.mode {choice.mode} is unknown; use one of "
            + ", ".join(pb.ToolChoiceMode.Name(number) for number in _TOOL_CHOICE_MODES)
        )
    if mode is ToolChoiceMode.TOOL:
        if choice.name not in {tool.name for tool in tools}:
            raise InvalidRequestError(
                f"query.tool_choice.name {choice.name[:80]!r} is not one of query.tools;"
                " name a defined tool"
            )
        return ToolChoice(mode, choice.name)
    if choice.name:
        raise InvalidRequestError(
            "query.tool_choice.name is set but mode is not TOOL_CHOICE_MODE_TOOL; set the mode"
            " or clear the name"
        )
    if mode is ToolChoiceMode.REQUIRED and not tools:
        raise InvalidRequestError(
            "query.tool_choice is TOOL_CHOICE_MODE_REQUIRED but query.tools is empty; define"
            " the tools the model may call"
        )
    return ToolChoice(mode) if tools else None


def _response_format(spec: pb.QuerySpec) -> ResponseFormat | None:
    fmt = spec.response_format
    kind = _RESPONSE_KINDS.get(fmt.type)
    if kind is None:
        raise InvalidRequestError(
            f"query.response_format.type {fmt.type} is unknown; use one of "
            + ", ".join(pb.ResponseFormatType.Name(number) for number in _RESPONSE_KINDS)
        )
    has_schema = fmt.HasField("json_schema")
    if kind is not ResponseKind.JSON_SCHEMA:
        if has_schema:
            raise InvalidRequestError(
                "query.response_format.json_schema is set but type is not"
                " RESPONSE_FORMAT_TYPE_JSON_SCHEMA; set the type or clear the schema"
            )
        return None if kind is ResponseKind.TEXT else ResponseFormat(kind)
    where = "query.response_format.json_schema"
    if not has_schema or not fmt.json_schema.HasField("schema"):
        raise InvalidRequestError(
            f"{where}.schema is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA"
        )
    name = fmt.json_schema.name or "response"
    _check_name(f"{where}.name", name)
    schema = _struct(fmt.json_schema.schema, f"{where}.schema")
    _object_schema(f"{where}.schema", schema)
    return ResponseFormat(kind, name, schema, fmt.json_schema.strict)


def _reasoning(spec: pb.QuerySpec) -> tuple[ReasoningEffort | None, int | None]:
    effort = None
    if spec.reasoning_effort:
        effort = _EFFORTS.get(spec.reasoning_effort)
        if effort is None:
            raise InvalidRequestError(
                f"query.reasoning_effort {spec.reasoning_effort} is unknown; use one of "
                + ", ".join(pb.ReasoningEffort.Name(number) for number in _EFFORTS)
            )
    budget = spec.thinking_budget_tokens or None
    if budget is not None:
        if effort is not None:
            raise InvalidRequestError(
                "query.reasoning_effort and query.thinking_budget_tokens are both set;"
                " set one of them"
            )
        if budget < MIN_THINKING_BUDGET:
            raise InvalidRequestError(
                f"query.thinking_budget_tokens is {budget}; it must be at least"
                f" {MIN_THINKING_BUDGET} (or 0 for no budget)"
            )
    return effort, budget


def _check_tool_flow(messages: Sequence[Message], tools: tuple[ToolSpec, ...]) -> None:
    """Tool results answer earlier tool calls, and a conversation with tool calls
    defines its tools (Anthropic refuses it otherwise)."""
    calls: set[str] = set()
    for index, message in enumerate(messages):
        for number, part in enumerate(message.parts):
            if type(part) is ToolCallPart:
                calls.add(part.id)
            elif type(part) is ToolResultPart and part.tool_call_id not in calls:
                raise InvalidRequestError(
                    f"query.messages[{index}].parts[{number}].tool_result.tool_call_id"
                    f" {part.tool_call_id!r} answers no tool call of an earlier assistant"
                    " message; send the assistant message with that call before it"
                )
    if calls and not tools:
        raise InvalidRequestError(
            "query.messages hold tool calls but query.tools is empty; define the tools"
            " (the providers refuse tool calls without their definitions)"
        )


def _structured(spec: pb.QuerySpec, messages: Sequence[Message]) -> dict[str, Any]:
    """The Request fields of tools, response format and reasoning (none for plain text)."""
    tools = _tools(spec) if spec.tools else ()
    if any(not isinstance(part, TextPart) for m in messages for part in m.parts):
        _check_tool_flow(messages, tools)
    fields: dict[str, Any] = {"tools": tools}
    if spec.HasField("tool_choice"):
        fields["tool_choice"] = _tool_choice(spec, tools)
    if spec.HasField("parallel_tool_calls"):
        if not tools:
            raise InvalidRequestError(
                "query.parallel_tool_calls is set but query.tools is empty; define tools"
                " or leave it unset"
            )
        fields["parallel_tool_calls"] = spec.parallel_tool_calls
    if spec.HasField("response_format"):
        fields["response_format"] = _response_format(spec)
    fields["reasoning_effort"], fields["thinking_budget"] = _reasoning(spec)
    return fields


def _has_structure(spec: pb.QuerySpec) -> bool:
    """Does the spec use anything beyond text messages? (A few field checks.)"""
    return bool(
        spec.tools
        or spec.HasField("tool_choice")
        or spec.HasField("parallel_tool_calls")
        or spec.HasField("response_format")
        or spec.reasoning_effort
        or spec.thinking_budget_tokens
    )


def tool_call_to_proto(call: ToolCallPart) -> pb.ToolCall:
    """A tool call as the contract's ToolCall."""
    arguments = struct_pb2.Struct()
    if call.arguments:
        arguments.update(call.arguments)
    return pb.ToolCall(id=call.id, name=call.name, arguments=arguments)


def _reasoning_to_proto(part: Reasoning) -> pb.Part:
    if type(part) is ReasoningPart:
        return pb.Part(reasoning=pb.Reasoning(text=part.text, signature=part.signature))
    assert type(part) is RedactedReasoningPart
    return pb.Part(redacted_reasoning=pb.RedactedReasoning(data=part.data))


def _answer_parts(completion: Completion) -> dict[str, Any]:
    """What an answer carries besides its text: tool calls, reasoning, validation."""
    return {
        "tool_calls": [tool_call_to_proto(call) for call in completion.tool_calls],
        "reasoning": [_reasoning_to_proto(part) for part in completion.reasoning],
        "validation": _VALIDATION_TO_PB[completion.validation],
        "validation_error": completion.validation_error,
    }


def text_delta(text: str) -> pb.StreamQueryResponse:
    """A stream's text delta as the contract's message: filled in place (0.9 us), where
    `StreamQueryResponse(delta=TextDelta(text=...))` builds the delta twice (1.9 us) for
    the same bytes; once per token of every stream."""
    message = pb.StreamQueryResponse()
    message.delta.text = text
    return message


def stream_event(
    event: ToolCallStart | ToolCallDelta | ToolCallEnd | ReasoningDelta,
) -> pb.StreamQueryResponse:
    """A tool-call or reasoning event of a stream as the contract's message."""
    match event:
        case ToolCallStart(index=index, id=call_id, name=name):
            return pb.StreamQueryResponse(
                tool_call_start=pb.ToolCallStart(index=index, id=call_id, name=name)
            )
        case ToolCallDelta(index=index, arguments=arguments):
            return pb.StreamQueryResponse(
                tool_call_delta=pb.ToolCallDelta(index=index, arguments=arguments)
            )
        case ToolCallEnd(index=index, call=call):
            return pb.StreamQueryResponse(
                tool_call_end=pb.ToolCallEnd(index=index, call=tool_call_to_proto(call))
            )
        case ReasoningDelta():
            return pb.StreamQueryResponse(
                reasoning=pb.ReasoningDelta(
                    index=event.index,
                    text=event.text,
                    signature=event.signature,
                    redacted_data=event.redacted_data,
                )
            )
        case _:
            assert_never(event)
