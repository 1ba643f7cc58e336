"""What every suite shares: a PostgreSQL server of the tests' own, and the
scan of every log line and exported span for leaked key secrets (tests/leaks.py)."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator

import pytest

from tests.leaks import SCAN, ScanHandler
from tests.postgres import TempPostgres
from tests.redis_server import TempRedis, redis_server_bin

_databases = itertools.count(1)


@pytest.fixture(autouse=True, scope="session")
def _scan_for_leaked_secrets() -> Iterator[None]:
    """Every log record of the session goes to the scan, at the gateway's default level
    (INFO); every secret the admin API makes in this process is registered with it."""
    from server import keys  # noqa: PLC0415 (patched for the session only)

    handler = ScanHandler(SCAN)
    root = logging.getLogger()
    root.addHandler(handler)
    gateway_log = logging.getLogger("switchyard")
    level = gateway_log.level
    gateway_log.setLevel(logging.INFO)
    make_secret = keys.new_secret

    def new_secret() -> str:
        secret = make_secret()
        SCAN.secret(secret)
        return secret

    keys.new_secret = new_secret
    yield
    keys.new_secret = make_secret
    gateway_log.setLevel(level)
    root.removeHandler(handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any key secret was found in a log line or an exported span."""
    findings = SCAN.findings()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and SCAN.secrets:
        reporter.write_line(
            f"secret scan: {len(SCAN.secrets)} secrets against {len(SCAN.sources())}"
            f" log records, log files and span exports: {len(findings) or 'no'} leaks"
        )
    if findings:
        for finding in findings[:20]:
            if reporter is not None:
                reporter.write_line(f"LEAK {finding}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TempPostgres]:
    """One PostgreSQL cluster for the session, on a free port in a temporary folder."""
    with TempPostgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: TempPostgres) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_server.create_database(f"test_{next(_databases)}")


@pytest.fixture
def postgres() -> Iterator[TempPostgres]:
    """A PostgreSQL server of this test's own, which it may stop and start (an outage)."""
    with TempPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[TempRedis]:
    """One redis-server for the session, on a free port in a temporary folder.

    Without redis-server the tests that need it are skipped, except under CI
    (CI=true), where a missing server is a failure: CI must run them all."""
    if redis_server_bin() is None:
        message = "redis-server is not installed: run `make redis-deps`"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    with TempRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: TempRedis) -> str:
    """The session's Redis, emptied (and running, unfrozen) for this test."""
    if redis_server.paused:
        redis_server.resume()
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url
