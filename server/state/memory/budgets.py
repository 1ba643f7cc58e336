"""Budgets in this process's memory (see ``server/state/budgets.py`` for the contract).

Atomicity: each method runs to its end without an await inside, and the
gateway runs on one asyncio thread, so `reserve`'s check and hold can never
interleave with another call's. Nothing outside this class relies on that.
Reservations never expire here: a process that dies takes its holds with it.

Bounded: callers under the default budget (in none-auth mode any name is
one) are kept for at most `max_callers` (SWITCHYARD_MAX_CALLERS), the least
recently seen going first, but only a caller whose spend can be forgotten
safely goes: nothing held in flight, nothing spent this period beyond what
the ledger gave at start (that comes back with it). When every caller kept
has spend in force, a new one is refused (RESOURCE_EXHAUSTED, naming the
bound) rather than given a budget that forgot what it spent. Callers with
a budget of their own ([budgets."name"], a directory tenant's policy) are
known and never evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import ADMITTED, Admission, BudgetPressure, TenantPolicy
from server.errors import BudgetExceededError, BudgetUnknownError, RateLimitedError
from server.settings import BudgetSettings
from server.state.budgets import (
    BudgetStatus,
    Reservation,
    never_fits,
    next_reset,
    period_starts,
    spent_until_reset,
)

_EVICTION_SCAN = 8  # kept callers looked at for one that can go, before a new one is refused


class _Period:
    """The running state of one budget of one tenant (`limit` None: spend counted, no cap)."""

    __slots__ = ("limit", "name", "near_at", "reserved", "resets_at", "spent")

    def __init__(self, name: str, limit: int | None, near_at: int | None) -> None:
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

    A tenant's limits come with each call (its policy: the admin API's, or the
    TOML file's [budgets] when none is given). `track_all` counts the spend of
    every tenant, with a budget or not, so a budget added later by the admin API
    starts from what the tenant already spent today; without it (none-auth
    mode, where any name is a tenant) only budgeted tenants are kept. `seeded`
    False (a durable ledger is to be read first) refuses budgeted tenants until
    `seed`, unless `admit_unseeded`.
    """

    __slots__ = (
        "_accounts",
        "_admit_unseeded",
        "_clock",
        "_enabled",
        "_max_callers",
        "_recent",
        "_seed",
        "_seed_periods",
        "_settings",
        "_track_all",
    )

    def __init__(
        self,
        settings: BudgetSettings,
        clock: Clock = SYSTEM_CLOCK,
        *,
        seeded: bool = True,
        admit_unseeded: bool = False,
        track_all: bool = False,
        max_callers: int = 10_000,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._accounts: dict[str, tuple[_Period, ...]] = {}
        # Callers under the default budget, least recently seen first: the evictable ones.
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._max_callers = max_callers
        limits = (settings.default, *settings.callers.values())
        configured = any(lim.day is not None or lim.month is not None for lim in limits)
        self._enabled = configured or track_all
        self._track_all = track_all
        self._admit_unseeded = admit_unseeded
        self._seed: Mapping[str, tuple[int, int]] | None = {} if seeded else None
        self._seed_periods = period_starts(clock.wall())

    @property
    def enabled(self) -> bool:
        """Can any tenant have a budget?"""
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

    def _apply_seed(self, tenant: str, periods: Iterable[_Period]) -> None:
        """Set the tenant's spend in the day and month the seed was read in (0 if absent)."""
        day, month = (self._seed or {}).get(tenant, (0, 0))
        day_start, month_start = self._seed_periods
        now = self._clock.wall()
        for period in periods:
            period.roll(now)
            starts = day_start if period.name == "day" else month_start
            if period.resets_at == next_reset(period.name, starts):  # still the seed's period
                period.spent = day if period.name == "day" else month

    async def reserve(
        self, tenant: str, amount: int, policy: TenantPolicy | None = None
    ) -> Reservation | None:
        """Check and hold `amount` with no await in between (see the module docstring)."""
        periods = self._periods(tenant, policy)
        if not periods:
            return None
        if tenant not in self._accounts:
            raise self._no_room(tenant)
        capped = [p for p in periods if p.limit is not None]
        if capped:
            self._check_seeded(tenant)
            refusal = self._refusal(tenant, capped, amount)
            if refusal is not None:
                raise refusal
        for period in periods:
            period.reserved += amount
        return Reservation(tenant, amount, self._clock.wall())

    async def settle(self, reservation: Reservation | None, actual: int) -> None:
        """Release the hold and add the actual cost, in the period current now."""
        if reservation is None:
            return
        now = self._clock.wall()
        for period in self._accounts.get(reservation.tenant, ()):
            period.roll(now)
            period.reserved -= reservation.amount
            period.spent += actual

    async def admission(
        self, tenant: str, amount: int, policy: TenantPolicy | None = None
    ) -> Admission:
        """Would `amount` be admitted now? Holds nothing."""
        capped = [p for p in self._periods(tenant, policy) if p.limit is not None]
        if not capped:
            return ADMITTED
        if tenant not in self._accounts:
            return Admission(False, self._no_room(tenant).message)
        if self._seed is None and not self._admit_unseeded:
            return Admission(False, BudgetUnknownError(tenant).message)
        refusal = self._refusal(tenant, capped, amount)
        return ADMITTED if refusal is None else Admission(False, refusal.message)

    def _check_seeded(self, tenant: str) -> None:
        if self._seed is None and not self._admit_unseeded:
            raise BudgetUnknownError(tenant)

    async def pressure(
        self, tenant: str, policy: TenantPolicy | None = None
    ) -> BudgetPressure | None:
        """The first budget whose use reached the downgrade fraction, if any."""
        for period in self._periods(tenant, policy):
            near, limit = period.near_at, period.limit
            if near is not None and limit is not None and period.used >= near:
                return BudgetPressure(period.name, period.used, limit)
        return None

    async def status(
        self, tenant: str, policy: TenantPolicy | None = None
    ) -> tuple[BudgetStatus, ...]:
        """The tenant's budgets now (those with a limit)."""
        return tuple(
            BudgetStatus(p.name, p.limit, p.used, p.resets_at)
            for p in self._periods(tenant, policy)
            if p.limit is not None
        )

    def _limits(self, tenant: str, policy: TenantPolicy | None) -> tuple[int | None, int | None]:
        if policy is not None:
            return policy.day_budget, policy.month_budget
        limits = self._settings.limits(tenant)
        return limits.day, limits.month

    def _periods(self, tenant: str, policy: TenantPolicy | None) -> tuple[_Period, ...]:
        """The tenant's budgets under `policy`, rolled to now (empty when none is kept)."""
        if not self._enabled:
            return ()
        day, month = self._limits(tenant, policy)
        periods = self._accounts.get(tenant)
        if periods is None or tuple(p.limit for p in periods) != self._shape(day, month):
            evictable = policy is None and tenant not in self._settings.callers
            periods = self._reopen(tenant, periods or (), day, month, evictable)
        elif tenant in self._recent:
            self._recent.move_to_end(tenant)  # seen now
        if periods:
            now = self._clock.wall()
            for period in periods:
                period.roll(now)
        return periods

    def _shape(self, day: int | None, month: int | None) -> tuple[int | None, ...]:
        """The limits of the periods kept for a tenant with these budgets."""
        if self._track_all:
            return (day, month)
        return tuple(limit for limit in (day, month) if limit is not None)

    def _reopen(
        self,
        tenant: str,
        old: tuple[_Period, ...],
        day: int | None,
        month: int | None,
        evictable: bool,
    ) -> tuple[_Period, ...]:
        """The periods for new limits, keeping what the old ones counted.

        A new caller under the default budget is kept only if there is room
        (see the module); otherwise the periods are returned but not kept.
        """
        fraction = self._settings.downgrade_at
        kept = {period.name: period for period in old}
        periods = []
        fresh = []
        for name, limit in (("day", day), ("month", month)):
            if limit is None and not self._track_all:
                continue
            near_at = None if fraction is None or limit is None else int(limit * fraction)
            period = _Period(name, limit, near_at)
            previous = kept.get(name)
            if previous is not None:
                period.spent, period.reserved = previous.spent, previous.reserved
                period.resets_at = previous.resets_at
            else:
                fresh.append(period)
            periods.append(period)
        if fresh and self._seed:
            self._apply_seed(tenant, fresh)
        result = tuple(periods)
        if tenant in self._accounts:
            self._accounts[tenant] = result
        elif result and (not evictable or self._room()):
            self._accounts[tenant] = result
            if evictable:
                self._recent[tenant] = None
        return result

    def _room(self) -> bool:
        """Is there room for one more default-budget caller (after evicting one that can go)?"""
        recent = self._recent
        if len(recent) < self._max_callers:
            return True
        for _ in range(min(_EVICTION_SCAN, len(recent))):
            oldest = next(iter(recent))
            if self._forgettable(oldest, self._accounts[oldest]):
                del recent[oldest]
                del self._accounts[oldest]
                return True
            recent.move_to_end(oldest)  # its spend is in force: look at the next one
        return False

    def _forgettable(self, tenant: str, periods: Iterable[_Period]) -> bool:
        """Would dropping the caller lose nothing: no hold, no spend but the ledger's seed?"""
        day, month = (self._seed or {}).get(tenant, (0, 0))
        day_start, month_start = self._seed_periods
        now = self._clock.wall()
        for period in periods:
            period.roll(now)
            if period.reserved:
                return False
            starts = day_start if period.name == "day" else month_start
            seeded = day if period.name == "day" else month
            if period.resets_at != next_reset(period.name, starts):
                seeded = 0  # a period after the seed's: it started from nothing
            if period.spent != seeded:
                return False
        return True

    def _no_room(self, tenant: str) -> RateLimitedError:
        """The refusal of a new caller while every kept caller has spend in force."""
        now = self._clock.wall()
        oldest = self._accounts[next(iter(self._recent))]
        retry_after = max(max(p.resets_at for p in oldest) - now, 1.0)
        return RateLimitedError(
            f"this gateway keeps the spend of at most {self._max_callers} callers under the"
            f" default budget (SWITCHYARD_MAX_CALLERS) and each of them has spend in force, so"
            f" caller {tenant!r} cannot get a budget now; retry after the budgets reset, or"
            f' (operators) give it a [budgets."{tenant}"] table, raise SWITCHYARD_MAX_CALLERS,'
            " or identify callers with API keys",
            retry_after,
        )

    def _refusal(
        self, tenant: str, periods: list[_Period], amount: int
    ) -> BudgetExceededError | None:
        """The refusal of `amount` by the first of the capped `periods` it does not fit."""
        short = [p for p in periods if p.limit is not None and p.used + amount > p.limit]
        if not short:
            return None
        never = [p for p in short if p.limit is not None and amount > p.limit]
        if never:
            limit = never[0].limit
            assert limit is not None
            return never_fits(tenant, never[0].name, limit, amount)
        period = max(short, key=lambda p: p.resets_at)  # the one that frees up last
        return spent_until_reset(
            tenant,
            period.name,
            used=period.used,
            limit=period.limit or 0,
            amount=amount,
            resets_at=period.resets_at,
            now=self._clock.wall(),
        )
