"""One contract suite per store, run against every backend.

A backend is a class below with one factory per store; each test takes the
`backend` fixture, so a new backend (Redis, SQL) is one class here and one
entry in BACKENDS, and must pass every test the memory backend passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from server.clock import Clock
from server.domain import ModelSpec
from server.settings import BreakerSettings, BudgetSettings, CacheSettings, LedgerSettings
from server.state.breakers import BreakerRegistry
from server.state.budgets import BudgetStore
from server.state.gates import GateFactory
from server.state.ledger import Ledger
from server.state.memory import (
    MemoryBreakers,
    MemoryBudgetStore,
    MemoryGates,
    MemoryLedger,
    MemoryResponseStore,
)
from server.state.responses import ResponseStore
from server.state.sql.database import PostgresDatabase, SqliteDatabase
from server.state.sql.ledger import SqlLedger
from tests.helpers import FakeClock


class MemoryBackend:
    """Every store in this process's memory."""

    name = "memory"

    def budgets(
        self,
        settings: BudgetSettings,
        clock: Clock,
        *,
        seeded: bool = True,
        admit_unseeded: bool = False,
    ) -> BudgetStore:
        return MemoryBudgetStore(settings, clock, seeded=seeded, admit_unseeded=admit_unseeded)

    def ledger(self) -> Ledger:
        return MemoryLedger()

    def responses(self, settings: CacheSettings, clock: Clock) -> ResponseStore:
        return MemoryResponseStore(settings, clock)

    def gates(self, max_waiters: int, max_wait: float, clock: Clock) -> GateFactory:
        return MemoryGates(max_waiters, max_wait, clock)

    def breakers(
        self, models: Iterable[ModelSpec], settings: BreakerSettings, clock: Clock
    ) -> BreakerRegistry:
        return MemoryBreakers(models, settings, clock)


BACKENDS = [MemoryBackend()]


@pytest.fixture(params=BACKENDS, ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> MemoryBackend:
    """Each backend in turn."""
    return request.param


LEDGERS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=LEDGERS)
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    """Each ledger backend in turn, started, flushing only when told (a long interval)."""
    opened = await open_test_ledger(request.param, tmp_path, request)
    yield opened
    await opened.aclose(5.0)


async def open_test_ledger(
    kind: str, data_dir: Path, request: pytest.FixtureRequest, clock: Clock | None = None
) -> Ledger:
    """A started ledger of `kind` with its files in `data_dir`."""
    settings = LedgerSettings(data_dir=str(data_dir), flush_interval=3600)
    if kind == "memory":
        opened: Ledger = MemoryLedger()
    elif kind == "sqlite":
        path = data_dir / "ledger.db"
        opened = SqlLedger(SqliteDatabase(path), data_dir, settings, clock or FakeClock(), path)
    else:
        url = request.getfixturevalue("postgres_url")
        opened = SqlLedger(PostgresDatabase(url, url), data_dir, settings, clock or FakeClock())
    await opened.start()
    return opened
