"""Budgets shared by every replica through Redis (contract: ``server/state/budgets.py``).

Per tenant, one hash holds the settled spend of each UTC day and month
(fields ``d:<day start>``, ``m:<month start>``) and ``held``, the sum of the
reservations in flight; a sorted set holds the reservations as leases (id ->
expiry) and a second hash their amounts. `reserve` is one script: reclaim the
expired holds, check every budget against spend + held + amount, hold. `settle`
is one script: drop the hold, add the actual cost to the day and the month.
Each replica renews the holds of its calls in flight every `lease_ttl` / 3,
so the holds of a replica that died come back within `lease_ttl`.

Redis holds working state; the ledger holds the truth. A marker key says the
spend was read back from the ledger; when Redis comes back without it
(restart, failover, flush), the store reports itself unseeded, the stores
re-read the spend from the ledger, and budgeted tenants are refused
(BudgetUnknownError, or admitted if so configured) until that is done.

Failure policy: budgets fail CLOSED. While Redis does not answer, a tenant
with a budget is refused with BudgetStoreUnavailableError (UNAVAILABLE); a
tenant without one is admitted, and the settlements of calls that ended
meanwhile are queued here and written when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import ADMITTED, Admission, BudgetPressure, TenantPolicy
from server.errors import BudgetExceededError, BudgetStoreUnavailableError, BudgetUnknownError
from server.settings import BudgetSettings
from server.state.budgets import (
    DAY,
    BudgetStatus,
    Reservation,
    never_fits,
    next_reset,
    period_starts,
    spent_until_reset,
)
from server.state.redis.link import RedisDownError, RedisLink, Script

log = logging.getLogger("switchyard")

_PENDING_MAX = 100_000  # settlements kept while Redis is down (the ledger has them all)
_KEY_LIFETIME = 40 * DAY  # a tenant's hash outlives its month by ten days

# KEYS: hash, holds, amounts, marker. ARGV: now_ms, day field, month field, day limit
# (-1: none), month limit, amount, hold id, hold expiry_ms, hold (1) or only look (0), key
# lifetime, hold even while unseeded (1). Returns {3} unseeded (holding only when told to),
# {1, period, used} refused, {0, day used, month used}.
RESERVE = """
local unseeded = redis.call('EXISTS', KEYS[4]) == 0
if unseeded and ARGV[11] ~= '1' then return {3} end
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  local back = 0
  for _, a in ipairs(redis.call('HMGET', KEYS[3], unpack(expired))) do
    local n = a and tonumber(a)
    if n then back = back + n end
  end
  if back > 0 then redis.call('HINCRBY', KEYS[1], 'held', -back) end
  redis.call('HDEL', KEYS[3], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
local v = redis.call('HMGET', KEYS[1], ARGV[2], ARGV[3], 'held')
local held = tonumber(v[3] or '0')
local day = tonumber(v[1] or '0') + held
local month = tonumber(v[2] or '0') + held
local amount = tonumber(ARGV[6])
local dl, ml = tonumber(ARGV[4]), tonumber(ARGV[5])
local day_short = dl >= 0 and day + amount > dl
local month_short = ml >= 0 and month + amount > ml
if not unseeded then
  if month_short then return {1, 'month', month} end
  if day_short then return {1, 'day', day} end
end
if ARGV[9] == '1' then
  redis.call('HINCRBY', KEYS[1], 'held', amount)
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[7])
  redis.call('HSET', KEYS[3], ARGV[7], amount)
  redis.call('EXPIRE', KEYS[1], ARGV[10])
  redis.call('EXPIRE', KEYS[2], ARGV[10])
  redis.call('EXPIRE', KEYS[3], ARGV[10])
end
if unseeded then return {3} end
return {0, day, month}
"""

# KEYS: hash, holds, amounts. ARGV: hold id, day field, month field, actual, the field of
# the day before yesterday (dropped), key lifetime. Idempotent: the hold's amount becomes a
# tombstone ('s', kept 5 minutes by Redis's clock), so a settlement that timed out on its
# way and is sent again after an outage is counted once. Returns 1 if already settled.
SETTLE = """
local a = redis.call('HGET', KEYS[3], ARGV[1])
if a == 's' then return 1 end
if a and a ~= '0' then redis.call('HINCRBY', KEYS[1], 'held', '-' .. a) end
local t = redis.call('TIME')
redis.call('HSET', KEYS[3], ARGV[1], 's')
redis.call('ZADD', KEYS[2], t[1] * 1000 + 300000, ARGV[1])
if ARGV[4] ~= '0' then
  redis.call('HINCRBY', KEYS[1], ARGV[2], ARGV[4])
  redis.call('HINCRBY', KEYS[1], ARGV[3], ARGV[4])
