"""The budget store: spend per tenant, per UTC day and month, held by reserve-then-settle.

Before a call goes to the relay, the budget stage reserves the most the call
could cost (`server.pricing.largest_cost`); when the call ends it settles:
the reservation is released and the actual cost is added to the spend. A call
is admitted only when, for every budget of its tenant, spend + reservations
in flight + its own reservation stay within the limit.

`reserve` is ONE atomic operation of the store: check and hold together, so
concurrent calls can never together reserve past a budget, whatever else runs
in between. The in-memory store does it with no await inside the method; a
Redis store does it in one script, a SQL store in one transaction. Callers
rely on nothing else.

A reservation is a lease: it records when it was taken and may carry an
expiry, after which a store shared by several processes may reclaim it (its
holder died without settling). In memory it never expires.

All amounts are integer nano-dollars. A budget resets at the next UTC day or
month boundary: the spend starts again from zero, while reservations of
calls still in flight stay held, and such a call's cost lands in the period
in which it settles (the conservative choice). A call can settle above its
reservation when the relay counts more input tokens than the estimate, or
bills a failed attempt before a fallback succeeds; later calls then see the
higher spend::

    store = MemoryBudgetStore(settings.budgets)
    held = await store.reserve("billing-svc", largest_cost(route))  # or BudgetExceededError
    ...
    await store.settle(held, call.cost)

The refusal messages and the period arithmetic below are shared by every
backend, so a refusal reads the same whichever store made it.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from server.domain import Admission, BudgetPressure, TenantPolicy
from server.errors import BudgetExceededError
from server.pricing import display_usd

DAY = 86_400
PERIODS = ("day", "month")
_NAMES = {"day": "daily", "month": "monthly"}


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money held for one call in flight: a lease, released by `BudgetStore.settle`.

    `expires_at` (wall-clock seconds) is when a shared store may reclaim it
    if it was never settled; None: never.
    """

    tenant: str
    amount: int
    taken_at: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget of a tenant now, for GetUsage."""

    period: str  # "day" or "month"
    limit: int
    spent: int  # settled spend plus reservations in flight
    resets_at: float  # wall-clock seconds


class BudgetStore(Protocol):
    """Where budgets are checked, held and settled.

    Spend survives a restart through the ledger: until `seed` has given the
    store each tenant's spend of the current day and month, a tenant with a
    budget is refused with BudgetUnknownError (UNAVAILABLE), unless the store
    was told to admit meanwhile.
    """

    @property
    def enabled(self) -> bool:
        """Does any tenant have a budget? (If not, the budget stage is left out.)"""
        ...

    @property
    def seeded(self) -> bool:
        """Has the spend been read back from the ledger (or is there none to read)?"""
        ...

    async def seed(self, spend: Mapping[str, tuple[int, int]], at: float) -> None:
        """Set every tenant's settled spend of the day and month that contain `at` to
        `spend[tenant]` = (day, month), 0 for tenants not in it; holds in flight stay."""
        ...

    async def reserve(
        self, tenant: str, amount: int, policy: TenantPolicy | None = None
    ) -> Reservation | None:
        """Atomically check and hold `amount`, or raise BudgetExceededError.

        The limits are `policy`'s (the tenant's, with the call), else the store's
        configured ones. None when nothing is kept for the tenant (nothing to settle).
        """
        ...

    async def settle(self, reservation: Reservation | None, actual: int) -> None:
        """Release a reservation and add the call's actual cost to the spend."""
        ...

    async def admission(
        self, tenant: str, amount: int, policy: TenantPolicy | None = None
    ) -> Admission:
        """Would a call costing up to `amount` be admitted now? (Holds nothing.)"""
        ...

    async def pressure(
        self, tenant: str, policy: TenantPolicy | None = None
    ) -> BudgetPressure | None:
        """The first budget whose spend reached the downgrade fraction, if any."""
        ...

    async def status(
        self, tenant: str, policy: TenantPolicy | None = None
    ) -> tuple[BudgetStatus, ...]:
        """The tenant's budgets now: limit, spend in flight included, and reset time."""
        ...


def next_reset(period: str, now: float) -> float:
    """The next UTC day or month boundary after `now` (wall-clock seconds)."""
    if period == "day":
        return float((int(now // DAY) + 1) * DAY)
    moment = time.gmtime(now)
    year, month = (
        (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
    )
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def never_fits(tenant: str, period: str, limit: int, amount: int) -> BudgetExceededError:
    """The refusal of a call that costs more than the whole budget."""
    return BudgetExceededError(
        f"this call may cost up to {display_usd(amount)}, more than caller {tenant!r}'s"
        f" whole {_NAMES[period]} budget of {display_usd(limit)};"
        " lower max_tokens or choose a cheaper model",
        None,
    )


def spent_until_reset(
    tenant: str,
    period: str,
    *,
    used: int,
    limit: int,
    amount: int,
    resets_at: float,
    now: float,
) -> BudgetExceededError:
    """The refusal of a call that fits the budget, but not what is left of it."""
    return BudgetExceededError(
        f"caller {tenant!r} has used {display_usd(used)} of its"
        f" {_NAMES[period]} budget of {display_usd(limit)} (calls in flight"
        f" included) and this call may cost up to {display_usd(amount)}; the budget resets"
        f" at {_iso(resets_at)}: wait for it, lower max_tokens or choose a cheaper"
        " model",
        max(resets_at - now, 0.0),
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_starts(now: float) -> tuple[float, float]:
    """The starts of the UTC day and month that contain `now`."""
    moment = time.gmtime(now)
    day = float(int(now // DAY) * DAY)
    month = float(calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0)))
    return day, month
