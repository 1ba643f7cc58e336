"""The gateway's own vocabulary: what a call asks for and what it produced.

These types are what every stage of the pipeline sees. They hold no protobuf
and no wire JSON: ``convert.py`` maps them to and from the contract, and the
relay translators map them to and from each provider's wire format. This
module imports nothing of Switchyard's but ``fastinit.py`` (which imports nothing): every
other module may import it. The values built for every call are `fast_init`-ed: frozen
as the others, at half the cost to build.

Money is carried as integer nano-dollars. A `Price` holds whole nano-dollars
per token; every cost computed from one lives in ``pricing.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeAlias

from opentelemetry.trace import INVALID_SPAN, Span

from server.fastinit import fast_init

NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per million tokens
# $1 per million tokens is 1,000 nano-dollars per token.
_NANOS_PER_TOKEN_PER_USD_PER_MILLION = NANOS_PER_USD // TOKENS_PER_PRICE_UNIT
PRICE_QUANTUM = Decimal("0.001")  # the finest price that keeps costs whole nanos


class _Enum(enum.Enum):
    """An enum hashed by identity, in C.

    Enum's own `__hash__` is Python (`hash(self._name_)`), a function call for every
    dict lookup keyed by a member, and the call path makes a few dozen (converting to
    the contract, routing). A member is equal only to itself, so its identity hash
    keeps dicts and sets right.
    """

    __hash__ = object.__hash__

    def __init__(self, value: str) -> None:
        # Every member's value is a string. `.value` is a Python property (0.25 us a
        # read); `.text` is the same string as a plain attribute, for the call path.
        self.text = value


class Role(_Enum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"  # the results of the tool calls of the assistant message before it


class Task(_Enum):
    """The kind of work a call asks for; each task has a default model."""

    REASONING = "reasoning"
    CREATIVE = "creative"
    FAST = "fast"
    BATCH = "batch"


class Complexity(_Enum):
    """How demanding the router judged a call."""

    SIMPLE = "simple"
    MEDIUM = "medium"
    COMPLEX = "complex"


class RouteBasis(_Enum):
    """What decided the model."""

    MODEL = "model"
    TASK = "task"
    COMPLEXITY = "complexity"


class FinishReason(_Enum):
    """Why the model stopped producing text."""

    UNKNOWN = "unknown"
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"  # the answer is tool calls; their results are awaited


class CacheMode(_Enum):
    """How a call may use the response cache."""

    DEFAULT = "default"  # read and write when the call is cacheable
    BYPASS = "bypass"  # neither read nor write
    REFRESH = "refresh"  # do not read; store the fresh answer


class CacheUse(_Enum):
    """What the response cache did for one call (for the ledger and the answer)."""

    NONE = "none"  # not cacheable, or bypassed
    HIT = "hit"  # answered from the cache or from an identical call in flight
    MISS = "miss"  # looked up, not found: a model was asked
    REFRESH = "refresh"  # not looked up on purpose; the fresh answer was stored


class Outcome(_Enum):
    """How one attempt on one model ended."""

    SUCCESS = "success"
    RETRYABLE_ERROR = "retryable_error"
    FINAL_ERROR = "final_error"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    INVALID_OUTPUT = "invalid_output"  # answered, but not in the requested JSON format


class Feature(_Enum):
    """What a request may need of a model beyond text; the catalog says which model has
    which (`ModelSpec.features`), and the router sends a request only where all fit."""

    TOOLS = "tools"  # tool definitions, or tool calls and results in the conversation
    IMAGES = "images"  # image parts
    JSON_SCHEMA = "json_schema"  # an answer that must fit a JSON Schema
    REASONING = "reasoning"  # a reasoning effort or a thinking budget


class ToolChoiceMode(_Enum):
    """Whether and which tools the model must call."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    TOOL = "tool"  # the one named in ToolChoice.name


class ResponseKind(_Enum):
    """The shape an answer's text must have."""

    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


class ReasoningEffort(_Enum):
    """How much a reasoning model may think (OpenAI's names)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Validation(_Enum):
    """Whether an answer's text has the requested JSON format."""

    UNCHECKED = "unchecked"  # no JSON format was asked for, or the answer is tool calls
    VALID = "valid"
    INVALID = "invalid"


