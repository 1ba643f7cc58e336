"""The gateway's state, behind one small async protocol per kind of store.

    budgets.py    BudgetStore      reserve / settle / admission / pressure / status
    ledger.py     Ledger           record (never waits) / summary / aclose
    gates.py      GateFactory      RateGate (acquire / refund), ConcurrencyGate (leases)
    breakers.py   BreakerRegistry  admit / succeeded / failed / neutral / status
    responses.py  ResponseStore    get / peek / put, and the cache key

Each protocol module also holds what every backend shares (records, refusal
messages, the key). A backend is a package beside them (`memory/` today)
with one class per protocol; `open_stores` is the one switch that picks a
backend per store from the settings, so adding one is a package here plus a
line below. Stages see only the protocols: a stage never knows which backend
it has, and a store never imports a stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import ModelSpec
from server.settings import Settings
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


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores one gateway runs on; `responses` is None when the cache is off."""

    budgets: BudgetStore
    ledger: Ledger
    gates: GateFactory
    breakers: BreakerRegistry
    responses: ResponseStore | None

    async def aclose(self) -> None:
        """Write out what the stores still hold in queues (the ledger's records)."""
        await self.ledger.aclose()


def open_stores(
    settings: Settings, models: Iterable[ModelSpec], clock: Clock = SYSTEM_CLOCK
) -> Stores:
    """The stores `settings` ask for (every store is in memory today)."""
    limits = settings.limits
    return Stores(
        budgets=MemoryBudgetStore(settings.budgets, clock),
        ledger=MemoryLedger(),
        gates=MemoryGates(limits.max_waiters, limits.max_wait, clock),
        breakers=MemoryBreakers(models, settings.breaker, clock),
        responses=MemoryResponseStore(settings.cache, clock) if settings.cache.enabled else None,
    )
