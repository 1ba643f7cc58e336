"""Fixtures every suite shares: a PostgreSQL server of the tests' own."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.postgres import TempPostgres

_databases = itertools.count(1)


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
