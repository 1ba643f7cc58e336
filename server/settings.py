"""Configuration: read once at start-up, validated, then frozen.

Sources, later ones winning: built-in defaults, the TOML file named by
``SWITCHYARD_CONFIG``, then ``SWITCHYARD_*`` environment variables. Any
unknown key or bad value stops start-up with a `ConfigError` naming the key,
so a typo never surfaces as a failing request hours later.

A TOML file may hold these tables (all optional)::

    [server]     listen, shutdown_grace, log_level
    [relay]      url, connect_timeout, read_timeout, timeout, max_connections
    [limits]     relay_rpm, relay_burst, max_waiters, max_wait, other_provider_concurrency
    [limits.provider_concurrency]  anthropic = 10, openai = 20, ...
    [retry]      max_attempts, base_delay, max_delay, max_retry_after, budget_ratio, ...
    [breaker]    failures, cooldown
    [routing]    keywords, complex_words, complex_keywords, medium_words, ...
    [routing.tasks]  reasoning = "<model>", creative = ..., fast = ..., batch = ...
    [models."<name>"]  task, provider, wire, input_price, output_price,
                       max_concurrent, fallbacks, default_max_tokens,
                       context_window, rpm, tpm, cached_input_price, tasks,
                       enabled
    [cache]      enabled, ttl, max_entries, max_bytes
    [budgets]    day, month (USD, every caller without its own), downgrade_at
    [budgets."<caller>"]  day, month (USD; replaces the defaults for that caller)
    [simulator]  latency_scale, tokens_per_second
    [telemetry]  console, prometheus_port, capture_content (exporters: the OTEL_* variables)

The relay key is read only from the environment, never from the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

from server.catalog import DEFAULT_MODELS, WIRES, Catalog, ModelSpec
from server.domain import Task
from server.pricing import usd_to_nanos

ENV_PREFIX = "SWITCHYARD_"
# Read by the `switchyard` CLI (clients/python), not by the gateway: a shell
# set up to call a gateway can still serve one.
CLIENT_ENV = frozenset({"SWITCHYARD_ADDRESS", "SWITCHYARD_CALLER", "SWITCHYARD_API_KEY"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
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
    anthropic_version: str = "2023-06-01"


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


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The exact-match response cache (see ``server/response_cache.py``)."""

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
    """Per-caller spend budgets (UTC days and months), exact to the nano-dollar.

    `callers` maps a caller id to its own limits; every other caller gets
    `default`. `downgrade_at` (a fraction of a budget, e.g. 0.8) turns on
    budget-aware routing: AUTO calls of a caller whose spend reached that
    fraction of a budget go to a cheaper model that serves the task.
    """

    default: BudgetLimits = BudgetLimits()
    callers: Mapping[str, BudgetLimits] = field(default_factory=lambda: types.MappingProxyType({}))
    downgrade_at: Decimal | None = None

    def limits(self, caller: str) -> BudgetLimits:
        """The budgets that apply to `caller`."""
        return self.callers.get(caller, self.default)


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """The embedded relay simulator, used when no relay URL is configured."""

    latency_scale: float = 1.0
    tokens_per_second: float = 60.0


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Switchyard's own telemetry options; exporters follow the OTEL_* variables."""

    console: bool = False  # print every span to stdout, for local debugging
    prometheus_port: int = 0  # serve /metrics on 127.0.0.1:<port> for Prometheus; 0: off
    capture_content: bool = False  # record prompts and completions on model-call spans


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything Switchyard needs to start."""

    server: ServerSettings = ServerSettings()
    relay: RelaySettings = RelaySettings()
    limits: LimitSettings = LimitSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    routing: RoutingSettings = RoutingSettings()
    catalog: Catalog = field(default_factory=lambda: _build_catalog({}, {}))
    simulator: SimulatorOptions = SimulatorOptions()
    telemetry: TelemetrySettings = TelemetrySettings()
    cache: CacheSettings = CacheSettings()
    budgets: BudgetSettings = BudgetSettings()


# Environment variable (without prefix) -> (section, key).
_ENV_KEYS: dict[str, tuple[str, str]] = {
    "LISTEN": ("server", "listen"),
    "SHUTDOWN_GRACE": ("server", "shutdown_grace"),
    "LOG_LEVEL": ("server", "log_level"),
    "RELAY_URL": ("relay", "url"),
    "RELAY_API_KEY": ("relay", "api_key"),
    "RELAY_CONNECT_TIMEOUT": ("relay", "connect_timeout"),
    "RELAY_READ_TIMEOUT": ("relay", "read_timeout"),
    "RELAY_TIMEOUT": ("relay", "timeout"),
    "RELAY_MAX_CONNECTIONS": ("relay", "max_connections"),
    "RELAY_RPM": ("limits", "relay_rpm"),
    "RELAY_BURST": ("limits", "relay_burst"),
    "MAX_WAITERS": ("limits", "max_waiters"),
    "MAX_WAIT": ("limits", "max_wait"),
    "PROVIDER_CONCURRENCY": ("limits", "provider_concurrency"),
    "OTHER_PROVIDER_CONCURRENCY": ("limits", "other_provider_concurrency"),
    "RETRY_MAX_ATTEMPTS": ("retry", "max_attempts"),
    "RETRY_BASE_DELAY": ("retry", "base_delay"),
    "RETRY_MAX_DELAY": ("retry", "max_delay"),
    "RETRY_MAX_RETRY_AFTER": ("retry", "max_retry_after"),
    "RETRY_BUDGET_RATIO": ("retry", "budget_ratio"),
    "BREAKER_FAILURES": ("breaker", "failures"),
    "BREAKER_COOLDOWN": ("breaker", "cooldown"),
    "SIM_LATENCY_SCALE": ("simulator", "latency_scale"),
    "SIM_TOKENS_PER_SECOND": ("simulator", "tokens_per_second"),
    "TRACE_CONSOLE": ("telemetry", "console"),
    "PROMETHEUS_PORT": ("telemetry", "prometheus_port"),
    "CAPTURE_CONTENT": ("telemetry", "capture_content"),
    "CACHE_ENABLED": ("cache", "enabled"),
    "CACHE_TTL": ("cache", "ttl"),
    "CACHE_MAX_ENTRIES": ("cache", "max_entries"),
    "CACHE_MAX_BYTES": ("cache", "max_bytes"),
}
_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "relay": RelaySettings,
    "limits": LimitSettings,
    "retry": RetrySettings,
    "breaker": BreakerSettings,
    "routing": RoutingSettings,
    "simulator": SimulatorOptions,
    "telemetry": TelemetrySettings,
    "cache": CacheSettings,
}
_MODEL_KEYS = frozenset(
    f.name for f in dataclasses.fields(ModelSpec) if f.init and f.name != "name"
) | {"enabled"}
_MODEL_REQUIRED = frozenset(
    f.name
    for f in dataclasses.fields(ModelSpec)
    if f.init and f.name != "name" and f.default is dataclasses.MISSING
)
_BUDGET_PERIODS = ("day", "month")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from `environ` (and the TOML file it may name)."""
    file_tables: dict[str, Any] = {}
    config_path = environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        file_tables = _read_toml(config_path)
    unknown = set(file_tables) - set(_SECTIONS) - {"models", "budgets"}
    if unknown:
        raise ConfigError(
            f"SWITCHYARD_CONFIG [{sorted(unknown)[0]}]",
            f"unknown table; expected one of {sorted({*_SECTIONS, 'models', 'budgets'})}",
        )
    if "api_key" in file_tables.get("relay", {}):
        raise ConfigError(
            "SWITCHYARD_CONFIG relay.api_key",
            "keys do not belong in files; set SWITCHYARD_RELAY_API_KEY instead",
        )

    overrides: dict[str, dict[str, tuple[str, object]]] = {name: {} for name in _SECTIONS}
    routing_file = dict(file_tables.get("routing", {}))
    task_table = routing_file.pop("tasks", {})
    for section in _SECTIONS:
        table = routing_file if section == "routing" else file_tables.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"SWITCHYARD_CONFIG [{section}]", "must be a table")
        for key, value in table.items():
            overrides[section][key] = (f"SWITCHYARD_CONFIG {section}.{key}", value)
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG" or name in CLIENT_ENV:
            continue
        target = _ENV_KEYS.get(name.removeprefix(ENV_PREFIX))
        if target is None:
            known = ", ".join(ENV_PREFIX + key for key in sorted(_ENV_KEYS))
            raise ConfigError(name, f"unknown setting; known ones are {known}, SWITCHYARD_CONFIG")
        overrides[target[0]][target[1]] = (name, value)

    sections = {name: _build(cls, overrides[name]) for name, cls in _SECTIONS.items()}
    settings = Settings(
        server=sections["server"],
        relay=sections["relay"],
        limits=sections["limits"],
        retry=sections["retry"],
        breaker=sections["breaker"],
        routing=sections["routing"],
        catalog=_build_catalog(file_tables.get("models", {}), task_table),
        simulator=sections["simulator"],
        telemetry=sections["telemetry"],
        cache=sections["cache"],
        budgets=_build_budgets(file_tables.get("budgets", {})),
    )
    _validate(settings)
    return settings


