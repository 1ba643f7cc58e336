"""Checks across the whole of the settings, run once at start-up.

Each check names the setting to change (the environment variable where one
exists) and what it expects, so bad configuration stops start-up with a
message instead of surfacing as a failing request hours later.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from server.settings.database import DatabaseTarget, parse_database_url
from server.settings.schema import AUTH_MODES, ConfigError, Settings, parse_trace_keep

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def validate(settings: Settings) -> None:
    """Raise ConfigError for the first value that cannot work."""
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
    _validate_call_bounds(settings)
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
    _validate_telemetry(settings)
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
    _validate_auth(settings)
    database_target(settings)
    _validate_redis(settings)
    ledger = settings.ledger
    if ledger.retention_days < 1:
        raise ConfigError("SWITCHYARD_LEDGER_RETENTION_DAYS", "must be at least 1 (days)")
    if ledger.flush_interval <= 0 or ledger.batch_size < 1:
        raise ConfigError(
            "SWITCHYARD_LEDGER_FLUSH_INTERVAL",
            "the flush interval must be above 0 s and SWITCHYARD_LEDGER_BATCH_SIZE at least 1",
        )
    if ledger.budgets_until_seeded not in ("refuse", "admit"):
        raise ConfigError("SWITCHYARD_BUDGETS_UNTIL_SEEDED", "expected refuse or admit")
    if not ledger.data_dir.strip():
        raise ConfigError("SWITCHYARD_DATA_DIR", "must name a directory")
    _validate_workers(settings)
    routing = settings.routing
    if not routing.keywords:
        raise ConfigError("SWITCHYARD_CONFIG routing.keywords", "must name at least one keyword")
    if routing.medium_words > routing.complex_words:
        raise ConfigError(
            "SWITCHYARD_CONFIG routing.medium_words", "must not exceed routing.complex_words"
        )
    if routing.validate_json not in ("fallback", "report", "off"):
        raise ConfigError("SWITCHYARD_VALIDATE_JSON", "expected fallback, report or off")


MAX_WEIGHT = 1000  # a tenant's weight in fair shares; more would starve the others anyway
MAX_TEXT_BYTES_CEILING = 1024 * 1024 * 1024  # gRPC's receive limit (text + headroom) is an int32


def _validate_call_bounds(settings: Settings) -> None:
    """The per-call bounds (messages, parts, bytes of text) must each allow something."""
    limits = settings.limits
    for key, value in (
        ("SWITCHYARD_MAX_MESSAGES", limits.max_messages),
        ("SWITCHYARD_MAX_PARTS", limits.max_parts),
        ("SWITCHYARD_MAX_TEXT_BYTES", limits.max_text_bytes),
        ("SWITCHYARD_MAX_SCHEMA_BYTES", limits.max_schema_bytes),
        ("SWITCHYARD_MAX_CALLERS", limits.max_callers),
    ):
        if value < 1:
            raise ConfigError(key, f"must be at least 1, got {value}")
    if settings.telemetry.metric_callers < 0:
        raise ConfigError(
            "SWITCHYARD_METRIC_CALLERS",
            f"expected 0 or more callers named on metrics, got {settings.telemetry.metric_callers}",
        )
    heavy = [name for name, weight in limits.tenant_weights.items() if weight > MAX_WEIGHT]
    if heavy:
        raise ConfigError(
            "SWITCHYARD_TENANT_WEIGHTS",
            f"a weight is a whole number from 1 to {MAX_WEIGHT}; {heavy[0]!r} has"
            f" {limits.tenant_weights[heavy[0]]}",
        )
    if limits.max_text_bytes > MAX_TEXT_BYTES_CEILING:
        raise ConfigError(
            "SWITCHYARD_MAX_TEXT_BYTES",
            f"expected at most {MAX_TEXT_BYTES_CEILING} (1 GiB), got {limits.max_text_bytes}",
        )


def _validate_telemetry(settings: Settings) -> None:
    """A port; the keep policy parses (its message says what it expects); a positive threshold."""
    if not 0 <= settings.telemetry.prometheus_port <= 65535:
        raise ConfigError("SWITCHYARD_PROMETHEUS_PORT", "expected a port from 1 to 65535, or 0")
    parse_trace_keep(settings.telemetry.trace_keep)
    slow = settings.telemetry.trace_slow
    if not slow > 0:
        raise ConfigError(
            "SWITCHYARD_TRACE_SLOW",
            f"expected seconds above 0 (a call that waits longer for its first text is kept"
            f" as slow), got {slow}",
        )


def parse_listen(listen: str) -> tuple[str, int]:
    """Split 'host:port' (or '[v6]:port'); raise ConfigError when malformed."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            "SWITCHYARD_LISTEN", f"expected host:port such as 127.0.0.1:50051, got {listen!r}"
        )
    return host.strip("[]"), int(port_text)


def database_target(settings: Settings) -> DatabaseTarget:
    """Where the ledger lives; ConfigError (without any password) when the URL is malformed."""
    ledger = settings.ledger
    try:
        return parse_database_url(ledger.database_url, Path(ledger.data_dir))
    except ValueError as error:
        raise ConfigError("SWITCHYARD_DATABASE_URL", str(error)) from None


