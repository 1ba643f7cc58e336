"""The budget store contract: reserve-then-settle in exact nanos, UTC resets, admission, pressure."""

import asyncio
import calendar
from decimal import Decimal

import pytest

from server.errors import BudgetExceededError, BudgetUnknownError
from server.settings import BudgetLimits, BudgetSettings
from tests.helpers import FakeClock

USD = 1_000_000_000
NOON = float(calendar.timegm((2026, 11, 24, 12, 0, 0)))  # 2026-11-24 12:00 UTC
DAY_SECONDS = 86_400


@pytest.fixture
def book(backend):
    def make(day=None, month=None, callers=None, downgrade_at=None, now=NOON):
        clock = FakeClock(wall=now)
        settings = BudgetSettings(BudgetLimits(day, month), callers or {}, downgrade_at)
        return backend.budgets(settings, clock), clock

    return make


async def spent(store, tenant="svc") -> int:
    return (await store.status(tenant))[0].spent


async def test_reservations_never_exceed_the_budget_and_settle_to_the_actual_cost(book):
    budgets, _ = book(day=1 * USD)
    held = [await budgets.reserve("svc", 300_000_000) for _ in range(3)]  # $0.90 reserved
    with pytest.raises(BudgetExceededError):
        await budgets.reserve("svc", 100_000_001)  # $0.100000001 would pass $1.00
    one_more = await budgets.reserve("svc", 100_000_000)  # exactly $1.00: admitted
    [status] = await budgets.status("svc")
    assert status.spent == 1 * USD and status.limit == 1 * USD
    await budgets.settle(held[0], 120_000)  # the call cost $0.00012, not $0.30
    assert await spent(budgets) == 700_000_000 + 120_000
    for reservation in (*held[1:], one_more):
        await budgets.settle(reservation, 0)
    assert await spent(budgets) == 120_000


async def test_concurrent_reservations_are_atomic(book):
    budgets, _ = book(day=1 * USD)
    outcomes = await asyncio.gather(
        *(budgets.reserve("svc", 150_000_000) for _ in range(10)), return_exceptions=True
    )
    held = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert (len(held), len(refused)) == (6, 4)  # 6 x $0.15 = $0.90; a 7th would pass $1.00
    assert await spent(budgets) == 900_000_000


async def test_a_reservation_is_a_lease_that_names_its_tenant_and_time(book):
    budgets, clock = book(day=USD)
    held = await budgets.reserve("svc", 5)
    assert held is not None
    assert (held.tenant, held.amount, held.taken_at) == ("svc", 5, clock.wall())


async def test_refusal_states_budget_spend_cost_and_reset(book):
    budgets, clock = book(day=5 * USD)
    await budgets.settle(await budgets.reserve("billing", USD), 4_990_000_000)
    with pytest.raises(BudgetExceededError) as caught:
        await budgets.reserve("billing", 20_000_000)
    message = caught.value.message
    assert "daily budget of $5.00" in message
    assert "used $4.99" in message
    assert "up to $0.02" in message
    assert "resets at 2026-11-25T00:00:00Z" in message
    assert caught.value.retry_after == 12 * 3600  # noon to midnight
    assert caught.value.code.name == "RESOURCE_EXHAUSTED"
    clock.advance(12 * 3600)  # midnight UTC: a new day
    await budgets.reserve("billing", 20_000_000)
    assert await spent(budgets, "billing") == 20_000_000


async def test_a_call_larger_than_the_whole_budget_can_never_fit(book):
    budgets, _ = book(day=USD)
    with pytest.raises(BudgetExceededError, match="more than caller 'x'") as caught:
        await budgets.reserve("x", USD + 1)
    assert caught.value.retry_after is None


async def test_month_budget_resets_on_the_first_of_the_next_month_and_in_flight_holds_survive(
    book,
):
    december = float(calendar.timegm((2026, 12, 31, 23, 0, 0)))
    budgets, clock = book(month=10 * USD, now=december)
    await budgets.settle(await budgets.reserve("svc", USD), 9 * USD)  # spent $9
    in_flight = await budgets.reserve("svc", USD)  # holds the last dollar
    [status] = await budgets.status("svc")
    assert status.period == "month" and status.spent == 10 * USD
    assert status.resets_at == calendar.timegm((2027, 1, 1, 0, 0, 0))
    clock.set_wall(status.resets_at)
    # a new month: the $9 is forgotten, the $1 still in flight stays held
    assert await spent(budgets) == USD
    await budgets.settle(in_flight, 300_000_000)  # it settles in the month it ends in
    assert await spent(budgets) == 300_000_000