def _read_toml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("SWITCHYARD_CONFIG", f"cannot read {path!r}: {exc.strerror}") from None
    try:
        # Decimal keeps prices exact: 2.50 stays 2.50, never a binary float.
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("SWITCHYARD_CONFIG", f"{path!r} is not valid TOML: {exc}") from None


def _build(cls: type[Any], values: Mapping[str, tuple[str, object]]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, (where, raw) in values.items():
        if key not in names:
            raise ConfigError(where, f"unknown key; expected one of {', '.join(names)}")
        kwargs[key] = _coerce(raw, hints[key], where)
    return cls(**kwargs)


def _coerce(raw: object, hint: Any, where: str) -> object:
    """Convert a TOML value or an environment string to the field's type."""
    if isinstance(hint, types.UnionType):  # only `X | None` is used
        if raw == "" or raw is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint)
    try:
        if origin is Mapping:
            return _mapping(raw)
        if origin is tuple:
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise ValueError
            return tuple(item.strip() for item in items if item.strip())
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if hint is int:
            if isinstance(raw, bool | Decimal | float):
                raise ValueError
            return int(str(raw))
        if hint is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(str(raw))
        if hint is Decimal:
            if isinstance(raw, bool):
                raise ValueError
            return Decimal(str(raw))
        if hint is str and isinstance(raw, str):
            return raw
    except (ValueError, TypeError, InvalidOperation):
        pass
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(where, f"expected {expected}, got {raw!r}")


