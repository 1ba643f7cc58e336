"""Bounded per-caller state: callers who name themselves cannot grow the gateway's memory.

In none-auth mode any name is a caller, so every structure kept per caller is
bounded by SWITCHYARD_MAX_CALLERS, the least recently seen going first. The
tests count entries (not RSS): 25,000 distinct callers leave at most the bound.
A budget's spend is never forgotten while it is in force.
"""

from __future__ import annotations

import calendar

import pytest

from server.catalog import default_catalog
from server.domain import Attempt, Outcome, Usage
from server.errors import RateLimitedError
from server.settings import BudgetLimits, BudgetSettings
from server.state.ledger import CallRecord
from server.state.memory import MemoryBudgetStore, MemoryLedger
from tests.helpers import FakeClock

USD = 1_000_000_000
NOON = float(calendar.timegm((2026, 11, 24, 12, 0, 0)))  # 2026-11-24 12:00 UTC
CALLERS = 25_000
BOUND = 1000
GPT = default_catalog().models["gpt-4.1"]


def store(bound: int = BOUND, **budgets: BudgetLimits) -> tuple[MemoryBudgetStore, FakeClock]:
    """A memory budget store with a default daily budget of 1 USD and `budgets` by name."""
    clock = FakeClock(wall=NOON)
    settings = BudgetSettings(BudgetLimits(day=USD), budgets)
    return MemoryBudgetStore(settings, clock, max_callers=bound), clock


async def test_25000_callers_under_the_default_budget_keep_the_store_at_its_bound():
    budgets, _ = store()
    for n in range(CALLERS):
        assert (await budgets.admission(f"caller-{n}", 1000)).admitted
        if n % 100 == 0:
            await budgets.status("regular")  # seen all along: the least recently seen go first
    assert len(budgets._accounts) == BOUND
    assert "regular" in budgets._accounts
    assert f"caller-{CALLERS - 1}" in budgets._accounts
    assert "caller-0" not in budgets._accounts  # seen once, long ago


async def test_spend_in_force_is_never_forgotten_a_new_caller_is_refused_instead():
    budgets, clock = store(bound=3)
    for name in ("a", "b", "c"):
        held = await budgets.reserve(name, USD // 10)
        await budgets.settle(held, USD // 10)
    with pytest.raises(RateLimitedError) as refused:
        await budgets.reserve("d", USD // 10)
    assert "SWITCHYARD_MAX_CALLERS" in refused.value.message
    assert "'d'" in refused.value.message
    assert refused.value.retry_after == pytest.approx(12 * 3600)  # when the days reset
    assert not (await budgets.admission("d", 1)).admitted
    assert [s.spent for s in await budgets.status("a")] == [USD // 10]  # still counted
    clock.advance(12 * 3600 + 1)  # the next UTC day: yesterday's spend is out of force
    assert await budgets.reserve("d", USD // 10) is not None
    assert len(budgets._accounts) == 3


async def test_a_hold_in_flight_keeps_its_caller():
    budgets, _ = store(bound=2)
    held = await budgets.reserve("in-flight", USD // 10)  # nothing spent yet, but held
    await budgets.admission("idle", 1)  # kept, holds nothing
    await budgets.admission("newcomer", 1)  # room made: `idle` goes, not `in-flight`
    assert set(budgets._accounts) == {"in-flight", "newcomer"}
    await budgets.settle(held, USD // 20)
    assert [s.spent for s in await budgets.status("in-flight")] == [USD // 20]


async def test_callers_with_a_budget_of_their_own_are_known_and_never_evicted():
    budgets, _ = store(bound=10, billing=BudgetLimits(day=5 * USD))
    held = await budgets.reserve("billing", USD)
    await budgets.settle(held, USD)
    for n in range(500):
        await budgets.admission(f"caller-{n}", 1)
    assert "billing" in budgets._accounts
    assert len(budgets._accounts) == 10 + 1
    assert [s.spent for s in await budgets.status("billing")] == [USD]


async def test_the_seed_from_the_ledger_comes_back_with_an_evicted_caller():
    budgets, _ = store(bound=1)
    await budgets.seed({"old": (USD // 4, USD // 4)}, NOON)
    await budgets.admission("old", 1)  # kept with its seeded spend, nothing added since
    await budgets.admission("new", 1)  # so it may go: the ledger's figure is not lost
    assert set(budgets._accounts) == {"new"}
    await budgets.admission("old", 1)
    assert [s.spent for s in await budgets.status("old")] == [USD // 4]


def record(tenant: str, at: float) -> CallRecord:
    attempt = Attempt(GPT, Outcome.SUCCESS, 0.1, 200, usage=Usage(10, 5), cost=1000)
    return CallRecord(f"r-{tenant}-{at}", tenant, at, (attempt,))


async def test_the_memory_ledger_keeps_the_totals_of_at_most_the_bound_of_callers():
    ledger = MemoryLedger(max_tenants=BOUND)
    for n in range(CALLERS):
        ledger.record(record(f"caller-{n}", NOON + n))
        if n % 100 == 0:
            ledger.record(record("regular", NOON + n))
    assert len(ledger._books) == BOUND
    regular = await ledger.summary("regular", NOON, NOON + CALLERS + 60)
    assert regular.requests == CALLERS // 100
    latest = await ledger.summary(f"caller-{CALLERS - 1}", NOON, NOON + CALLERS + 60)
    assert latest.requests == 1
    evicted = await ledger.summary("caller-0", NOON, NOON + CALLERS + 60)
    assert evicted.requests == 0  # the least recently seen went first
