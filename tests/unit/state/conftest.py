"""One contract suite per store, run against every backend.

A backend is a class below with one factory per store; each test takes the
`backend` fixture, so a new backend (Redis, SQL) is one class here and one
entry in BACKENDS, and must pass every test the memory backend passes.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from server.clock import Clock
from server.domain import ModelSpec
from server.settings import BreakerSettings, BudgetSettings, CacheSettings
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


class MemoryBackend:
    """Every store in this process's memory."""

    name = "memory"

    def budgets(self, settings: BudgetSettings, clock: Clock) -> BudgetStore:
        return MemoryBudgetStore(settings, clock)

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