end
redis.call('HDEL', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 0
"""

# KEYS: holds sorted sets, one per hold. ARGV: new expiry_ms, then the hold ids.
RENEW = """
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[i + 1]) end
return 0
"""

# KEYS: marker. ARGV: prefix, day field, month field, then tenant, day, month triples,
# then '1' in the last place when this chunk is the last (it sets the marker).
# Writes with HSET, not increments: two replicas seeding at once write the same values.
SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = #ARGV - 4
for i = 4, 3 + n, 3 do
  local key = ARGV[1] .. 'budget:' .. ARGV[i]
  redis.call('HSET', key, ARGV[2], ARGV[i + 1], ARGV[3], ARGV[i + 2])
  redis.call('EXPIRE', key, 3456000)
end
if ARGV[#ARGV] == '1' then redis.call('SET', KEYS[1], '1') end
return 1
"""
_SEED_CHUNK = 500  # tenants per script, so one script never blocks Redis for long


@dataclass(frozen=True, slots=True)
class RedisReservation(Reservation):
    """A reservation and its id (held in Redis under it, unless Redis was down then)."""

    id: str = ""


class RedisBudgetStore:
    """Every tenant's budgets, in Redis, shared by every replica (see the module)."""

    __slots__ = (
        "_admit_unseeded",
        "_clock",
        "_enabled",
        "_id_prefix",
        "_ids",
        "_link",
        "_live",
        "_marker",
        "_pending",
        "_prefix",
        "_renew",
        "_renewer",
        "_reserve",
        "_seed",
        "_seeded",
        "_settings",
        "_settle",
        "_track_all",
        "_ttl",
        "on_lost",
    )

    def __init__(
        self,
        link: RedisLink,
        settings: BudgetSettings,
        clock: Clock = SYSTEM_CLOCK,
        *,
        admit_unseeded: bool = False,
        track_all: bool = False,
        lease_ttl: float = 15.0,
    ) -> None:
        self._link = link
        self._settings = settings
        self._clock = clock
        limits = (settings.default, *settings.callers.values())
        configured = any(lim.day is not None or lim.month is not None for lim in limits)
        self._enabled = configured or track_all
        self._track_all = track_all
        self._admit_unseeded = admit_unseeded
        self._ttl = lease_ttl
        self._prefix = link.prefix
        self._marker = f"{link.prefix}budget-seeded"
        self._reserve = link.script(RESERVE)
        self._settle = link.script(SETTLE)
        self._renew = link.script(RENEW)
        self._seed = link.script(SEED)
        self._seeded = False
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid()}-{os.urandom(4).hex()}-"
        self._live: dict[str, str] = {}  # hold id -> tenant, renewed while the call runs
        self._renewer: asyncio.Task[None] | None = None
        self._pending: deque[tuple[RedisReservation, int, float]] = deque(maxlen=_PENDING_MAX)
        self.on_lost: Callable[[], None] | None = None  # Redis lost the spend: read it again
        link.on_up(self._resume)

    @property
    def enabled(self) -> bool:
        """Can any tenant have a budget?"""
        return self._enabled

    @property
    def seeded(self) -> bool:
        """Has Redis the spend read back from the ledger, as far as this replica knows?"""
        return self._seeded

    def _keys(self, tenant: str) -> list[str]:
        p = self._prefix
        return [f"{p}budget:{tenant}", f"{p}holds:{tenant}", f"{p}holdamt:{tenant}"]

    async def seed(self, spend: Mapping[str, tuple[int, int]], at: float) -> None:
        """Write the ledger's spend of the day and month of `at`, unless Redis has it already."""
        day, month = period_starts(at)
        fields = [self._prefix, f"d:{int(day)}", f"m:{int(month)}"]
        items = list(spend.items())
        chunks = [items[i : i + _SEED_CHUNK] for i in range(0, len(items), _SEED_CHUNK)] or [[]]
        try:
            for index, chunk in enumerate(chunks):
                args: list[object] = list(fields)
                for tenant, (day_spend, month_spend) in chunk:
                    args += [tenant, day_spend, month_spend]
                args.append("1" if index == len(chunks) - 1 else "0")
                await self._link.run(self._seed, [self._marker], args)
        except RedisDownError:
            return  # seeded stays False; the stores try again
        self._seeded = True

    def _limits(self, tenant: str, policy: TenantPolicy | None) -> tuple[int | None, int | None]:
        if policy is not None:
            return policy.day_budget, policy.month_budget
        limits = self._settings.limits(tenant)
        return limits.day, limits.month

    def _kept(self, day: int | None, month: int | None) -> bool:
        return self._enabled and (self._track_all or day is not None or month is not None)

    async def _look(
        self, tenant: str, day: int | None, month: int | None, amount: int, hold: str
    ) -> list[object]:
        """Run RESERVE (holding when `hold` is an id); the script's answer."""
        now = self._clock.wall()
        day_start, month_start = period_starts(now)
        result: list[object] = await self._link.run(
            self._reserve,
            [*self._keys(tenant), self._marker],
            [
                now * 1000,
                f"d:{int(day_start)}",
                f"m:{int(month_start)}",
                -1 if day is None else day,
                -1 if month is None else month,
                amount,
                hold,
                (now + self._ttl) * 1000,
                "1" if hold else "0",
                _KEY_LIFETIME,
                "1" if self._admit_unseeded else "0",
            ],
        )
        if result[0] == 3:
            self._lost()
        return result

    def _lost(self) -> None:
        if self._seeded:
            log.warning("budgets: Redis no longer holds the spend; reading it back from the ledger")
        self._seeded = False
        if self.on_lost is not None:
            self.on_lost()

    async def reserve(
        self, tenant: str, amount: int, policy: TenantPolicy | None = None
    ) -> Reservation | None:
        """Check and hold `amount` in one script, or raise (see the module for outages)."""
        day, month = self._limits(tenant, policy)
        if not self._kept(day, month):
            return None
        capped = day is not None or month is not None
        for period, limit in (("day", day), ("month", month)):
            if limit is not None and amount > limit:
                raise never_fits(tenant, period, limit, amount)
        now = self._clock.wall()
        # Every reservation has an id, held in Redis or not, so that its settlement is
        # counted once however often it is sent.
        hold = f"{self._id_prefix}{next(self._ids)}"
        if not self._link.up:
            if capped:
                raise BudgetStoreUnavailableError(tenant)
            return RedisReservation(tenant, amount, now, None, hold)
        try:
            result = await self._look(tenant, day, month, amount if capped else 0, hold)
        except RedisDownError:
            if capped:
                raise BudgetStoreUnavailableError(tenant) from None
            return RedisReservation(tenant, amount, now, None, hold)
        if result[0] == 3:
            if not self._admit_unseeded:
                if capped:
                    raise BudgetUnknownError(tenant)
                return RedisReservation(tenant, amount, now, None, hold)
            self._live[hold] = tenant  # admitted before the seed, and held
            self._start_renewing()
            return RedisReservation(tenant, amount, now, now + self._ttl, hold)
        if result[0] == 1:
            raise self._refusal(result, tenant, day=day, month=month, amount=amount, now=now)
        self._live[hold] = tenant
        self._start_renewing()
        return RedisReservation(tenant, amount, now, now + self._ttl, hold)

    @staticmethod
    def _refusal(
        result: list[object],
        tenant: str,
        *,
        day: int | None,
        month: int | None,
        amount: int,
        now: float,
    ) -> BudgetExceededError:
        period = _text(result[1])
        limit = day if period == "day" else month
        assert limit is not None
        used = result[2]
        assert isinstance(used, int)
        return spent_until_reset(
            tenant,
            period,
            used=used,
            limit=limit,
            amount=amount,
            resets_at=next_reset(period, now),
            now=now,
        )

    async def settle(self, reservation: Reservation | None, actual: int) -> None:
        """Drop the hold and add the actual cost; queued while Redis does not answer."""
        if reservation is None:
            return
        assert isinstance(reservation, RedisReservation)
        self._live.pop(reservation.id, None)
        now = self._clock.wall()
        if self._link.up:
            with contextlib.suppress(RedisDownError):
                await self._write_settlement(reservation, actual, now)
                return
        self._pending.append((reservation, actual, now))

    def _settlement(
        self, reservation: RedisReservation, actual: int, at: float
    ) -> tuple[Script, list[str], list[object]]:
        """The SETTLE script's call for `reservation`, settled at `at`."""
        day_start, month_start = period_starts(at)
        args: list[object] = [
            reservation.id,
            f"d:{int(day_start)}",
            f"m:{int(month_start)}",
            actual,
            f"d:{int(day_start - 2 * DAY)}",
            _KEY_LIFETIME,
        ]
        return self._settle, self._keys(reservation.tenant), args

    async def _write_settlement(
        self, reservation: RedisReservation, actual: int, at: float
    ) -> None:
        await self._link.run(*self._settlement(reservation, actual, at))

    async def _resume(self) -> None:
        """Redis answers again: write the queued settlements (in one round trip per 500)."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), 500))]
            calls = [self._settlement(*queued) for queued in batch]
            try:
                await self._link.batch(calls)
            except RedisDownError:
                self._pending.extendleft(reversed(batch))
                raise
        with contextlib.suppress(RedisDownError):
            if not await self._link.exists(self._marker):
                self._lost()

    async def admission(
        self, tenant: str, amount: int, policy: TenantPolicy | None = None
    ) -> Admission:
        """Would `amount` be admitted now? Holds nothing."""
        day, month = self._limits(tenant, policy)
        if not self._enabled or (day is None and month is None):
            return ADMITTED
        for period, limit in (("day", day), ("month", month)):
            if limit is not None and amount > limit:
                return Admission(False, never_fits(tenant, period, limit, amount).message)
        try:
            result = await self._look(tenant, day, month, amount, "") if self._link.up else None
        except RedisDownError:
            result = None
        if result is None:
            return Admission(False, BudgetStoreUnavailableError(tenant).message)
        if result[0] == 3:
            if self._admit_unseeded:
                return ADMITTED
            return Admission(False, BudgetUnknownError(tenant).message)
        if result[0] == 0:
            return ADMITTED
        now = self._clock.wall()
        return Admission(
            False,
            self._refusal(result, tenant, day=day, month=month, amount=amount, now=now).message,
        )

    async def _used(self, tenant: str) -> tuple[int, int] | None:
        """The tenant's day and month use now (spend plus holds), or None without Redis."""
        if not self._link.up:
            return None
        try:
            result = await self._look(tenant, None, None, 0, "")
        except RedisDownError:
            return None
        if result[0] != 0:
            return None
        day_used, month_used = result[1], result[2]
        assert isinstance(day_used, int) and isinstance(month_used, int)
        return day_used, month_used

    async def pressure(
        self, tenant: str, policy: TenantPolicy | None = None
    ) -> BudgetPressure | None:
        """The first budget whose use reached the downgrade fraction, if any."""
        fraction = self._settings.downgrade_at
        day, month = self._limits(tenant, policy)
        if fraction is None or not self._enabled or (day is None and month is None):
            return None
        used = await self._used(tenant)
        if used is None:
            return None
        for name, limit, spent in (("day", day, used[0]), ("month", month, used[1])):
            if limit is not None and spent >= int(limit * fraction):
                return BudgetPressure(name, spent, limit)
        return None

    async def status(
        self, tenant: str, policy: TenantPolicy | None = None
    ) -> tuple[BudgetStatus, ...]:
        """The tenant's budgets now (those with a limit); empty while Redis does not answer."""
        day, month = self._limits(tenant, policy)
        if not self._enabled or (day is None and month is None):
            return ()
        used = await self._used(tenant)
        if used is None:
            return ()
        now = self._clock.wall()
        return tuple(
            BudgetStatus(name, limit, spent, next_reset(name, now))
            for name, limit, spent in (("day", day, used[0]), ("month", month, used[1]))
            if limit is not None
        )

    # ---- holds in flight ---------------------------------------------------------

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="redis-budget-holds"
            )

    async def _renew_forever(self) -> None:
        while self._live:
            await asyncio.sleep(self._ttl / 3)  # housekeeping runs on real time
            if not self._live or not self._link.up:
                continue
            holds = list(self._live.items())
            keys = [self._keys(tenant)[1] for _, tenant in holds]
            args = [(self._clock.wall() + self._ttl) * 1000, *[hold for hold, _ in holds]]
            with contextlib.suppress(RedisDownError):
                await self._link.run(self._renew, keys, args)

    async def aclose(self) -> None:
        """Stop renewing holds (a replica that stops mid-call lets them expire)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
