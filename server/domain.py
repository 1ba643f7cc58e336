"""The gateway's own vocabulary: what a call asks for and what it produced.

These types are what every stage of the pipeline sees. They hold no protobuf
and no wire JSON: ``convert.py`` maps them to and from the contract, and the
relay translators map them to and from each provider's wire format.

Money is carried as integer nano-dollars (see ``pricing.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from opentelemetry.trace import INVALID_SPAN, Span

if TYPE_CHECKING:
    from server.catalog import ModelSpec


class Role(enum.Enum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class Task(enum.Enum):
    """The kind of work a call asks for; each task has a default model."""

    REASONING = "reasoning"
    CREATIVE = "creative"
    FAST = "fast"
    BATCH = "batch"


class Complexity(enum.Enum):
    """How demanding the router judged a call."""

    SIMPLE = "simple"
    MEDIUM = "medium"
    COMPLEX = "complex"


class RouteBasis(enum.Enum):
    """What decided the model."""

    MODEL = "model"
    TASK = "task"
    COMPLEXITY = "complexity"


class FinishReason(enum.Enum):
    """Why the model stopped producing text."""

    UNKNOWN = "unknown"
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"


class CacheMode(enum.Enum):
    """How a call may use the response cache."""

    DEFAULT = "default"  # read and write when the call is cacheable
    BYPASS = "bypass"  # neither read nor write
    REFRESH = "refresh"  # do not read; store the fresh answer


class CacheUse(enum.Enum):
    """What the response cache did for one call (for the ledger and the answer)."""

    NONE = "none"  # not cacheable, or bypassed
    HIT = "hit"  # answered from the cache or from an identical call in flight
    MISS = "miss"  # looked up, not found: a model was asked
    REFRESH = "refresh"  # not looked up on purpose; the fresh answer was stored


class Outcome(enum.Enum):
    """How one attempt on one model ended."""

    SUCCESS = "success"
    RETRYABLE_ERROR = "retryable_error"
    FINAL_ERROR = "final_error"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Request:
    """What the caller asked for, validated; identical for all three RPCs."""

    messages: tuple[Message, ...]
    task: Task | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    fallback: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    cache_mode: CacheMode = CacheMode.DEFAULT


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens billed. `estimated` is set when the relay reported no usage.

    `cached_input_tokens` is the part of `input_tokens` the provider served
    from its prompt cache, billed at the model's cached-input price.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    cached_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.estimated or other.estimated,
            self.cached_input_tokens + other.cached_input_tokens,
        )


NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a call goes, why, and the cost range on the chosen model."""

    model: ModelSpec
    fallbacks: tuple[ModelSpec, ...]
    task: Task
    complexity: Complexity
    basis: RouteBasis
    reason: str
    input_tokens: int
    chain_max_tokens: tuple[int, ...]  # effective max_tokens of each model of `chain`
    cost_min: int
    cost_max: int

    @property
    def chain(self) -> tuple[ModelSpec, ...]:
        """The models to try, in order: the chosen one, then its fallbacks."""
        return (self.model, *self.fallbacks)

    @property
    def max_tokens(self) -> int:
        """The max_tokens the chosen model is called with."""
        return self.chain_max_tokens[0]


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a caller's budgets let a call run now, and why not."""

    admitted: bool
    reason: str = ""


ADMITTED = Admission(True)


@dataclass(frozen=True, slots=True)
class BudgetPressure:
    """A caller near one of its budgets: the router may pick a cheaper model."""

    period: str  # "day" or "month"
    spent: int  # nano-dollars, calls in flight included
    limit: int  # nano-dollars


@dataclass(frozen=True, slots=True)
class Attempt:
    """The record of one try of one model."""

    model: ModelSpec
    outcome: Outcome
    latency: float
    http_status: int = 0
    error: str = ""
    usage: Usage = NO_USAGE
    cost: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer. Streams end with one whose `content` is empty."""

    model: ModelSpec
    content: str
    usage: Usage
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Marks the point of no return of a stream: text from `model` follows."""

    model: ModelSpec


# A stream yields StreamStart once, then text deltas (str), then one Completion.
StreamEvent: TypeAlias = "StreamStart | str | Completion"


@dataclass(slots=True, eq=False)
class Call:
    """One RPC on its way through the pipeline.

    The request is immutable; the rest is filled in as the call advances:
    the router sets `route`, every relay attempt appends to `attempts`.
    `span` is the RPC's SERVER span: stages hang their spans and events on it
    (the API's no-op span when tracing is off).
    """

    request: Request
    request_id: str
    caller: str
    started: float
    deadline: float | None
    route: RouteDecision | None = None
    attempts: list[Attempt] = field(default_factory=list)
    cache: CacheUse = CacheUse.NONE
    saved_cost: int = 0  # on a cache hit: what the answer cost when first produced
    first_token_at: float | None = None
    span: Span = INVALID_SPAN

    @property
    def cached(self) -> bool:
        """True when the answer came from the response cache (and cost nothing)."""
        return self.cache is CacheUse.HIT

    def remaining(self, now: float) -> float | None:
        """Seconds left before the caller's deadline (None when unbounded)."""
        return None if self.deadline is None else self.deadline - now

    @property
    def cost(self) -> int:
        """What the call cost so far: every billed attempt, in nano-dollars."""
        return sum(attempt.cost for attempt in self.attempts)

    @property
    def usage(self) -> Usage:
        """Tokens billed so far, summed over every attempt."""
        total = NO_USAGE
        for attempt in self.attempts:
            total = total + attempt.usage
        return total


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A call narrowed to one model: what the fallback stage hands each try."""

    call: Call
    model: ModelSpec
    max_tokens: int