class CircuitState(_Enum):
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

    `cached_input_nanos` None means cached input costs the same as input, and
    `cache_write_nanos` None that prompt-cache writes do.
    """

    input_nanos: int
    output_nanos: int
    cached_input_nanos: int | None = None
    cache_write_nanos: int | None = None

    @classmethod
    def per_million(
        cls,
        input_usd: Decimal,
        output_usd: Decimal,
        cached_input_usd: Decimal | None = None,
        cache_write_usd: Decimal | None = None,
    ) -> Price:
        """Build a price from USD per million tokens (see `nanos_per_token`)."""
        cached = None if cached_input_usd is None else nanos_per_token(cached_input_usd)
        write = None if cache_write_usd is None else nanos_per_token(cache_write_usd)
        return cls(nanos_per_token(input_usd), nanos_per_token(output_usd), cached, write)


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
    price), `cache_write_price` the input tokens it wrote to that cache (None:
    the input price). `tasks` are the tasks the model can serve besides its
    own, which budget-aware routing may send to it when a caller is near its
    budget. `wire` names the relay's wire format for it (``relay/wires.py``).
    `tools`, `images`, `json_schema` and `reasoning` say what the model takes
    beyond text (`features` holds the same as a set, for the router).
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
    tools: bool = True
    images: bool = True
    json_schema: bool = True
    reasoning: bool = False
    cache_write_price: Decimal | None = None
    price: Price = field(init=False, repr=False, compare=False)
    features: frozenset[Feature] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        price = Price.per_million(
            self.input_price, self.output_price, self.cached_input_price, self.cache_write_price
        )
        object.__setattr__(self, "price", price)
        features = frozenset(f for f in Feature if getattr(self, f.value))
        object.__setattr__(self, "features", features)

    def serves(self, task: Task) -> bool:
        """Can this model serve `task` (its own, or one of `tasks`)?"""
        return task is self.task or task in self.tasks


@fast_init
@dataclass(frozen=True, slots=True)
class TextPart:
    """Plain text, the one kind of content every model takes."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """A picture: its encoded bytes and media type, or a URL the provider fetches
    (then `data` is empty and `media_type` may be)."""

    media_type: str
    data: bytes = b""
    url: str = ""


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A tool call the model made: in an answer, and sent back in the next turn's
    assistant message. `arguments` is a JSON object (``{}`` for none)."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    """What the tool call `tool_call_id` returned (a ROLE_TOOL message holds these)."""

    tool_call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ReasoningPart:
    """A model's thinking, with the provider's signature over it: sent back exactly
    as received, or Anthropic refuses the next turn."""

    text: str
    signature: str = ""


@dataclass(frozen=True, slots=True)
class RedactedReasoningPart:
    """Thinking the provider encrypted: opaque data, sent back exactly as received."""

    data: str


# Every kind of content a message can hold. A new kind joins this union; each
# exhaustive `match` over parts (the wire translators, the token estimate, the
# cache key, the contract) then fails type-checking until it says what the new
# kind means there.
Part: TypeAlias = (
    TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart | RedactedReasoningPart
)
# The reasoning an answer carries, in the order produced.
Reasoning: TypeAlias = ReasoningPart | RedactedReasoningPart


@fast_init
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
            part = parts[0]
            return part.text if type(part) is TextPart else ""
        return "".join([part.text for part in parts if type(part) is TextPart])


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: its name, what it does, and the JSON Schema
    (an object schema) of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether and which tools the model must call; `name` with ToolChoiceMode.TOOL."""

    mode: ToolChoiceMode
    name: str = ""


AUTO_TOOL_CHOICE = ToolChoice(ToolChoiceMode.AUTO)


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The shape an answer's text must have; `schema` with ResponseKind.JSON_SCHEMA."""

    kind: ResponseKind
    name: str = "response"
    schema: Mapping[str, Any] | None = None
    strict: bool = False

    @property
    def json(self) -> bool:
        """Must the answer be a JSON object (with or without a schema)?"""
        return self.kind is not ResponseKind.TEXT


