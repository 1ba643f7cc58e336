"""What calls return: answers, stream summaries and routes as plain values.

Money arrives as ``google.type.Money``; here it is a ``Decimal`` of US
dollars, exact to the nano-dollar. Each value keeps the message it came from
in ``raw`` for the fields this module does not surface.

An answer that asked for tool calls carries them (``tool_calls``, arguments
as a dict) with the model's ``reasoning``; ``next_messages(results)`` is the
conversation to send next, so a tool round trip is two calls and one dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from google.type import money_pb2
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.conversation import (
    Message,
    Thought,
    ToolCall,
    ToolResults,
    follow_up,
    thought_from_proto,
)

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
    reasoning_tokens: int = 0  # of output_tokens, those spent thinking (OpenAI wire reports it)
    cache_write_input_tokens: int = 0  # of input_tokens, those written to the prompt cache

    @classmethod
    def from_proto(cls, usage: pb.Usage) -> Usage:
        """From the contract's Usage."""
        return cls(
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
            usage.estimated,
            usage.reasoning_tokens,
            usage.cache_write_input_tokens,
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
    # Models the route or its fallbacks left out, each with why: (model, reason)
    skipped: tuple[tuple[str, str], ...] = ()

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
            skipped=tuple((skip.model, skip.reason) for skip in route.skipped_models),
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
    # With a JSON response format: "VALID" or "INVALID" (validation_error says where);
    # None when nothing was checked.
    validation: str | None = None
    validation_error: str = ""


def _validation(value: int) -> str | None:
    if value == pb.OUTPUT_VALIDATION_UNSPECIFIED:
        return None
    return _enum_name(pb.OutputValidation, value, "OUTPUT_VALIDATION_")


@dataclass(frozen=True, slots=True)
class Answer:
    """One complete answer from Query: its text, or the tool calls it asks for.

    Example::

        answer = client.query("Weather in Lisbon?", tools=[weather])
        if answer.tool_calls:
            results = {call.id: get_weather(**call.arguments) for call in answer.tool_calls}
            answer = client.reply(answer, results)  # same options, the conversation grown
        print(answer.text)
    """

    text: str
    summary: Summary
    route: Route
    raw: pb.QueryResponse
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: tuple[Thought, ...] = ()  # send back unchanged: next_messages() does
    request: pb.QuerySpec | None = None  # the query this answers, for next_messages()

    @classmethod
    def from_proto(cls, response: pb.QueryResponse, request: pb.QuerySpec | None = None) -> Answer:
        """From the contract's QueryResponse (and the query it answers, when known)."""
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
            validation=_validation(response.validation),
            validation_error=response.validation_error,
        )
        return cls(
            response.content,
            summary,
            Route.from_proto(response.route),
            response,
            # most answers have neither: no generator for them
            tuple(map(ToolCall.from_proto, response.tool_calls)) if response.tool_calls else (),
            tuple(map(thought_from_proto, response.reasoning)) if response.reasoning else (),
            request,
        )

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

    @property
    def finish_reason(self) -> str:
        """Why the model stopped: "STOP", "LENGTH", "CONTENT_FILTER" or "TOOL_CALLS"."""
        return self.summary.finish_reason

    @property
    def validation(self) -> str | None:
        """With a JSON response format: "VALID" or "INVALID"; None when not checked."""
        return self.summary.validation

    def json(self) -> Any:
        """The text parsed as JSON (for a JSON response format); ValueError if it is not."""
        return json.loads(self.text)

    def next_messages(
        self, results: ToolResults | None = None, *, prompt: str | None = None
    ) -> list[Message]:
        """The conversation to send next: the query's messages, this answer (reasoning,
        text, tool calls), the tool `results` by call id, then `prompt` if given."""
        return follow_up(
            self.request, self.text, self.reasoning, self.tool_calls, results=results, prompt=prompt
        )


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
        validation=_validation(end.validation),
        validation_error=end.validation_error,
    )
