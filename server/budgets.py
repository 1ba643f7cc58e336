"""Spend budgets per caller, per UTC day and month, held by reserve-then-settle.

Before a call goes to the relay, the budget stage reserves the most the call
could cost (`largest_cost`); when the call ends it settles: the reservation
is released and the actual cost is added to the spend. A call is admitted
only when, for every budget of its caller, spend + reservations in flight +
its own reservation stay within the limit. Checking and reserving happen
with no await in between, and the gateway runs on one asyncio thread, so
concurrent calls can never together reserve past a budget.

All amounts are integer nano-dollars. A budget resets at the next UTC day or
month boundary: the spend starts again from zero, while reservations of
calls still in flight stay held, and such a call's cost lands in the period
in which it settles (the conservative choice).

What is reserved is the largest cost of ONE attempt on any model of the
route's chain: Switchyard's input estimate (see ``server/tokens.py``) at the
model's input price plus the model's effective max_tokens at its output
price. A call can still settle above its reservation when the relay counts
more input tokens than the estimate, or bills a failed attempt before a
fallback succeeds; later calls then see the higher spend::

    book = BudgetBook(settings.budgets)
    held = book.reserve("billing-svc", largest_cost(route))   # or BudgetExceededError
    ...
    book.settle(held, call.cost)
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from server.domain import ADMITTED, Admission, BudgetPressure, RouteDecision
from server.errors import BudgetExceededError
from server.pricing import display_usd
from server.settings import BudgetLimits, BudgetSettings

DAY = 86_400
_NAMES = {"day": "daily", "month": "monthly"}


def largest_cost(route: RouteDecision) -> int:
    """The most one attempt of `route` can cost on any model of its chain, in nano-dollars."""
    tokens = route.input_tokens
    return max(
        tokens * model.price.input_nanos + max_tokens * model.price.output_nanos
        for model, max_tokens in zip(route.chain, route.chain_max_tokens, strict=True)
    )


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget of a caller now, for GetUsage."""

    period: str  # "day" or "month"
    limit: int
    spent: int  # settled spend plus reservations in flight
    resets_at: float  # wall-clock seconds


class _Period:
    """The running state of one budget of one caller."""

    __slots__ = ("limit", "name", "near_at", "reserved", "resets_at", "spent")

    def __init__(self, name: str, limit: int, near_at: int | None) -> None:
        self.name = name
        self.limit = limit
        self.near_at = near_at  # spend at which budget-aware routing kicks in
        self.spent = 0
        self.reserved = 0
        self.resets_at = 0.0  # forces a roll on first use

    def roll(self, now: float) -> None:
        """Start a new period when the current one has ended."""
        if now >= self.resets_at:
            self.spent = 0
            self.resets_at = _next_reset(self.name, now)

    @property
    def used(self) -> int:
        """Spend plus reservations in flight."""
        return self.spent + self.reserved


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money held for one call in flight, released by `BudgetBook.settle`."""

    periods: tuple[_Period, ...]
    amount: int


class BudgetBook:
    """Every caller's budgets; the one place spend is checked, reserved and settled."""

    __slots__ = ("_accounts", "_clock", "_enabled", "_settings")

    def __init__(self, settings: BudgetSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._accounts: dict[str, tuple[_Period, ...]] = {}
        limits = (settings.default, *settings.callers.values())
        self._enabled = any(lim.day is not None or lim.month is not None for lim in limits)

    @property
    def enabled(self) -> bool:
        """Does any caller have a budget? (If not, the budget stage is left out.)"""
        return self._enabled

    def _periods(self, caller: str) -> tuple[_Period, ...]:
        """The caller's budgets, rolled to now (empty when it has none)."""
        if not self._enabled:
            return ()
        periods = self._accounts.get(caller)
        if periods is None:
            periods = self._accounts[caller] = self._open(self._settings.limits(caller))
        if periods:
            now = self._clock()
            for period in periods:
                period.roll(now)
        return periods

    def _open(self, limits: BudgetLimits) -> tuple[_Period, ...]:
        fraction = self._settings.downgrade_at
        periods = []
        for name, limit in (("day", limits.day), ("month", limits.month)):
            if limit is not None:
                near_at = None if fraction is None else int(limit * fraction)
                periods.append(_Period(name, limit, near_at))
        return tuple(periods)

    def reserve(self, caller: str, amount: int) -> Reservation | None:
        """Hold `amount` for a call, or raise BudgetExceededError; None when unbudgeted."""
        periods = self._periods(caller)
        if not periods:
            return None
        refusal = self._refusal(caller, periods, amount)
        if refusal is not None:
            raise refusal
        for period in periods:
            period.reserved += amount
        return Reservation(periods, amount)

    def settle(self, reservation: Reservation | None, actual: int) -> None:
        """Release a reservation and add the call's actual cost to the spend."""
        if reservation is None:
            return
        now = self._clock()
        for period in reservation.periods:
            period.roll(now)
            period.reserved -= reservation.amount
            period.spent += actual

    def admission(self, caller: str, amount: int) -> Admission:
        """Would a call costing up to `amount` be admitted now? (Reserves nothing.)"""
        periods = self._periods(caller)
        refusal = self._refusal(caller, periods, amount) if periods else None
        return ADMITTED if refusal is None else Admission(False, refusal.message)

    def pressure(self, caller: str) -> BudgetPressure | None:
        """The first budget whose spend reached the downgrade fraction, if any."""
        for period in self._periods(caller):
            if period.near_at is not None and period.used >= period.near_at:
                return BudgetPressure(period.name, period.used, period.limit)
        return None

    def status(self, caller: str) -> tuple[BudgetStatus, ...]:
        """The caller's budgets now: limit, spend in flight included, and reset time."""
        return tuple(
            BudgetStatus(p.name, p.limit, p.used, p.resets_at) for p in self._periods(caller)
        )

    def _refusal(
        self, caller: str, periods: tuple[_Period, ...], amount: int
    ) -> BudgetExceededError | None:
        short = [p for p in periods if p.used + amount > p.limit]
        if not short:
            return None
        now = self._clock()
        never = [p for p in short if amount > p.limit]
        if never:
            period = never[0]
            return BudgetExceededError(
                f"this call may cost up to {display_usd(amount)}, more than caller {caller!r}'s"
                f" whole {_NAMES[period.name]} budget of {display_usd(period.limit)};"
                " lower max_tokens or choose a cheaper model",
                None,
            )
        period = max(short, key=lambda p: p.resets_at)  # the one that frees up last
        return BudgetExceededError(
            f"caller {caller!r} has used {display_usd(period.used)} of its"
            f" {_NAMES[period.name]} budget of {display_usd(period.limit)} (calls in flight"
            f" included) and this call may cost up to {display_usd(amount)}; the budget resets"
            f" at {_iso(period.resets_at)}: wait for it, lower max_tokens or choose a cheaper"
            " model",
            max(period.resets_at - now, 0.0),
        )


def _next_reset(period: str, now: float) -> float:
    """The next UTC day or month boundary after `now`."""
    if period == "day":
        return float((int(now // DAY) + 1) * DAY)
    moment = time.gmtime(now)
    year, month = (
        (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
    )
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
