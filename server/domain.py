"""The gateway's own vocabulary: what a call asks for and what it produced.

These types are what every stage of the pipeline sees. They hold no protobuf
and no wire JSON: ``convert.py`` maps them to and from the contract, and the
relay translators map them to and from each provider's wire format. This
module imports nothing of Switchyard's: every other module may import it.

Money is carried as integer nano-dollars. A `Price` holds whole nano-dollars
per token; every cost computed from one lives in ``pricing.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeAlias

from opentelemetry.trace import INVALID_SPAN, Span

NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per million tokens
# $1 per million tokens is 1,000 nano-dollars per token.
_NANOS_PER_TOKEN_PER_USD_PER_MILLION = NANOS_PER_USD // TOKENS_PER_PRICE_UNIT
PRICE_QUANTUM = Decimal("0.001")  # the finest price that keeps costs whole nanos


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


class CircuitState(enum.Enum):
    """Where a model's circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitStatus:
    """A breaker's state now, and seconds until a probe is allowed (0 unless open)."""

    state: CircuitState
    retry_in: float = 0.0


CIRCUIT_CLOSED = CircuitStatus(CircuitState.CLOSED)


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price, held as whole nano-dollars per token.

    `cached_input_nanos` None means cached input costs the same as input.
    """

    input_nanos: int
    output_nanos: int
    cached_input_nanos: int | None = None

    @classmethod
    def per_million(
        cls, input_usd: Decimal, output_usd: Decimal, cached_input_usd: Decimal | None = None
    ) -> Price:
        """Build a price from USD per million tokens (see `nanos_per_token`)."""
        cached = None if cached_input_usd is None else nanos_per_token(cached_input_usd)
        return cls(nanos_per_token(input_usd), nanos_per_token(output_usd), cached)


def nanos_per_token(usd_per_million: Decimal) -> int:
    """Convert USD per million tokens to nano-dollars per token, exactly.

    Raises ValueError for negative prices or prices finer than $0.001 per
    million tokens, which could not be carried exactly.
    """
    if not usd_per_million.is_finite() or usd_per_million < 0:
        raise ValueError(f"price must be a non-negative number, got {usd_per_million}")
    nanos = usd_per_million * _NANOS_PER_TOKEN_PER_USD_PER_MILLION
    if nanos != nanos.to_integral_value():
        raise ValueError(
            f"price {usd_per_million} USD per 1M tokens is finer than {PRICE_QUANTUM}; "
            "round it to 3 decimal places"
        )
    return int(nanos)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of the catalog (``catalog.py`` holds the served ones).

    Prices are USD per million tokens; `price` holds the same as exact
    nano-dollars per token for the hot path. `cached_input_price` prices the
    input tokens a provider served from its prompt cache (None: the input
    price). `tasks` are the tasks the model can serve besides its own, which
    budget-aware routing may send to it when a caller is near its budget.
    `wire` names the relay's wire format for it (``relay/wires.py``).
    """

    name: str
    task: Task
    provider: str
    wire: str
    input_price: Decimal
    output_price: Decimal
    max_concurrent: int
    fallbacks: tuple[str, ...]
    default_max_tokens: int
    context_window: int
    rpm: int = 0  # the model's requests-per-minute budget; 0: none of its own
    tpm: int = 0  # the model's tokens-per-minute budget; 0: none of its own
    cached_input_price: Decimal | None = None
    tasks: tuple[Task, ...] = ()
    price: Price = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        price = Price.per_million(self.input_price, self.output_price, self.cached_input_price)
        object.__setattr__(self, "price", price)

    def serves(self, task: Task) -> bool:
        """Can this model serve `task` (its own, or one of `tasks`)?"""
        return task is self.task or task in self.tasks


@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text, the one kind of content every model takes."""

    text: str


# Every kind of content a message can hold. A new kind (an image, a tool call)
# joins this union; each exhaustive `match` over parts (the wire translators,
# the token estimate, the cache key) then fails type-checking until it says
# what the new kind means there.
Part: TypeAlias = TextPart


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation: who wrote it, and its content as parts."""

    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def of(cls, role: Role, text: str) -> Message:
        """A message of one text part."""
        return cls(role, (TextPart(text),))

    @property
    def text(self) -> str:
        """The text parts, joined (what routing reads and the estimate counts)."""
        parts = self.parts
        if len(parts) == 1:
            return parts[0].text
        return "".join([part.text for part in parts])


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


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of a streamed answer's text."""

    text: str


# A stream yields StreamStart once, then TextDeltas, then one Completion (whose
# content is empty: the text went out as deltas). Consumers dispatch with an
# exhaustive `match`, so a new kind of event (a tool call, reasoning) is a
# type error wherever it is not yet handled.
StreamEvent: TypeAlias = StreamStart | TextDelta | Completion


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What a tenant may do and spend (the admin API sets it; none-auth mode reads TOML).

    Budgets in nano-dollars per UTC day and month (None: no budget); `rpm` and
    `tpm` its own request and token budgets a minute (0: none); `models` the
    models it may use (empty: all); `labels` added to each of its calls.
    """

    day_budget: int | None = None
    month_budget: int | None = None
    rpm: int = 0
    tpm: int = 0
    models: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)

    def allows(self, model: str) -> bool:
        """May the tenant use `model`?"""
        return not self.models or model in self.models


OPEN_POLICY = TenantPolicy()


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, resolved once at the RPC boundary (``identity.py``).

    `tenant` is who pays: budgets, spend, limits and the cache scope belong
    to it, under its `policy` (a directory tenant's; None when callers name
    themselves, whose budgets are the TOML file's). `key_id` names the credential used (None
    without one); `user` is an end-user label the caller may attach, recorded
    but never trusted. `admin` is set for the operator's credentials only.
    """

    tenant: str
    key_id: str | None = None
    user: str | None = None
    policy: TenantPolicy | None = None  # None: none of its own (the TOML [budgets] apply)
    admin: bool = False


@dataclass(slots=True, eq=False)
class Call:
    """One RPC on its way through the pipeline.

    The request and the caller's identity are immutable; the rest is filled
    in as the call advances: the router sets `route`, every relay attempt
    appends to `attempts`. `started` and `deadline` are monotonic instants.
    `span` is the RPC's SERVER span: stages hang their spans and events on it
    (the API's no-op span when tracing is off).
    """

    request: Request
    request_id: str
    identity: Identity
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
