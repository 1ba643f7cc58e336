"""Where settings come from: built-in defaults, the TOML file, the environment.

Later sources win: built-in defaults, the TOML file named by
``SWITCHYARD_CONFIG``, then ``SWITCHYARD_*`` environment variables. Every
value arrives as text (environment) or a TOML value and is coerced here to
its field's type (``schema.py``); an unknown table, key or variable, or a
value of the wrong type, is a `ConfigError` naming where it came from.
The [models.*] and [budgets] tables are handed on raw: the catalog merge
(``catalog.py``) and `build_budgets` below give them their structure.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

from server.pricing import usd_to_nanos
from server.settings.schema import (
    AuthSettings,
    BreakerSettings,
    BudgetLimits,
    BudgetSettings,
    CacheSettings,
    ConfigError,
    LedgerSettings,
    LimitSettings,
    RedisSettings,
    RelaySettings,
    RetrySettings,
    RoutingSettings,
    ServerSettings,
    SimulatorOptions,
    TelemetrySettings,
)

ENV_PREFIX = "SWITCHYARD_"
# Read by the `switchyard` CLI (clients/python), not by the gateway: a shell
# set up to call a gateway can still serve one.
CLIENT_ENV = frozenset({"SWITCHYARD_ADDRESS", "SWITCHYARD_CALLER", "SWITCHYARD_API_KEY"})
ENV_KEYS: dict[str, tuple[str, str]] = {
    "LISTEN": ("server", "listen"),
    "SHUTDOWN_GRACE": ("server", "shutdown_grace"),
    "LOG_LEVEL": ("server", "log_level"),
    "WORKERS": ("server", "workers"),
    "WORKER_INDEX": ("server", "worker_index"),  # set by the supervisor for its workers only
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
    "TENANT_WEIGHTS": ("limits", "tenant_weights"),
    "MAX_CALLERS": ("limits", "max_callers"),
    "MAX_MESSAGES": ("limits", "max_messages"),
    "MAX_TEXT_BYTES": ("limits", "max_text_bytes"),
    "MAX_PARTS": ("limits", "max_parts"),
    "MAX_SCHEMA_BYTES": ("limits", "max_schema_bytes"),
    "VALIDATE_JSON": ("routing", "validate_json"),
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
    "METRIC_CALLERS": ("telemetry", "metric_callers"),
    "TRACE_KEEP": ("telemetry", "trace_keep"),
    "TRACE_SLOW": ("telemetry", "trace_slow"),
    "CACHE_ENABLED": ("cache", "enabled"),
    "CACHE_TTL": ("cache", "ttl"),
    "CACHE_MAX_ENTRIES": ("cache", "max_entries"),
    "CACHE_MAX_BYTES": ("cache", "max_bytes"),
    "DATABASE_URL": ("ledger", "database_url"),
    "DATA_DIR": ("ledger", "data_dir"),
    "LEDGER_RETENTION_DAYS": ("ledger", "retention_days"),
    "LEDGER_FLUSH_INTERVAL": ("ledger", "flush_interval"),
    "LEDGER_BATCH_SIZE": ("ledger", "batch_size"),
    "BUDGETS_UNTIL_SEEDED": ("ledger", "budgets_until_seeded"),
    "AUTH": ("auth", "mode"),
    "ADMIN_KEY": ("auth", "admin_key"),
    "KEY_ROTATION_GRACE": ("auth", "rotation_grace"),
    "AUTH_FAILURE_LIMIT": ("auth", "failure_limit"),
    "TLS_CERT": ("auth", "tls_cert"),
    "TLS_KEY": ("auth", "tls_key"),
    "TLS_CLIENT_CA": ("auth", "tls_client_ca"),
    "REDIS_URL": ("redis", "url"),
    "REDIS_TIMEOUT": ("redis", "timeout"),
    "REPLICAS": ("redis", "replicas"),
    "REDIS_LEASE_TTL": ("redis", "lease_ttl"),
    "REDIS_PREFIX": ("redis", "prefix"),
}
SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "relay": RelaySettings,
    "limits": LimitSettings,
    "retry": RetrySettings,
    "breaker": BreakerSettings,
    "routing": RoutingSettings,
    "simulator": SimulatorOptions,
    "telemetry": TelemetrySettings,
    "cache": CacheSettings,
    "ledger": LedgerSettings,
    "auth": AuthSettings,
    "redis": RedisSettings,
}
_BUDGET_PERIODS = ("day", "month")


@dataclass(frozen=True, slots=True)
class Sources:
    """Every value given, by where it belongs, not yet built into settings.

    `sections` maps a section to its keys, each with (where it came from, the
    raw value); the remaining tables are the file's, raw.
    """

    sections: Mapping[str, Mapping[str, tuple[str, object]]]
    models: Mapping[str, Any]
    tasks: Mapping[str, Any]
    budgets: Mapping[str, Any]


def read_sources(environ: Mapping[str, str]) -> Sources:
    """Read the TOML file `environ` may name, then the SWITCHYARD_* variables over it."""
    file_tables: dict[str, Any] = {}
    config_path = environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        file_tables = _read_toml(config_path)
    unknown = set(file_tables) - set(SECTIONS) - {"models", "budgets"}
    if unknown:
        raise ConfigError(
            f"SWITCHYARD_CONFIG [{sorted(unknown)[0]}]",
            f"unknown table; expected one of {sorted({*SECTIONS, 'models', 'budgets'})}",
        )
    if "api_key" in file_tables.get("relay", {}):
        raise ConfigError(
            "SWITCHYARD_CONFIG relay.api_key",
            "keys do not belong in files; set SWITCHYARD_RELAY_API_KEY instead",
        )
    if "admin_key" in file_tables.get("auth", {}):
        raise ConfigError(
            "SWITCHYARD_CONFIG auth.admin_key",
            "keys do not belong in files; set SWITCHYARD_ADMIN_KEY instead",
        )
    for section, key, variable in (
        ("ledger", "database_url", "SWITCHYARD_DATABASE_URL"),
        ("redis", "url", "SWITCHYARD_REDIS_URL"),
    ):
        file_url = file_tables.get(section, {}).get(key)
        if isinstance(file_url, str) and _has_password(file_url):
            raise ConfigError(
                f"SWITCHYARD_CONFIG {section}.{key}",
                f"passwords do not belong in files; set {variable} instead",
            )

    overrides: dict[str, dict[str, tuple[str, object]]] = {name: {} for name in SECTIONS}
    routing_file = dict(file_tables.get("routing", {}))
    task_table = routing_file.pop("tasks", {})
    for section in SECTIONS:
        table = routing_file if section == "routing" else file_tables.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"SWITCHYARD_CONFIG [{section}]", "must be a table")
        for key, value in table.items():
            overrides[section][key] = (f"SWITCHYARD_CONFIG {section}.{key}", value)
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG" or name in CLIENT_ENV:
            continue
        target = ENV_KEYS.get(name.removeprefix(ENV_PREFIX))
        if target is None:
            known = ", ".join(ENV_PREFIX + key for key in sorted(ENV_KEYS))
            raise ConfigError(name, f"unknown setting; known ones are {known}, SWITCHYARD_CONFIG")
        overrides[target[0]][target[1]] = (name, value)
    return Sources(
        overrides,
        file_tables.get("models", {}),
        task_table,
        file_tables.get("budgets", {}),
    )


def _has_password(url: str) -> bool:
    try:
        return urllib.parse.urlsplit(url).password is not None
    except ValueError:
        return False


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


def build_section(cls: type[Any], values: Mapping[str, tuple[str, object]]) -> Any:
    """One section's dataclass from its given values (defaults for the rest)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, (where, raw) in values.items():
        if key not in names:
            raise ConfigError(where, f"unknown key; expected one of {', '.join(names)}")
        kwargs[key] = coerce(raw, hints[key], where)
    return cls(**kwargs)


def coerce(raw: object, hint: Any, where: str) -> object:
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
    if origin is Mapping:
        expected = "name=count pairs, each count a whole number of at least 1 (a=1,b=2)"
    else:
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
    if any(value < 1 for value in table.values()) or "" in table:
        raise ValueError
    return MappingProxyType(table)


def build_budgets(table: Mapping[str, Any]) -> BudgetSettings:
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
        amount = coerce(raw, Decimal, f"{where}.{period}")
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
    value = coerce(raw, Decimal, where)
    assert isinstance(value, Decimal)
    if not value.is_finite() or not 0 < value <= 1:
        raise ConfigError(
            where, f"expected a fraction of a budget above 0 and at most 1, got {raw}"
        )
    return value