@fast_init
@dataclass(frozen=True, slots=True)
class Request:
    """What the caller asked for, validated; identical for all three RPCs.

    `features` (what a model must support to answer it) and `plain` (text in,
    text out: only text parts, no tools, JSON format or reasoning) are derived
    from the rest, once: the router reads the one, the response cache the other.
    """

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
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None  # None: the provider's default (auto)
    parallel_tool_calls: bool | None = None  # None: the provider's default (allowed)
    response_format: ResponseFormat | None = None  # None: free text
    reasoning_effort: ReasoningEffort | None = None
    thinking_budget: int | None = None  # tokens; set this or reasoning_effort
    features: frozenset[Feature] = field(init=False, repr=False, compare=False)
    plain: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        features: set[Feature] = set()
        plain = True
        for message in self.messages:
            for part in message.parts:
                kind = type(part)
                if kind is TextPart:
                    continue
                plain = False
                if kind is ImagePart:
                    features.add(Feature.IMAGES)
                elif kind is ToolCallPart or kind is ToolResultPart:
                    features.add(Feature.TOOLS)
        if self.tools:
            features.add(Feature.TOOLS)
        fmt = self.response_format
        if fmt is not None and fmt.kind is ResponseKind.JSON_SCHEMA:
            features.add(Feature.JSON_SCHEMA)
        if self.reasoning_effort is not None or self.thinking_budget is not None:
            features.add(Feature.REASONING)
        if features or (fmt is not None and fmt.kind is not ResponseKind.TEXT):
            plain = False
        object.__setattr__(self, "features", frozenset(features) if features else _NO_FEATURES)
        object.__setattr__(self, "plain", plain)


_NO_FEATURES: frozenset[Feature] = frozenset()


@fast_init
@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens billed. `estimated` is set when the relay reported no usage.

    `cached_input_tokens` is the part of `input_tokens` the provider served
    from its prompt cache, billed at the model's cached-input price, and
    `cache_write_tokens` the part it wrote to that cache, billed at the
    cache-write price. `reasoning_tokens` is the part of `output_tokens` the
    model spent thinking, as reported (billed as output like the rest).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0  # of output_tokens: spent reasoning (billed as output)
    cache_write_tokens: int = 0  # of input_tokens: written to the prompt cache

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.estimated or other.estimated,
            self.cached_input_tokens + other.cached_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class SkippedModel:
    """A model the router left out of a route, and why (for Route and traces)."""

    model: str
    reason: str


@fast_init
@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a call goes, why, and the cost range on the chosen model.

    `skipped` lists the models the route or its fallbacks would have included
    but left out (a feature the request needs, a context window too small).
    """

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
    skipped: tuple[SkippedModel, ...] = ()

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


@fast_init
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


@fast_init
@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer. Streams end with one whose `content` is empty (the text
    went out as deltas) but whose tool calls and reasoning are complete.

    `validation` says whether `content` (a stream: its text) has the requested
    JSON format, and `validation_error` where it fails.
    """

    model: ModelSpec
    content: str
    usage: Usage
    finish_reason: FinishReason
    tool_calls: tuple[ToolCallPart, ...] = ()
    reasoning: tuple[Reasoning, ...] = ()
    validation: Validation = Validation.UNCHECKED
    validation_error: str = ""


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Marks the point of no return of a stream: text from `model` follows."""

    model: ModelSpec


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of a streamed answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A streamed tool call begins: `index` counts the answer's calls from 0."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """The next fragment of a streamed tool call's arguments (JSON text, cut anywhere)."""

    index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    """A streamed tool call is complete; `call.arguments` are parsed (a JSON object)."""

    index: int
    call: ToolCallPart


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """The next piece of the reasoning part `index`: thinking text, its signature
    (once, when the part is complete), or a redacted part's data whole."""

    index: int
    text: str = ""
    signature: str = ""
    redacted_data: str = ""


# A stream yields StreamStart once, then TextDeltas (and, for tools and
# reasoning, their events in the order produced), then one Completion. Consumers
# dispatch with an exhaustive `match`, so a new kind of event is a type error
# wherever it is not yet handled.
StreamEvent: TypeAlias = (
    StreamStart
    | TextDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | ReasoningDelta
    | Completion
)


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


@fast_init
@dataclass(frozen=True, slots=True)
class ModelCall:
    """A call narrowed to one model: what the fallback stage hands each try."""

    call: Call
    model: ModelSpec
    max_tokens: int