def _mapping(raw: object) -> Mapping[str, int]:
    """A name -> count table: a TOML table, or 'a=1,b=2' from the environment."""
    if isinstance(raw, str):
        pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError
        raw = {name.strip(): value.strip() for name, value in pairs}
    if not isinstance(raw, dict):
        raise TypeError
    table = {str(name): int(str(value)) for name, value in raw.items()}
    if any(value < 1 for value in table.values()):
        raise ValueError
    return MappingProxyType(table)


def _build_catalog(models_table: Mapping[str, Any], task_table: Mapping[str, Any]) -> Catalog:
    """Merge [models.*] onto the defaults: per field for known models, whole for new ones."""
    defaults = {model.name: model for model in DEFAULT_MODELS}
    hints = typing.get_type_hints(ModelSpec)
    merged: dict[str, ModelSpec] = dict(defaults)
    for name, table in models_table.items():
        where = f"SWITCHYARD_CONFIG models.{name}"
        if not isinstance(table, dict):
            raise ConfigError(where, "must be a table")
        unknown = set(table) - _MODEL_KEYS
        if unknown:
            raise ConfigError(
                f"{where}.{sorted(unknown)[0]}",
                f"unknown key; expected one of {', '.join(sorted(_MODEL_KEYS))}",
            )
        if table.get("enabled", True) is False:
            merged.pop(name, None)
            continue
        values: dict[str, object] = {}
        base = defaults.get(name)
        if base is not None:
            values = {
                f.name: getattr(base, f.name)
                for f in dataclasses.fields(ModelSpec)
                if f.init and f.name != "name"
            }
        for key, raw in table.items():
            if key == "enabled":
                continue
            if key == "task":
                values[key] = _task(raw, f"{where}.task")
            elif key == "tasks":
                if not isinstance(raw, list):
                    raise ConfigError(f"{where}.tasks", "expected a list of task names")
                values[key] = tuple(_task(item, f"{where}.tasks") for item in raw)
            else:
                values[key] = _coerce(raw, hints[key], f"{where}.{key}")
        missing = _MODEL_REQUIRED - set(values)
        if missing:
            raise ConfigError(f"{where}.{sorted(missing)[0]}", "required for a new model")
        try:
            merged[name] = ModelSpec(name=name, **values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(
                f"{where}.input_price/output_price/cached_input_price", str(exc)
            ) from None
    tasks = {model.task: model.name for model in reversed(merged.values())}
    for key, raw in task_table.items():
        task = _task(key, f"SWITCHYARD_CONFIG routing.tasks.{key}")
        if not isinstance(raw, str) or raw not in merged:
            raise ConfigError(
                f"SWITCHYARD_CONFIG routing.tasks.{key}",
                f"{raw!r} is not a served model; served: {', '.join(sorted(merged))}",
            )
        tasks[task] = raw
    for task in Task:
        if task not in tasks:
            raise ConfigError(
                f"SWITCHYARD_CONFIG routing.tasks.{task.value}",
                "no served model has this task; name one",
            )
    for model in merged.values():
        _validate_model(model, merged)
    return Catalog.build(merged.values(), tasks)


def _build_budgets(table: Mapping[str, Any]) -> BudgetSettings:
    """[budgets]: default periods and downgrade_at as keys, one sub-table per caller."""
    where = "SWITCHYARD_CONFIG budgets"
    if not isinstance(table, dict):
        raise ConfigError(where, "must be a table")
    defaults: dict[str, object] = {}
    callers: dict[str, BudgetLimits] = {}
    downgrade_at = None
    for key, raw in table.items():
        if isinstance(raw, dict):
            callers[key] = _budget_limits(raw, f'{where}."{key}"')
        elif key in _BUDGET_PERIODS:
            defaults[key] = raw
        elif key == "downgrade_at":
            downgrade_at = _fraction(raw, f"{where}.downgrade_at")
        else:
            raise ConfigError(
                f"{where}.{key}",
                "unknown key; expected day, month, downgrade_at, or a table per caller"
                ' such as [budgets."billing-svc"]',
            )
    return BudgetSettings(
        _budget_limits(defaults, where), types.MappingProxyType(callers), downgrade_at
    )


def _budget_limits(table: Mapping[str, object], where: str) -> BudgetLimits:
    unknown = set(table) - set(_BUDGET_PERIODS)
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown key; expected day or month")
    limits: dict[str, int] = {}
    for period, raw in table.items():
        amount = _coerce(raw, Decimal, f"{where}.{period}")
        assert isinstance(amount, Decimal)
        try:
            nanos = usd_to_nanos(amount)
        except ValueError as exc:
            raise ConfigError(f"{where}.{period}", str(exc)) from None
        if nanos < 0:
            raise ConfigError(f"{where}.{period}", "a budget cannot be negative")
        limits[period] = nanos
    return BudgetLimits(**limits)


def _fraction(raw: object, where: str) -> Decimal:
    value = _coerce(raw, Decimal, where)
    assert isinstance(value, Decimal)
    if not value.is_finite() or not 0 < value <= 1:
        raise ConfigError(
            where, f"expected a fraction of a budget above 0 and at most 1, got {raw}"
        )
    return value


def _task(raw: object, where: str) -> Task:
    try:
        return Task(str(raw).lower())
    except ValueError:
        raise ConfigError(where, f"expected one of {', '.join(t.value for t in Task)}") from None


def _validate_model(model: ModelSpec, models: Mapping[str, ModelSpec]) -> None:
    where = f"SWITCHYARD_CONFIG models.{model.name}"
    if model.wire not in WIRES:
        raise ConfigError(f"{where}.wire", f"expected one of {', '.join(WIRES)}")
    for name in model.fallbacks:
        if name not in models or name == model.name:
            raise ConfigError(f"{where}.fallbacks", f"{name!r} is not another served model")
    for key in ("max_concurrent", "default_max_tokens", "context_window"):
        if getattr(model, key) < 1:
            raise ConfigError(f"{where}.{key}", "must be at least 1")


def _validate(settings: Settings) -> None:
    parse_listen(settings.server.listen)
    if settings.server.log_level.upper() not in LOG_LEVELS:
        raise ConfigError("SWITCHYARD_LOG_LEVEL", f"expected one of {', '.join(LOG_LEVELS)}")
    url = settings.relay.url
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(
            "SWITCHYARD_RELAY_URL", f"expected an http:// or https:// URL, got {url!r}"
        )
    if url is not None and not settings.relay.api_key:
        raise ConfigError("SWITCHYARD_RELAY_API_KEY", "required when SWITCHYARD_RELAY_URL is set")
    positive = {
        "SWITCHYARD_SHUTDOWN_GRACE": settings.server.shutdown_grace,
        "SWITCHYARD_RELAY_CONNECT_TIMEOUT": settings.relay.connect_timeout,
        "SWITCHYARD_RELAY_READ_TIMEOUT": settings.relay.read_timeout,
        "SWITCHYARD_RELAY_TIMEOUT": settings.relay.timeout,
        "SWITCHYARD_RELAY_MAX_CONNECTIONS": settings.relay.max_connections,
        "SWITCHYARD_RELAY_RPM": settings.limits.relay_rpm,
        "SWITCHYARD_RELAY_BURST": settings.limits.relay_burst,
        "SWITCHYARD_MAX_WAITERS": settings.limits.max_waiters,
        "SWITCHYARD_MAX_WAIT": settings.limits.max_wait,
        "SWITCHYARD_SIM_TOKENS_PER_SECOND": settings.simulator.tokens_per_second,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(key, f"must be greater than 0, got {value}")
    retry, breaker = settings.retry, settings.breaker
    positive_retry = {
        "SWITCHYARD_RETRY_MAX_ATTEMPTS": retry.max_attempts,
        "SWITCHYARD_RETRY_MAX_DELAY": retry.max_delay,
        "SWITCHYARD_BREAKER_FAILURES": breaker.failures,
        "SWITCHYARD_BREAKER_COOLDOWN": breaker.cooldown,
        "SWITCHYARD_OTHER_PROVIDER_CONCURRENCY": settings.limits.other_provider_concurrency,
    }
    for key, value in positive_retry.items():
        if value <= 0:
            raise ConfigError(key, f"must be greater than 0, got {value}")
    if not 0 <= retry.budget_ratio <= 1:
        raise ConfigError("SWITCHYARD_RETRY_BUDGET_RATIO", "must be from 0 to 1")
    if retry.base_delay < 0 or retry.max_retry_after < 0 or retry.budget_min_per_second < 0:
        raise ConfigError("SWITCHYARD_CONFIG retry", "delays and rates must be 0 or more")
    if not 0 <= settings.telemetry.prometheus_port <= 65535:
        raise ConfigError("SWITCHYARD_PROMETHEUS_PORT", "expected a port from 1 to 65535, or 0")
    if settings.simulator.latency_scale < 0:
        raise ConfigError("SWITCHYARD_SIM_LATENCY_SCALE", "must be 0 or more")
    cache = settings.cache
    if cache.ttl <= 0:
        raise ConfigError("SWITCHYARD_CACHE_TTL", f"must be greater than 0, got {cache.ttl}")
    for key, value in (
        ("SWITCHYARD_CACHE_MAX_ENTRIES", cache.max_entries),
        ("SWITCHYARD_CACHE_MAX_BYTES", cache.max_bytes),
    ):
        if value < 1:
            raise ConfigError(key, f"must be at least 1, got {value}")
    routing = settings.routing
    if not routing.keywords:
        raise ConfigError("SWITCHYARD_CONFIG routing.keywords", "must name at least one keyword")
    if routing.medium_words > routing.complex_words:
        raise ConfigError(
            "SWITCHYARD_CONFIG routing.medium_words", "must not exceed routing.complex_words"
        )


def parse_listen(listen: str) -> tuple[str, int]:
    """Split 'host:port' (or '[v6]:port'); raise ConfigError when malformed."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            "SWITCHYARD_LISTEN", f"expected host:port such as 127.0.0.1:50051, got {listen!r}"
        )
    return host.strip("[]"), int(port_text)
