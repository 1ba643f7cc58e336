"""Configuration: read once at start-up, validated, then frozen.

Sources, later ones winning: built-in defaults, the TOML file named by
``SWITCHYARD_CONFIG``, then ``SWITCHYARD_*`` environment variables. Any
unknown key or bad value stops start-up with a `ConfigError` naming the key,
so a typo never surfaces as a failing request hours later.

A TOML file may hold these tables (all optional)::

    [server]     listen, shutdown_grace, log_level, workers
    [relay]      url, connect_timeout, read_timeout, timeout, max_connections
    [limits]     relay_rpm, relay_burst, max_waiters, max_wait, other_provider_concurrency,
                 max_messages, max_text_bytes, max_parts, max_schema_bytes (per call)
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
    [telemetry]  console, prometheus_port, capture_content, trace_keep, trace_slow
                 (exporters: the OTEL_* variables)
    [ledger]     database_url (no password in a file), data_dir, retention_days,
                 flush_interval, batch_size, budgets_until_seeded
    [auth]       mode, rotation_grace, tls_cert, tls_key, tls_client_ca
    [redis]      url (no password in a file), timeout, replicas, lease_ttl, prefix

The relay key and the admin key are read only from the environment, never from the file.

The package is split by job: ``schema.py`` (the dataclasses and defaults),
``sources.py`` (environment and TOML, and coercion to each field's type),
``catalog.py`` (the [models.*] merge onto the built-in catalog) and
``validation.py`` (checks across the whole). A new setting is a field in the
schema, plus a line in `sources.ENV_KEYS` when it has a variable, plus its
check in `validation.validate`.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.settings.catalog import build_catalog
from server.settings.schema import (
    AUTH_MODES,
    DEFAULT_PROVIDER_CONCURRENCY,
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
    Settings,
    SimulatorOptions,
    TelemetrySettings,
    TraceKeep,
    parse_trace_keep,
)
from server.settings.sources import (
    CLIENT_ENV,
    ENV_PREFIX,
    SECTIONS,
    build_budgets,
    build_section,
    read_sources,
)
from server.settings.validation import LOG_LEVELS, parse_listen, validate


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from `environ` (and the TOML file it may name), validated."""
    sources = read_sources(environ)
    sections = {name: build_section(cls, sources.sections[name]) for name, cls in SECTIONS.items()}
    settings = Settings(
        server=sections["server"],
        relay=sections["relay"],
        limits=sections["limits"],
        retry=sections["retry"],
        breaker=sections["breaker"],
        routing=sections["routing"],
        catalog=build_catalog(sources.models, sources.tasks),
        simulator=sections["simulator"],
        telemetry=sections["telemetry"],
        cache=sections["cache"],
        budgets=build_budgets(sources.budgets),
        ledger=sections["ledger"],
        auth=sections["auth"],
        redis=sections["redis"],
    )
    validate(settings)
    return settings


__all__ = [
    "AUTH_MODES",
    "CLIENT_ENV",
    "DEFAULT_PROVIDER_CONCURRENCY",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "AuthSettings",
    "BreakerSettings",
    "BudgetLimits",
    "BudgetSettings",
    "CacheSettings",
    "ConfigError",
    "LedgerSettings",
    "LimitSettings",
    "RedisSettings",
    "RelaySettings",
    "RetrySettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "SimulatorOptions",
    "TelemetrySettings",
    "TraceKeep",
    "load_settings",
    "parse_listen",
    "parse_trace_keep",
]
