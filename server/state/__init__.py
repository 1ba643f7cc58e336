"""The gateway's state, behind one small async protocol per kind of store.

    budgets.py    BudgetStore      reserve / settle / admission / pressure / status
    ledger.py     Ledger           record (never waits) / summary / spend / export / aclose
    gates.py      GateFactory      RateGate (acquire / refund), ConcurrencyGate (leases)
    breakers.py   BreakerRegistry  admit / succeeded / failed / neutral / status
    responses.py  ResponseStore    get / peek / put, and the cache key
    directory.py  Directory        tenants and API keys (with the ledger, in SQL or memory)

Backends: `memory/` (one process), `sql/` (the ledger and the directory:
SQLite or PostgreSQL) and `redis/` (budgets, gates, breakers and the cache
shared by every replica, when SWITCHYARD_REDIS_URL is set).

Each protocol module also holds what every backend shares (records, refusal
messages, the key). A backend is a package beside them (`memory/` today)
with one class per protocol; `open_stores` is the one switch that picks a
backend per store from the settings, so adding one is a package here plus a
line below.
Stages see only the protocols: a stage never knows which backend it has, and
a store never imports a stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import ModelSpec
from server.errors import LedgerUnavailableError
from server.settings import Settings
from server.settings.validation import database_target
from server.state.breakers import BreakerRegistry
from server.state.budgets import BudgetStore, period_starts
from server.state.directory import Directory
from server.state.gates import GateFactory
from server.state.ledger import Ledger
from server.state.memory import (
    MemoryBreakers,
    MemoryBudgetStore,
    MemoryDirectory,
    MemoryGates,
    MemoryLedger,
    MemoryResponseStore,
)
from server.state.redis.link import RedisLink
from server.state.responses import ResponseStore

log = logging.getLogger("switchyard")
_SEED_RETRY = 1.0  # seconds between tries to read spend back while the ledger cannot answer


class Stores:
    """The stores one gateway runs on; `responses` is None when the cache is off."""

    __slots__ = (
        "_clock",
        "_seeding",
        "breakers",
        "budgets",
        "directory",
        "gates",
        "ledger",
        "responses",
        "shared",
    )

    def __init__(
        self,
        budgets: BudgetStore,
        ledger: Ledger,
        gates: GateFactory,
        breakers: BreakerRegistry,
        responses: ResponseStore | None,
        *,
        directory: Directory | None = None,
        clock: Clock = SYSTEM_CLOCK,
        shared: RedisLink | None = None,
    ) -> None:
        self.budgets = budgets
        self.ledger = ledger
        self.directory: Directory = directory or MemoryDirectory()
        self.gates = gates
        self.breakers = breakers
        self.responses = responses
        self._clock = clock
        self._seeding: asyncio.Task[None] | None = None
        self.shared = shared  # the Redis link when state is shared, for start, close and gauges

    async def start(self) -> None:
        """Open the ledger, then read each tenant's spend back into the budgets.

        When the ledger cannot answer yet, seeding goes on in the background;
        meanwhile the budget store refuses (or admits, if told to) tenants
        with a budget.
        """
        await self.ledger.start()
        if self.shared is not None:
            await self.shared.check()
            for store in (self.breakers, self.budgets, self.responses):
                start = getattr(store, "start", None)
                if start is not None:
                    start()
        if self.budgets.seeded:
            return
        if not await self._seed_once():
            self.request_seed()

    def request_seed(self) -> None:
        """Read the spend back from the ledger in the background (unless already doing so)."""
        if self._seeding is None or self._seeding.done():
            self._seeding = asyncio.get_running_loop().create_task(
                self._seed_until_done(), name="budget-seed"
            )

    async def _seed_once(self) -> bool:
        now = self._clock.wall()
        day, month = period_starts(now)
        try:
            spend = await self.ledger.spend(day, month)
        except LedgerUnavailableError:
            return False
        await self.budgets.seed(spend, now)
        if not self.budgets.seeded:  # the budget store (Redis) did not take it: try again
            return False
        log.info("budgets: spend of %d tenants read back from the ledger", len(spend))
        return True

    async def _seed_until_done(self) -> None:
        if not await self._seed_once():
            log.warning("budgets: the spend cannot be read back yet; tenants with a budget wait")
        while not self.budgets.seeded:
            await self._clock.sleep(_SEED_RETRY)
            await self._seed_once()

    async def aclose(self, within: float = 10.0) -> None:
        """Write out what the stores still hold in queues (the ledger's records)."""
        if self._seeding is not None:
            self._seeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._seeding
        await self.ledger.aclose(within)
        if self.shared is not None:
            for store in (self.gates, self.budgets, self.breakers):
                close = getattr(store, "aclose", None)
                if close is not None:
                    await close()
            await self.shared.aclose()


def open_ledger(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> tuple[Ledger, Directory]:
    """The ledger `settings` ask for (SQLite by default, PostgreSQL, or memory), and the
    directory of tenants and keys, which lives in the same database."""
    target = database_target(settings)
    if target.kind == "memory":
        return MemoryLedger(settings.limits.max_callers), MemoryDirectory()
    from server.state.sql.database import (  # noqa: PLC0415 (only for a SQL ledger)
        Database,
        PostgresDatabase,
        SqliteDatabase,
    )
    from server.state.sql.directory import SqlDirectory  # noqa: PLC0415
    from server.state.sql.ledger import SqlLedger  # noqa: PLC0415

    data_dir = Path(settings.ledger.data_dir)
    database: Database
    if target.kind == "sqlite":
        assert target.path is not None
        database = SqliteDatabase(target.path)
        ledger = SqlLedger(database, data_dir, settings.ledger, clock, sqlite_file=target.path)
    else:
        database = PostgresDatabase(target.dsn, target.shown)
        ledger = SqlLedger(database, data_dir, settings.ledger, clock)
    return ledger, SqlDirectory(database)


def open_stores(
    settings: Settings, models: Iterable[ModelSpec], clock: Clock = SYSTEM_CLOCK
) -> Stores:
    """The stores `settings` ask for: the ledger per SWITCHYARD_DATABASE_URL, the rest in
    Redis when SWITCHYARD_REDIS_URL is set, else in memory."""
    models = tuple(models)
    limits = settings.limits
    ledger, directory = open_ledger(settings, clock)
    durable = not isinstance(ledger, MemoryLedger)
    admit_unseeded = settings.ledger.budgets_until_seeded == "admit"
    # With keys, tenants are known and their budgets change at run time.
    track_all = settings.auth.effective_mode != "none"
    if settings.redis.url:
        return _open_shared(
            settings,
            models,
            clock,
            ledger,
            directory,
            admit_unseeded=admit_unseeded,
            track_all=track_all,
        )
    return Stores(
        budgets=MemoryBudgetStore(
            settings.budgets,
            clock,
            seeded=not durable,
            admit_unseeded=admit_unseeded,
            track_all=track_all,
            max_callers=limits.max_callers,
        ),
        ledger=ledger,
        gates=MemoryGates(limits.max_waiters, limits.max_wait, clock),
        breakers=MemoryBreakers(models, settings.breaker, clock),
        responses=MemoryResponseStore(settings.cache, clock) if settings.cache.enabled else None,
        directory=directory,
        clock=clock,
    )


def _open_shared(
    settings: Settings,
    models: tuple[ModelSpec, ...],
    clock: Clock,
    ledger: Ledger,
    directory: Directory,
    *,
    admit_unseeded: bool,
    track_all: bool,
) -> Stores:
    """Budgets, gates, breakers and the cache in Redis; the ledger and directory in SQL."""
    from server.state.redis import (  # noqa: PLC0415 (only with Redis)
        RedisBreakers,
        RedisBudgetStore,
        RedisGates,
        RedisResponseStore,
    )

    redis = settings.redis
    link = RedisLink(redis, clock)
    budgets = RedisBudgetStore(
        link,
        settings.budgets,
        clock,
        admit_unseeded=admit_unseeded,
        track_all=track_all,
        lease_ttl=redis.lease_ttl,
    )
    limits = settings.limits
    stores = Stores(
        budgets=budgets,
        ledger=ledger,
        gates=RedisGates(
            link,
            limits.max_waiters,
            limits.max_wait,
            lease_ttl=redis.lease_ttl,
            replicas=redis.replicas,
            clock=clock,
        ),
        breakers=RedisBreakers(link, models, settings.breaker, clock),
        responses=(
            RedisResponseStore(link, settings.cache, {m.name: m for m in models}, clock)
            if settings.cache.enabled
            else None
        ),
        directory=directory,
        clock=clock,
        shared=link,
    )
    budgets.on_lost = stores.request_seed
    return stores
