"""Budgets: reserve-then-settle in exact nanos, UTC resets, admission and pressure."""

import calendar
from decimal import Decimal

import pytest

from server.budgets import BudgetBook, largest_cost
from server.domain import Message, Request, Role
from server.errors import BudgetExceededError
from server.pipeline.router import Router
from server.settings import BudgetLimits, BudgetSettings, RoutingSettings

from .pipeline.fakes import CATALOG

USD = 1_000_000_000
NOON = float(calendar.timegm((2026, 11, 24, 12, 0, 0)))  # 2026-11-24 12:00 UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def book(day=None, month=None, callers=None, downgrade_at=None, now=NOON):
    clock = Clock(now)
    settings = BudgetSettings(BudgetLimits(day, month), callers or {}, downgrade_at)
    return BudgetBook(settings, clock), clock


def test_reservations_never_exceed_the_budget_and_settle_to_the_actual_cost():
    budgets, _ = book(day=1 * USD)
    held = [budgets.reserve("svc", 300_000_000) for _ in range(3)]  # $0.90 reserved
    with pytest.raises(BudgetExceededError):
        budgets.reserve("svc", 100_000_001)  # $0.100000001 would pass $1.00
    one_more = budgets.reserve("svc", 100_000_000)  # exactly $1.00: admitted
    [status] = budgets.status("svc")
    assert status.spent == 1 * USD and status.limit == 1 * USD
    budgets.settle(held[0], 120_000)  # the call cost $0.00012, not $0.30
    assert budgets.status("svc")[0].spent == 700_000_000 + 120_000
    for reservation in (*held[1:], one_more):
        budgets.settle(reservation, 0)
    assert budgets.status("svc")[0].spent == 120_000


def test_refusal_states_budget_spend_cost_and_reset():
    budgets, clock = book(day=5 * USD)
    budgets.settle(budgets.reserve("billing", USD), 4_990_000_000)
    with pytest.raises(BudgetExceededError) as caught:
        budgets.reserve("billing", 20_000_000)
    message = caught.value.message
    assert "daily budget of $5.00" in message
    assert "used $4.99" in message
    assert "up to $0.02" in message
    assert "resets at 2026-11-25T00:00:00Z" in message
    assert caught.value.retry_after == 12 * 3600  # noon to midnight
    assert caught.value.code.name == "RESOURCE_EXHAUSTED"
    clock.now += 12 * 3600  # midnight UTC: a new day
    budgets.reserve("billing", 20_000_000)
    assert budgets.status("billing")[0].spent == 20_000_000


def test_a_call_larger_than_the_whole_budget_can_never_fit():
    budgets, _ = book(day=USD)
    with pytest.raises(BudgetExceededError, match="more than caller 'x'") as caught:
        budgets.reserve("x", USD + 1)
    assert caught.value.retry_after is None


def test_month_budget_resets_on_the_first_of_the_next_month_and_in_flight_holds_survive():
    december = float(calendar.timegm((2026, 12, 31, 23, 0, 0)))
    budgets, clock = book(month=10 * USD, now=december)
    budgets.settle(budgets.reserve("svc", USD), 9 * USD)  # spent $9
    in_flight = budgets.reserve("svc", USD)  # holds the last dollar
    [status] = budgets.status("svc")
    assert status.period == "month" and status.spent == 10 * USD
    assert status.resets_at == calendar.timegm((2027, 1, 1, 0, 0, 0))
    clock.now = status.resets_at
    # a new month: the $9 is forgotten, the $1 still in flight stays held
    assert budgets.status("svc")[0].spent == USD
    budgets.settle(in_flight, 300_000_000)  # it settles in the month it ends in
    assert budgets.status("svc")[0].spent == 300_000_000


def test_day_and_month_are_both_enforced():
    budgets, _ = book(day=2 * USD, month=3 * USD)
    budgets.settle(budgets.reserve("svc", USD), int(1.5 * USD))
    with pytest.raises(BudgetExceededError, match=r"daily budget of \$2\.00"):
        budgets.reserve("svc", USD)
    assert [s.period for s in budgets.status("svc")] == ["day", "month"]


def test_callers_with_their_own_table_replace_the_default():
    budgets, _ = book(day=USD, callers={"big": BudgetLimits(month=100 * USD)})
    assert [(s.period, s.limit) for s in budgets.status("big")] == [("month", 100 * USD)]
    assert [(s.period, s.limit) for s in budgets.status("small")] == [("day", USD)]


def test_no_budget_means_no_reservation_and_always_admitted():
    budgets, _ = book()
    assert not budgets.enabled
    assert budgets.reserve("svc", 10**15) is None
    assert budgets.admission("svc", 10**15).admitted
    budgets.settle(None, 5)  # nothing to settle
    assert budgets.status("svc") == ()


def test_admission_reserves_nothing():
    budgets, _ = book(day=USD)
    assert budgets.admission("svc", USD).admitted
    refused = budgets.admission("svc", USD + 1)
    assert not refused.admitted and "more than" in refused.reason
    assert budgets.status("svc")[0].spent == 0


def test_pressure_from_the_downgrade_fraction_in_flight_included():
    budgets, _ = book(day=10 * USD, downgrade_at=Decimal("0.8"))
    held = budgets.reserve("svc", 7_999_999_999)
    assert budgets.pressure("svc") is None  # $7.999999999 < $8.00
    budgets.settle(held, 8 * USD)
    pressure = budgets.pressure("svc")
    assert pressure is not None
    assert (pressure.period, pressure.spent, pressure.limit) == ("day", 8 * USD, 10 * USD)


def test_largest_cost_is_the_priciest_model_of_the_chain():
    router = Router(CATALOG, RoutingSettings())
    request = Request(messages=(Message(Role.USER, "hi"),), task=None, max_tokens=100)
    route = router.decide(request)  # simple: gemini-2.5-flash, falling back to gpt-4.1
    assert [m.name for m in route.chain] == ["gemini-2.5-flash", "gpt-4.1"]
    # "hi" = 1 + 4 = 5 input tokens; gemini: 5*2,500 + 100*10,000 = 1,012,500
    # gpt-4.1: 5*8,000 + 100*32,000 = 3,240,000 -> the reservation
    assert largest_cost(route) == 3_240_000
    alone = router.decide(Request(messages=request.messages, max_tokens=100, fallback=False))
    assert largest_cost(alone) == 1_012_500