def _validate_workers(settings: Settings) -> None:
    """Several workers (server/workers.py) must share every piece of state they keep."""
    server = settings.server
    if server.workers < 1:
        raise ConfigError("SWITCHYARD_WORKERS", f"expected 1 or more, got {server.workers}")
    if server.worker_index < 0 or (server.worker_index and server.workers > 1):
        raise ConfigError(
            "SWITCHYARD_WORKER_INDEX", "set by the supervisor for its workers only; leave it unset"
        )
    workers = server.workers
    if workers == 1:
        return
    if not settings.redis.url:
        raise ConfigError(
            "SWITCHYARD_WORKERS",
            f"{workers} workers need shared state: set SWITCHYARD_REDIS_URL (redis:// or"
            " rediss://) so limits, budgets and the cache are shared, or run one worker",
        )
    target = database_target(settings)
    if target.kind != "postgresql":
        what = (
            f"several processes must not write one SQLite file ({target.shown})"
            if target.kind == "sqlite"
            else "an in-memory ledger (with its tenants and keys) would be each worker's own"
        )
        raise ConfigError(
            "SWITCHYARD_WORKERS",
            f"{workers} workers need one ledger they share, and {what}: set"
            " SWITCHYARD_DATABASE_URL to a PostgreSQL URL (postgresql://user@host:port/dbname),"
            " or run one worker",
        )
    metrics = settings.telemetry.prometheus_port
    if metrics and metrics + workers - 1 > 65535:
        raise ConfigError(
            "SWITCHYARD_PROMETHEUS_PORT",
            f"worker N serves /metrics on this port + N - 1, and {metrics} + {workers - 1}"
            " is past 65535",
        )


MIN_ADMIN_KEY = 32


def _validate_redis(settings: Settings) -> None:
    redis = settings.redis
    if redis.url:
        scheme, sep, rest = redis.url.partition("://")
        if not sep or scheme not in ("redis", "rediss") or not rest:
            raise ConfigError(
                "SWITCHYARD_REDIS_URL",
                "expected redis://host:port/db or rediss://host:port/db (TLS), got "
                + (f"a {scheme}:// URL" if sep else "no URL scheme"),
            )
    if not 0 < redis.timeout <= 5:
        raise ConfigError("SWITCHYARD_REDIS_TIMEOUT", "expected seconds above 0, at most 5")
    if redis.replicas < 1:
        raise ConfigError("SWITCHYARD_REPLICAS", "expected the number of replicas, 1 or more")
    if redis.lease_ttl < 3:
        raise ConfigError("SWITCHYARD_REDIS_LEASE_TTL", "expected at least 3 seconds")


def is_loopback(host: str) -> bool:
    """Does `host` (of SWITCHYARD_LISTEN) accept connections from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_auth(settings: Settings) -> None:
    auth = settings.auth
    if auth.mode and auth.mode not in AUTH_MODES:
        raise ConfigError("SWITCHYARD_AUTH", f"expected one of {', '.join(AUTH_MODES)}")
    host, _ = parse_listen(settings.server.listen)
    if not auth.mode and not is_loopback(host):
        raise ConfigError(
            "SWITCHYARD_AUTH",
            f"Switchyard would listen on {host}, which other machines can reach, with nobody"
            " checked: set SWITCHYARD_AUTH=api_key (or mtls, with TLS), or SWITCHYARD_AUTH=none"
            " to serve without authentication on purpose",
        )
    if bool(auth.tls_cert) != bool(auth.tls_key):
        raise ConfigError(
            "SWITCHYARD_TLS_CERT" if not auth.tls_cert else "SWITCHYARD_TLS_KEY",
            "TLS needs both SWITCHYARD_TLS_CERT and SWITCHYARD_TLS_KEY (PEM files)",
        )
    if auth.tls_client_ca and not auth.tls_cert:
        raise ConfigError(
            "SWITCHYARD_TLS_CLIENT_CA", "client certificates need TLS: set SWITCHYARD_TLS_CERT/KEY"
        )
    if auth.mode == "mtls" and not auth.tls_client_ca:
        raise ConfigError(
            "SWITCHYARD_TLS_CLIENT_CA",
            "SWITCHYARD_AUTH=mtls needs the CA that signs client certificates",
        )
    for key, path in (
        ("SWITCHYARD_TLS_CERT", auth.tls_cert),
        ("SWITCHYARD_TLS_KEY", auth.tls_key),
        ("SWITCHYARD_TLS_CLIENT_CA", auth.tls_client_ca),
    ):
        if path and not Path(path).is_file():
            raise ConfigError(key, f"{path!r} is not a readable file")
    if auth.admin_key and len(auth.admin_key) < MIN_ADMIN_KEY:
        raise ConfigError(
            "SWITCHYARD_ADMIN_KEY",
            f"use at least {MIN_ADMIN_KEY} random characters (for example: openssl rand -hex 32)",
        )
    if auth.failure_limit < 0:
        raise ConfigError("SWITCHYARD_AUTH_FAILURE_LIMIT", "must be 0 (no throttle) or more")
    if auth.rotation_grace < 0:
        raise ConfigError("SWITCHYARD_KEY_ROTATION_GRACE", "must be 0 seconds or more")
