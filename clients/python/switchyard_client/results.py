"""What calls return: answers, stream summaries and routes as plain values.

Money arrives as ``google.type.Money``; here it is a ``Decimal`` of US
dollars, exact to the nano-dollar. Each value keeps the message it came from
in ``raw`` for the fields this module does not surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from google.type import money_pb2
from switchyard.v1 import gateway_pb2 as pb

_NANOS_PER_UNIT = 1_000_000_000


def usd(money: money_pb2.Money) -> Decimal:
    """google.type.Money as an exact Decimal of dollars (units and nanos share a sign)."""
    return Decimal(money.units * _NANOS_PER_UNIT + money.nanos) / _NANOS_PER_UNIT


def _enum_name(enum: object, value: int, prefix: str) -> str:
    """TASK_FAST -> "FAST"; an unknown number (a newer gateway) -> its digits."""
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call was billed for."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    estimated: bool = False

    @classmethod
    def from_proto(cls, usage: pb.Usage) -> Usage:
        """From the contract's Usage."""
        return cls(
            usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.estimated
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one model during a call."""

    model: str
    provider: str
    outcome: str  # "SUCCESS", "RETRYABLE_ERROR", "FINAL_ERROR", "CANCELLED", ...
    http_status: int
    error: str
    latency_ms: int
    usage: Usage
    cost: Decimal

    @classmethod
    def from_proto(cls, attempt: pb.Attempt) -> Attempt:
        """From the contract's Attempt."""
        return cls(
            model=attempt.model,
            provider=attempt.provider,
            outcome=_enum_name(pb.AttemptOutcome, attempt.outcome, "ATTEMPT_OUTCOME_"),
            http_status=attempt.http_status,
            error=attempt.error,
            latency_ms=attempt.latency_ms,
            usage=Usage.from_proto(attempt.usage),
            cost=usd(attempt.cost),
        )


@dataclass(frozen=True, slots=True)
class Route:
    """Where a query would go, and what it could cost."""

    model: str
    provider: str
    fallback_models: tuple[str, ...]
    task: str
    complexity: str
    basis: str
    reason: str
    estimated_input_tokens: int
    max_tokens: int
    cost_min: Decimal
    cost_max: Decimal
    admitted: bool
    raw: pb.RouteDecision

    @classmethod
    def from_proto(cls, route: pb.RouteDecision) -> Route:
        """From the contract's RouteDecision."""
        return cls(
            model=route.model,
            provider=route.provider,
            fallback_models=tuple(route.fallback_models),
            task=_enum_name(pb.Task, route.task, "TASK_"),
            complexity=_enum_name(pb.Complexity, route.complexity, "COMPLEXITY_"),
            basis=_enum_name(pb.RouteBasis, route.basis, "ROUTE_BASIS_"),
            reason=route.reason,
            estimated_input_tokens=route.estimated_input_tokens,
            max_tokens=route.max_tokens,
            cost_min=usd(route.estimated_cost.min),
            cost_max=usd(route.estimated_cost.max),
            # A gateway that predates admission control admits everything.
            admitted=route.admission.admitted or not route.HasField("admission"),
            raw=route,
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """What a completed call took: the same for Query and for a finished stream."""

    model: str
    provider: str
    usage: Usage
    cost: Decimal
    attempts: tuple[Attempt, ...]
    finish_reason: str
    cached: bool
    latency_ms: int
    request_id: str
    time_to_first_token_ms: int | None = None  # streams only


@dataclass(frozen=True, slots=True)
class Answer:
    """One complete answer from Query."""

    text: str
    summary: Summary
    route: Route
    raw: pb.QueryResponse

    @classmethod
    def from_proto(cls, response: pb.QueryResponse) -> Answer:
        """From the contract's QueryResponse."""
        summary = Summary(
            model=response.model,
            provider=response.provider,
            usage=Usage.from_proto(response.usage),
            cost=usd(response.cost),
            attempts=tuple(Attempt.from_proto(a) for a in response.attempts),
            finish_reason=_enum_name(pb.FinishReason, response.finish_reason, "FINISH_REASON_"),
            cached=response.cached,
            latency_ms=response.latency_ms,
            request_id=response.request_id,
        )
        return cls(response.content, summary, Route.from_proto(response.route), response)

    @property
    def model(self) -> str:
        """The model that answered."""
        return self.summary.model

    @property
    def usage(self) -> Usage:
        """Tokens billed, over every attempt."""
        return self.summary.usage

    @property
    def cost(self) -> Decimal:
        """Exact cost in US dollars, over every attempt."""
        return self.summary.cost


def stream_summary(start: pb.StreamStart, end: pb.StreamEnd) -> Summary:
    """The Summary of a completed stream, from its first and last messages."""
    return Summary(
        model=start.model,
        provider=start.provider,
        usage=Usage.from_proto(end.usage),
        cost=usd(end.cost),
        attempts=tuple(Attempt.from_proto(a) for a in end.attempts),
        finish_reason=_enum_name(pb.FinishReason, end.finish_reason, "FINISH_REASON_"),
        cached=end.cached,
        latency_ms=end.latency_ms,
        request_id=start.request_id,
        time_to_first_token_ms=end.time_to_first_token_ms,
    )