async def test_day_and_month_are_both_enforced(book):
    budgets, _ = book(day=2 * USD, month=3 * USD)
    await budgets.settle(await budgets.reserve("svc", USD), int(1.5 * USD))
    with pytest.raises(BudgetExceededError, match=r"daily budget of \$2\.00"):
        await budgets.reserve("svc", USD)
    assert [s.period for s in await budgets.status("svc")] == ["day", "month"]


async def test_tenants_with_their_own_table_replace_the_default(book):
    budgets, _ = book(day=USD, callers={"big": BudgetLimits(month=100 * USD)})
    assert [(s.period, s.limit) for s in await budgets.status("big")] == [("month", 100 * USD)]
    assert [(s.period, s.limit) for s in await budgets.status("small")] == [("day", USD)]


async def test_no_budget_means_no_reservation_and_always_admitted(book):
    budgets, _ = book()
    assert not budgets.enabled
    assert await budgets.reserve("svc", 10**15) is None
    assert (await budgets.admission("svc", 10**15)).admitted
    await budgets.settle(None, 5)  # nothing to settle
    assert await budgets.status("svc") == ()


async def test_admission_reserves_nothing(book):
    budgets, _ = book(day=USD)
    assert (await budgets.admission("svc", USD)).admitted
    refused = await budgets.admission("svc", USD + 1)
    assert not refused.admitted and "more than" in refused.reason
    assert await spent(budgets) == 0


async def test_pressure_from_the_downgrade_fraction_in_flight_included(book):
    budgets, _ = book(day=10 * USD, downgrade_at=Decimal("0.8"))
    held = await budgets.reserve("svc", 7_999_999_999)
    assert await budgets.pressure("svc") is None  # $7.999999999 < $8.00
    await budgets.settle(held, 8 * USD)
    pressure = await budgets.pressure("svc")
    assert pressure is not None
    assert (pressure.period, pressure.spent, pressure.limit) == ("day", 8 * USD, 10 * USD)


async def test_until_spend_is_read_back_budgeted_tenants_are_refused_unavailable(backend):
    clock = FakeClock(wall=NOON)
    settings = BudgetSettings(BudgetLimits(day=USD), {"free": BudgetLimits()})
    budgets = backend.budgets(settings, clock, seeded=False)
    assert not budgets.seeded
    with pytest.raises(BudgetUnknownError) as caught:
        await budgets.reserve("svc", 1)
    assert caught.value.code.name == "UNAVAILABLE" and "not yet read back" in caught.value.message
    assert not (await budgets.admission("svc", 1)).admitted
    assert await budgets.reserve("free", 1) is None  # a tenant without a budget is served
    await budgets.seed({"svc": (900_000_000, 900_000_000)}, clock.wall())
    assert budgets.seeded
    assert await spent(budgets) == 900_000_000  # the spend before the restart is back
    with pytest.raises(BudgetExceededError):
        await budgets.reserve("svc", 100_000_001)
    assert await budgets.reserve("svc", 100_000_000) is not None


async def test_a_setting_may_admit_before_the_seed_and_the_seed_then_replaces_the_spend(backend):
    clock = FakeClock(wall=NOON)
    budgets = backend.budgets(
        BudgetSettings(BudgetLimits(day=USD)), clock, seeded=False, admit_unseeded=True
    )
    held = await budgets.reserve("svc", 300_000_000)
    await budgets.settle(held, 200_000_000)  # journalled, so the seed below includes it
    in_flight = await budgets.reserve("svc", 100_000_000)
    await budgets.seed({"svc": (700_000_000, 700_000_000)}, clock.wall())
    assert await spent(budgets) == 800_000_000  # seeded spend plus the hold still in flight
    await budgets.settle(in_flight, 50_000_000)
    assert await spent(budgets) == 750_000_000


async def test_a_seed_from_yesterday_does_not_count_today(backend):
    clock = FakeClock(wall=NOON)
    budgets = backend.budgets(
        BudgetSettings(BudgetLimits(day=USD, month=10 * USD)), clock, seeded=False
    )
    await budgets.seed({"svc": (400_000_000, 2 * USD)}, clock.wall())
    clock.advance(DAY_SECONDS)  # the next day, the same month
    day, month = await budgets.status("svc")
    assert (day.spent, month.spent) == (0, 2 * USD)
