"""Budgets in this process's memory (see ``server/state/budgets.py`` for the contract).

Atomicity: each method runs to its end without an await inside, and the
gateway runs on one asyncio thread, so `reserve`'s check and hold can never
interleave with another call's. Nothing outside this class relies on that.
Reservations never expire here: a process that dies takes its holds with it.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import ADMITTED, Admission, BudgetPressure
from server.errors import BudgetExceededError, BudgetUnknownError
from server.settings import BudgetLimits, BudgetSettings
from server.state.budgets import (
    BudgetStatus,
    Reservation,
    never_fits,
    next_reset,
    period_starts,
    spent_until_reset,
)


class _Period:
    """The running state of one budget of one tenant."""

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
            self.resets_at = next_reset(self.name, now)

    @property
    def used(self) -> int:
        """Spend plus reservations in flight."""
        return self.spent + self.reserved


class MemoryBudgetStore:
    """Every tenant's budgets, in memory; spend comes back after a restart through `seed`.

    `seeded` False (a durable ledger is to be read first) refuses budgeted
    tenants until `seed`, unless `admit_unseeded`.
    """

    __slots__ = (
        "_accounts",
        "_admit_unseeded",
        "_clock",
        "_enabled",
        "_seed",
        "_seed_periods",
        "_settings",
    )

    def __init__(
        self,
        settings: BudgetSettings,
        clock: Clock = SYSTEM_CLOCK,
        *,
        seeded: bool = True,
        admit_unseeded: bool = False,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._accounts: dict[str, tuple[_Period, ...]] = {}
        limits = (settings.default, *settings.callers.values())
        self._enabled = any(lim.day is not None or lim.month is not None for lim in limits)
        self._admit_unseeded = admit_unseeded
        self._seed: Mapping[str, tuple[int, int]] | None = {} if seeded else None
        self._seed_periods = period_starts(clock.wall())

    @property
    def enabled(self) -> bool:
        """Does any tenant have a budget?"""
        return self._enabled

    @property
    def seeded(self) -> bool:
        """Has the spend been read back (or was there none to read)?"""
        return self._seed is not None

    async def seed(self, spend: Mapping[str, tuple[int, int]], at: float) -> None:
        """Take each tenant's day and month spend; no await inside, like `reserve`."""
        self._seed = dict(spend)
        self._seed_periods = period_starts(at)
        for tenant, periods in self._accounts.items():
            self._apply_seed(tenant, periods)

    def _apply_seed(self, tenant: str, periods: tuple[_Period, ...]) -> None:
        """Set the tenant's spend in the day and month the seed was read in (0 if absent)."""
        day, month = (self._seed or {}).get(tenant, (0, 0))
        day_start, month_start = self._seed_periods
        now = self._clock.wall()
        for period in periods:
            period.roll(now)
            starts = day_start if period.name == "day" else month_start
            if period.resets_at == next_reset(period.name, starts):  # still the seed's period
                period.spent = day if period.name == "day" else month

    async def reserve(self, tenant: str, amount: int) -> Reservation | None:
        """Check and hold `amount` with no await in between (see the module docstring)."""
        periods = self._periods(tenant)
        if not periods:
            return None
        self._check_seeded(tenant)
        refusal = self._refusal(tenant, periods, amount)
        if refusal is not None:
            raise refusal
        for period in periods:
            period.reserved += amount
        return Reservation(tenant, amount, self._clock.wall())

    async def settle(self, reservation: Reservation | None, actual: int) -> None:
        """Release the hold and add the actual cost, in the period current now."""
        if reservation is None:
            return
        for period in self._periods(reservation.tenant):
            period.reserved -= reservation.amount
            period.spent += actual

    async def admission(self, tenant: str, amount: int) -> Admission:
        """Would `amount` be admitted now? Holds nothing."""
        periods = self._periods(tenant)
        if periods and self._seed is None and not self._admit_unseeded:
            return Admission(False, BudgetUnknownError(tenant).message)
        refusal = self._refusal(tenant, periods, amount) if periods else None
        return ADMITTED if refusal is None else Admission(False, refusal.message)

    def _check_seeded(self, tenant: str) -> None:
        if self._seed is None and not self._admit_unseeded:
            raise BudgetUnknownError(tenant)

    async def pressure(self, tenant: str) -> BudgetPressure | None:
        """The first budget whose use reached the downgrade fraction, if any."""
        for period in self._periods(tenant):
            if period.near_at is not None and period.used >= period.near_at:
                return BudgetPressure(period.name, period.used, period.limit)
        return None

    async def status(self, tenant: str) -> tuple[BudgetStatus, ...]:
        """The tenant's budgets now."""
        return tuple(
            BudgetStatus(p.name, p.limit, p.used, p.resets_at) for p in self._periods(tenant)
        )

    def _periods(self, tenant: str) -> tuple[_Period, ...]:
        """The tenant's budgets, rolled to now (empty when it has none)."""
        if not self._enabled:
            return ()
        periods = self._accounts.get(tenant)
        if periods is None:
            periods = self._accounts[tenant] = self._open(self._settings.limits(tenant))
            if periods and self._seed:
                self._apply_seed(tenant, periods)
        if periods:
            now = self._clock.wall()
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

    def _refusal(
        self, tenant: str, periods: tuple[_Period, ...], amount: int
    ) -> BudgetExceededError | None:
        short = [p for p in periods if p.used + amount > p.limit]
        if not short:
            return None
        never = [p for p in short if amount > p.limit]
        if never:
            return never_fits(tenant, never[0].name, never[0].limit, amount)
        period = max(short, key=lambda p: p.resets_at)  # the one that frees up last
        return spent_until_reset(
            tenant,
            period.name,
            used=period.used,
            limit=period.limit,
            amount=amount,
            resets_at=period.resets_at,
            now=self._clock.wall(),
        )
