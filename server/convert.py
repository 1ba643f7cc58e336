"""Protobuf <-> domain, and the validation of what callers send.

Every rule a request must meet is checked here, before any stage runs, and
each refusal names the field and says how to fix it. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from google.protobuf import timestamp_pb2
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
    Message,
    ModelSpec,
    Outcome,
    Request,
    Role,
    RouteBasis,
    RouteDecision,
    Task,
    Usage,
)
from server.errors import InvalidRequestError
from server.pipeline import Preview, UsageReport
from server.state.ledger import ModelTotals
from server.state.rows import AttemptRow, CallRow

MAX_STOP_SEQUENCES = 4
MAX_LABELS = 16
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256

_ROLES = {pb.ROLE_SYSTEM: Role.SYSTEM, pb.ROLE_USER: Role.USER, pb.ROLE_ASSISTANT: Role.ASSISTANT}
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
}
_OUTCOME_TO_PB = {
    Outcome.SUCCESS: pb.ATTEMPT_OUTCOME_SUCCESS,
    Outcome.RETRYABLE_ERROR: pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR,
    Outcome.FINAL_ERROR: pb.ATTEMPT_OUTCOME_FINAL_ERROR,
    Outcome.CANCELLED: pb.ATTEMPT_OUTCOME_CANCELLED,
    Outcome.INTERRUPTED: pb.ATTEMPT_OUTCOME_INTERRUPTED,
    Outcome.SKIPPED: pb.ATTEMPT_OUTCOME_SKIPPED,
}


def request_from_proto(spec: pb.QuerySpec) -> Request:
    """Validate a QuerySpec and turn it into a Request."""
    messages = [_message(index, message) for index, message in enumerate(spec.messages)]
    if spec.prompt.strip():
        messages.append(Message.of(Role.USER, spec.prompt))
    elif spec.prompt:
        raise InvalidRequestError("query.prompt is blank; put the question in it")
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
    )


def _message(index: int, message: pb.Message) -> Message:
    role = _ROLES.get(message.role)
    if role is None:
        raise InvalidRequestError(
            f"query.messages[{index}].role must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT"
        )
    if not message.content.strip():
        raise InvalidRequestError(
            f"query.messages[{index}].content is empty; give it text or remove the message"
        )
    return Message.of(role, message.content)


def _stop(stop: Iterable[str]) -> tuple[str, ...]:
    sequences = tuple(stop)
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(
            f"query.stop has {len(sequences)} sequences; at most {MAX_STOP_SEQUENCES} are allowed"
        )
    if any(not sequence for sequence in sequences):
        raise InvalidRequestError("query.stop contains an empty sequence; remove it")
    return sequences


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
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
    units, fraction = divmod(nanos, NANOS_PER_USD)
    return money_pb2.Money(currency_code="USD", units=units, nanos=fraction)


def usage_to_proto(usage: Usage) -> pb.Usage:
    """Domain usage as the contract's Usage."""
    return pb.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        estimated=usage.estimated,
    )


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
    return pb.RouteDecision(
        model=route.model.name,
        provider=route.model.provider,
        fallback_models=[model.name for model in route.fallbacks],
        task=_TASK_TO_PB[route.task],
        complexity=_COMPLEXITY_TO_PB[route.complexity],
        basis=_BASIS_TO_PB[route.basis],
        reason=route.reason,
        estimated_input_tokens=route.input_tokens,
        max_tokens=route.max_tokens,
        estimated_cost=pb.CostEstimate(min=money(route.cost_min), max=money(route.cost_max)),
        admission=pb.Admission(admitted=admission.admitted, reason=admission.reason),
    )


def attempt_to_proto(attempt: Attempt) -> pb.Attempt:
    """One attempt record as the contract's Attempt."""
    return pb.Attempt(
        model=attempt.model.name,
        provider=attempt.model.provider,
        outcome=_OUTCOME_TO_PB[attempt.outcome],
        http_status=attempt.http_status,
        error=attempt.error,
        latency_ms=_ms(attempt.latency),
        usage=usage_to_proto(attempt.usage),
        cost=money(attempt.cost),
    )


def query_response(call: Call, completion: Completion, now: float) -> pb.QueryResponse:
    """The unary answer: the completion plus what the call took."""
    assert call.route is not None
    return pb.QueryResponse(
        content=completion.content,
        model=completion.model.name,
        provider=completion.model.provider,
        route=route_to_proto(call.route),
        request_id=call.request_id,
        **_outcome(call, completion, now),
    )


def stream_start(call: Call, model: ModelSpec) -> pb.StreamQueryResponse:
    """The first message of a stream, naming the model that answers."""
    assert call.route is not None
    return pb.StreamQueryResponse(
        start=pb.StreamStart(
            model=model.name,
            provider=model.provider,
            route=route_to_proto(call.route),
            request_id=call.request_id,
        )
    )


def stream_end(call: Call, completion: Completion, now: float) -> pb.StreamQueryResponse:
    """The last message of a completed stream."""
    first = call.first_token_at
    return pb.StreamQueryResponse(
        end=pb.StreamEnd(
            time_to_first_token_ms=_ms(first - call.started) if first is not None else 0,
            **_outcome(call, completion, now),
        )
    )


def _outcome(call: Call, completion: Completion, now: float) -> dict[str, Any]:
    """What QueryResponse and StreamEnd both report about a finished call."""
    return {
        "usage": usage_to_proto(call.usage),
        "cost": money(call.cost),
        "finish_reason": _FINISH_TO_PB[completion.finish_reason],
        "attempts": [attempt_to_proto(attempt) for attempt in call.attempts],
        "cached": call.cached,
        "latency_ms": _ms(now - call.started),
        "saved_cost": money(call.saved_cost) if call.saved_cost else None,
    }


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
    )


def _stamp_us(microseconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(microseconds)
    return stamp


_OUTCOME_NAMES = {outcome.value: number for outcome, number in _OUTCOME_TO_PB.items()}
