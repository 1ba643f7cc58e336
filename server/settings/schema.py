"""The settings schema: frozen dataclasses, one per section, with their defaults.

Nothing here reads a source or validates: ``sources.py`` turns the
environment and the TOML file into these, ``catalog.py`` merges the
[models.*] tables onto the built-in catalog, ``validation.py`` checks the
whole once at start-up.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from server.catalog import Catalog, default_catalog

DEFAULT_KEYWORDS = (
    "분석", "비교", "평가", "논리", "추론", "코드", "알고리즘",
    "analyze", "analyse", "compare", "evaluate", "logic", "reasoning", "code", "algorithm",
)  # fmt: skip


class ConfigError(Exception):
    """Bad configuration; `key` names the offending setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The gRPC listener and process behaviour."""

    listen: str = "127.0.0.1:50051"
    shutdown_grace: float = 10.0  # seconds in-flight calls get after SIGTERM
    log_level: str = "INFO"
    workers: int = 1  # gateway processes sharing the port, supervised (server/workers.py)
    worker_index: int = 0  # set by the supervisor in its workers' environment (1..N); 0: none


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where the relay is and how long to wait for it.

    `url` None means: start the embedded relay simulator.
    """

    url: str | None = None
    api_key: str = field(default="", repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0  # longest silence allowed between two chunks
    timeout: float = 300.0  # longest attempt when the caller sets no deadline
    max_connections: int = 256


DEFAULT_PROVIDER_CONCURRENCY = MappingProxyType({"anthropic": 10, "openai": 20, "google": 30})


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Switchyard's own budgets and concurrency caps."""

    relay_rpm: int = 500  # relay requests per minute, all models together
    relay_burst: int = 50  # of which this many may come at once
    max_waiters: int = 1000  # tries allowed to queue for each limit; more are refused
    max_wait: float = 10.0  # longest queueing for capacity, even for calls without a deadline
    provider_concurrency: Mapping[str, int] = field(
        default_factory=lambda: DEFAULT_PROVIDER_CONCURRENCY
    )
    other_provider_concurrency: int = 5  # for providers not named above
    # Fair shares of a full concurrency cap: tenant -> weight (others 1); see state/gates.py.
    tenant_weights: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Distinct callers kept in memory (usage totals, default budgets, tenants' rate gates);
    # the least recently seen go first.
    max_callers: int = 10_000
    # The most work one call may ask for, checked before any per-message work
    # (server/convert.py). Measured so that converting and estimating the largest
    # allowed call costs a few milliseconds of the event loop (about 5 ms on the
    # development machine; routing and encoding it for the relay take as much again).
    max_messages: int = 1000  # messages per call, the prompt and the system text included
    max_text_bytes: int = 1024 * 1024  # UTF-8 bytes of text per call (about 262,000 tokens)
    max_parts: int = 2000  # content parts per call (a text-only message is one)
    # Bytes of tool definitions and response schema per call (query.tools and
    # query.response_format as sent): about 2,000 schema properties, turned into JSON and
    # checked against their meta-schema in a few milliseconds.
    max_schema_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Retries of one model before the fallback stage moves on."""

    max_attempts: int = 3  # tries per model, the first included
    base_delay: float = 0.1  # backoff: full jitter over base * 2^n ...
    max_delay: float = 2.0  # ... capped here
    max_retry_after: float = 10.0  # a longer Retry-After sends the call to the next model
    budget_ratio: float = 0.2  # retries may add at most this share of recent tries ...
    budget_min_per_second: float = 5.0  # ... but this many a second are always allowed
    budget_window: float = 10.0  # seconds of history the retry budget looks at


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Per-model circuit breakers."""

    failures: int = 5  # consecutive failed tries that open a model's circuit
    cooldown: float = 30.0  # seconds an open circuit skips the model before one probe


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """How AUTO routing judges complexity and sizes max_tokens."""

    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    complex_words: int = 200  # more words than this: complex
    complex_keywords: int = 3  # or at least this many keyword hits
    medium_words: int = 50
    medium_keywords: int = 1
    long_prompt_words: int = 500  # longer prompts get 1.5x the default max_tokens
    max_tokens_cap: int = 16_000
    # A unary answer that fails its JSON Schema: "fallback" counts it a failed attempt
    # (the next model is asked), "report" returns it marked invalid, "off" checks nothing.
    validate_json: str = "fallback"


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The exact-match response cache (see ``server/state/responses.py``)."""

    enabled: bool = True
    ttl: float = 3600.0  # seconds an answer is served after it was produced
    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024  # answers, keys and bookkeeping, estimated


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """One caller's spend budgets in nano-dollars; None means no budget for that period."""

    day: int | None = None
    month: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """Per-tenant spend budgets (UTC days and months), exact to the nano-dollar.

    `callers` maps a tenant (today: the caller's self-declared name) to its
    own limits; every other tenant gets `default`. `downgrade_at` (a fraction
    of a budget, e.g. 0.8) turns on budget-aware routing: AUTO calls of a
    tenant whose spend reached that fraction of a budget go to a cheaper model
    that serves the task.
    """

    default: BudgetLimits = BudgetLimits()
    callers: Mapping[str, BudgetLimits] = field(default_factory=lambda: types.MappingProxyType({}))
    downgrade_at: Decimal | None = None

    def limits(self, tenant: str) -> BudgetLimits:
        """The budgets that apply to `tenant`."""
        return self.callers.get(tenant, self.default)


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """The embedded relay simulator, used when no relay URL is configured."""

    latency_scale: float = 1.0
    tokens_per_second: float = 60.0


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Switchyard's own telemetry options; exporters follow the OTEL_* variables."""

    console: bool = False  # print every exported span to stdout, for local debugging
    prometheus_port: int = 0  # serve /metrics on 127.0.0.1:<port> for Prometheus; 0: off
    capture_content: bool = False  # record prompts and completions on model-call spans
    # Callers named on metrics (none-auth mode); later ones share switchyard.caller="_other".
    metric_callers: int = 100
    trace_keep: str = "errors,fallbacks,retries,limits,slow,10%"  # see `parse_trace_keep`
    trace_slow: float = 5.0  # seconds to a call's first text past which it is "slow"


TRACE_KEEP_REASONS = ("errors", "fallbacks", "retries", "limits", "slow")


@dataclass(frozen=True, slots=True)
class TraceKeep:
    """Which traces are exported, decided when each call ends (SWITCHYARD_TRACE_KEEP).

    Each flag keeps every trace whose call had that trouble; `share` (0 to 1)
    keeps that fraction of the others, chosen by trace id. `all` is every flag
    and share 1.
    """

    errors: bool = False
    fallbacks: bool = False
    retries: bool = False
    limits: bool = False
    slow: bool = False
    share: float = 0.0


def parse_trace_keep(text: str) -> TraceKeep:
    """SWITCHYARD_TRACE_KEEP: reasons and at most one share, comma-separated.

    ``errors,fallbacks,retries,limits,slow,10%`` (the default) keeps every call
    with one of those troubles plus a tenth of the rest; ``all`` keeps every
    trace; ``5%`` keeps only a share; ``0%`` keeps only traces the caller sampled.
    """
    where = "SWITCHYARD_TRACE_KEEP"
    expected = f"expected {', '.join(TRACE_KEEP_REASONS)}, all, or a share such as 10%"
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(
            where, f"names nothing to keep; {expected} (0% keeps only traces callers sampled)"
        )
    flags = dict.fromkeys(TRACE_KEEP_REASONS, False)
    share: float | None = None
    for item in items:
        if item in flags:
            flags[item] = True
        elif item == "all":  # every trace, still labelled with the troubles it had
            share = 1.0 if share is None else _second_share(where, item)
            flags = dict.fromkeys(TRACE_KEEP_REASONS, True)
        elif item.endswith("%"):
            if share is not None:
                _second_share(where, item)
            share = _percent(where, item)
        else:
            hint = " (write a share as a percentage, such as 10%)" if _is_number(item) else ""
            raise ConfigError(where, f"unknown item {item!r}{hint}; {expected}")
    return TraceKeep(**flags, share=0.0 if share is None else share)


def _percent(where: str, item: str) -> float:
    number = item.removesuffix("%").strip()
    if not _is_number(number) or not 0 <= float(number) <= 100:
        raise ConfigError(where, f"the share {item!r} must be a percentage from 0% to 100%")
    return float(number) / 100


def _second_share(where: str, item: str) -> float:
    raise ConfigError(where, f"{item!r} is a second share; give one share (or all) at most")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.replace(".", "", 1).isdigit()


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The durable ledger (see ``server/state/sql/``) and where it keeps its files.

    `database_url` empty means SQLite in `data_dir`; "memory" keeps today's
    in-memory ledger. Every settled call is appended to a journal in
    `data_dir` and written to the database every `flush_interval` seconds or
    `batch_size` calls, whichever comes first.
    """

    database_url: str = field(default="", repr=False)  # may hold a password: never printed
    data_dir: str = ".switchyard"
    retention_days: int = 90  # older calls are folded into hourly totals, then deleted
    flush_interval: float = 1.0
    batch_size: int = 500
    budgets_until_seeded: str = "refuse"  # or "admit": before spend is read back from the ledger


AUTH_MODES = ("none", "api_key", "mtls")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may call, and how they prove it (see ``server/identity.py``).

    `mode` empty means unset: `none` on a loopback address, and a refusal to
    start on any other unless it is set explicitly. `admin_key` (environment
    only) opens the admin API. `rotation_grace` is how long a rotated key's
    old secret keeps working unless the rotation says otherwise. Past
    `failure_limit` failed authentications a minute, a peer address is refused
    (RESOURCE_EXHAUSTED) except with a key this replica has recently seen.
    """

    mode: str = ""
    admin_key: str = field(default="", repr=False)
    rotation_grace: float = 86_400.0
    failure_limit: int = 10  # failed authentications a peer address may make a minute; 0: any
    tls_cert: str = ""  # PEM files; both set: serve TLS
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM roots: require and verify client certificates (mTLS)

    @property
    def effective_mode(self) -> str:
        """The mode in force: `none` when unset (validation refuses that off loopback)."""
        return self.mode or "none"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Shared working state in Redis or Valkey (see ``server/state/redis/``).

    `url` empty keeps every store in this process's memory. Each Redis
    operation gets `timeout` seconds; past it, or when Redis does not answer,
    the store falls back as its class of state says (budgets refuse; limits
    and slots become per-replica limits, each the configured one divided by
    `replicas`; the cache and breakers become local) until Redis answers
    again. A concurrency slot is a lease of `lease_ttl` seconds, renewed
    while its call runs, so the slots of a replica that died come back.
    """

    url: str = field(default="", repr=False)  # may hold a password: never printed
    timeout: float = 0.05
    replicas: int = 1
    lease_ttl: float = 15.0
    prefix: str = "switchyard:"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything Switchyard needs to start."""

    server: ServerSettings = ServerSettings()
    relay: RelaySettings = RelaySettings()
    limits: LimitSettings = LimitSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    routing: RoutingSettings = RoutingSettings()
    catalog: Catalog = field(default_factory=default_catalog)
    simulator: SimulatorOptions = SimulatorOptions()
    telemetry: TelemetrySettings = TelemetrySettings()
    cache: CacheSettings = CacheSettings()
    budgets: BudgetSettings = BudgetSettings()
    ledger: LedgerSettings = LedgerSettings()
    auth: AuthSettings = AuthSettings()
    redis: RedisSettings = RedisSettings()
