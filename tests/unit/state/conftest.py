"""One contract suite per store, run against every backend.

A backend is a class below with one factory per store; each test takes the
`backend` fixture, so a new backend (Redis, SQL) is one class here and one
entry in BACKENDS, and must pass every test the memory backend passes.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
import redis

from server.catalog import default_catalog
from server.clock import Clock
from server.domain import ModelSpec
from server.settings import (
    BreakerSettings,
    BudgetSettings,
    CacheSettings,
    LedgerSettings,
    RedisSettings,
)
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
from server.state.redis import (
    RedisBreakers,
    RedisBudgetStore,
    RedisGates,
    RedisLink,
    RedisResponseStore,
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


class RedisBackend:
    """Budgets, gates, breakers and the cache in a real Redis (the tests' own server).

    Each test gets its own key prefix and its own link; times are the test's
    FakeClock, which the stores pass to their scripts.
    """

    name = "redis"

    def __init__(self, url: str = "") -> None:
        self.url = url
        self._prefix = f"t{next(_prefixes)}:"
        self.links: list[RedisLink] = []

    def link(self, clock: Clock) -> RedisLink:
        link = RedisLink(RedisSettings(url=self.url, prefix=self._prefix), clock)
        self.links.append(link)
        return link

    def budgets(
        self,
        settings: BudgetSettings,
        clock: Clock,
        *,
        seeded: bool = True,
        admit_unseeded: bool = False,
    ) -> BudgetStore:
        if seeded:  # what `Stores.start` does after reading the ledger
            with redis.Redis.from_url(self.url) as client:
                client.set(f"{self._prefix}budget-seeded", "1")
        return RedisBudgetStore(
            self.link(clock), settings, clock, admit_unseeded=admit_unseeded, lease_ttl=LONG
        )

    def ledger(self) -> Ledger:
        return MemoryLedger()

    def responses(self, settings: CacheSettings, clock: Clock) -> ResponseStore:
        models = {model.name: model for model in default_catalog().models.values()}
        return RedisResponseStore(self.link(clock), settings, models, clock)

    def gates(self, max_waiters: int, max_wait: float, clock: Clock) -> GateFactory:
        return RedisGates(self.link(clock), max_waiters, max_wait, lease_ttl=LONG, clock=clock)

    def breakers(
        self, models: Iterable[ModelSpec], settings: BreakerSettings, clock: Clock
    ) -> BreakerRegistry:
        return RedisBreakers(self.link(clock), models, settings, clock)


_prefixes = itertools.count()
LONG = 10 * 365 * 86_400.0  # seconds
BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[MemoryBackend | RedisBackend]:
    """Each backend in turn (Redis: the session's server, emptied for the test)."""
    if request.param == "memory":
        yield MemoryBackend()
        return
    shared = RedisBackend(request.getfixturevalue("redis_url"))
    yield shared
    for link in shared.links:
        await link.aclose()


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
