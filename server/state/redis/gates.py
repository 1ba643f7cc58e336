"""Rate and concurrency gates shared by every replica through Redis (contract: ``state/gates.py``).

A try's admission is ONE script (`ADMIT`), run atomically by Redis: it
checks every concurrency cap the try needs and every rate budget, and takes
all of them or none. Giving back is one more (`GIVE`). Never a read followed
by a write, so N replicas admit exactly what one process would.

* Rate budgets are GCRA (the generic cell rate algorithm, a leaky bucket
  kept as one number per gate: the theoretical arrival time, TAT). An amount
  n costs n x T (T = 60 s / per_minute); it fits now when TAT + nT - now <=
  burst x T. When it does not fit but the wait would end before the caller's
  deadline (and within `max_wait`), the script reserves the future slot at
  once (it advances TAT) and the caller sleeps until it: later arrivals
  queue behind it in arrival order, across replicas, which is the FIFO of
  the memory gates. A wait that would outlast the deadline is refused at
  once with the same message as in memory. A refund moves TAT back.
* Concurrency caps are sorted sets of leases (member: lease id, score: its
  expiry). Each process renews its live leases every `lease_ttl` / 3, so a
  replica that dies stops renewing and its slots come back within
  `lease_ttl` (15 s by default). A try that finds a cap full waits in this
  process and tries again when a local slot frees or after a short poll
  (2 ms doubling to 50 ms), until its deadline or `max_wait`. Only one try
  per cap and process asks Redis at a time: the turn goes by the fair queue
  of ``state/gates.py`` (to the waiting caller holding the fewest of this
  replica's leases of the cap for its weight, FIFO within one caller), and a
  try holding the turn hands it on when a caller with less of its share
  comes to wait. So fair shares hold per replica, in front of the shared
  ADMIT, and cost nothing while a cap has room; across replicas a freed slot
  goes to whichever replica asks first.

Time is the gateway's wall clock in milliseconds, passed to the scripts, so
the replicas' clocks must agree (NTP): a replica whose clock runs d ahead
sees at most d x rate more capacity.

When Redis does not answer (see ``link.py``), each gate falls back to a
memory gate of its own with the configured limit divided by
`SWITCHYARD_REPLICAS` (the replica's share), and back again when Redis
answers. A try admitted by one side is given back to the same side.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from collections.abc import Sequence
from typing import TypeVar

from server.clock import SYSTEM_CLOCK, Clock
from server.errors import CapacityError, ModelBusyError
from server.state.gates import (
    ConcurrencyGate,
    FairQueue,
    Lease,
    QueueFullError,
    RateGate,
    Ticket,
    admit_in_turn,
    busy,
    give_back_in_turn,
    rate_refusal,
    too_big,
)
from server.state.memory.gates import MemoryConcurrencyGate, MemoryRateGate
from server.state.redis.link import RedisDownError, RedisLink

log = logging.getLogger("switchyard")

G = TypeVar("G")
_NEVER = 1e18  # "no deadline" in milliseconds, as Lua reads numbers
_POLL_FIRST, _POLL_MAX = 0.002, 0.05  # seconds between tries of a full cap

# KEYS: the caps, then the rate gates. ARGV: now_ms, ncaps, allowed_ms, lease, ttl_ms,
# then each cap's limit, then each rate gate's T_ms, tau_ms and amount.
# Returns {0, 0, wait_ms} (all taken; sleep wait_ms), {1, i, 0} (cap i is full; nothing
# taken) or {2, j, wait_ms} (rate gate j cannot fit within allowed_ms; nothing taken).
ADMIT = """
local now = tonumber(ARGV[1])
local ncaps = tonumber(ARGV[2])
local allowed = tonumber(ARGV[3])
local lease = ARGV[4]
local ttl = tonumber(ARGV[5])
for i = 1, ncaps do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[5 + i]) then return {1, i, '0'} end
end
local base = 5 + ncaps
local tats = {}
local wait = 0
for j = 1, #KEYS - ncaps do
  local t = tonumber(ARGV[base + 3 * j - 2])
  local tau = tonumber(ARGV[base + 3 * j - 1])
  local tat = tonumber(redis.call('GET', KEYS[ncaps + j]) or '0')
  if tat < now then tat = now end
  local new = tat + tonumber(ARGV[base + 3 * j]) * t
  local w = new - tau - now
  if w > 0 then
    if w > allowed then return {2, j, tostring(w)} end
    if w > wait then wait = w end
  end
  tats[j] = new
end
for i = 1, ncaps do
  redis.call('ZADD', KEYS[i], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl * 2))
end
for j = 1, #KEYS - ncaps do
  local tau = tonumber(ARGV[base + 3 * j - 1])
  redis.call('SET', KEYS[ncaps + j], string.format('%.3f', tats[j]),
    'PX', math.ceil(tats[j] - now + tau) + 1000)
end
return {0, 0, tostring(wait)}
"""

# KEYS: the caps, then the rate gates to refund. ARGV: now_ms, ncaps, lease, then each
# refund's T_ms and amount.
GIVE = """
local now = tonumber(ARGV[1])
local ncaps = tonumber(ARGV[2])
for i = 1, ncaps do redis.call('ZREM', KEYS[i], ARGV[3]) end
for j = 1, #KEYS - ncaps do
  local tat = tonumber(redis.call('GET', KEYS[ncaps + j]))
  if tat then
    local new = tat - tonumber(ARGV[2 + 2 * j]) * tonumber(ARGV[3 + 2 * j])
    if new < now then new = now end
    redis.call('SET', KEYS[ncaps + j], string.format('%.3f', new), 'KEEPTTL')
  end
end
return 0
"""

# KEYS: caps; ARGV: the leases' new expiry_ms, the keys' lifetime_ms, then the lease held in
# each cap (XX: only leases still there; one reclaimed meanwhile stays gone).
RENEW = """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[i + 2])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 0
"""


class RedisLease(Lease):
    """A slot held in Redis (`local` None) or, while Redis was down, in the local twin."""

    __slots__ = ("id", "local")

    def __init__(
        self, lease_id: str, taken_at: float, local: Lease | None = None, caller: str = ""
    ) -> None:
        super().__init__(taken_at, None, caller)
        self.id = lease_id
        self.local = local


class RedisRateGate:
    """A rate budget shared by every replica; `local` is this replica's share for outages."""

    __slots__ = (
        "_factory",
        "burst",
        "error",
        "key",
        "local",
        "name",
        "per_minute",
        "t_ms",
        "unit",
        "waiting",
    )

    def __init__(
        self,
        factory: RedisGates,
        name: str,
        *,
        per_minute: float,
        burst: float,
        unit: str,
        error: type[CapacityError],
        local: MemoryRateGate,
    ) -> None:
        self._factory = factory
        self.name = name
        self.per_minute = per_minute
        self.burst = burst
        self.unit = unit
        self.error = error
        self.local = local
        self.key = f"{factory.prefix}rate:{name}"
        self.t_ms = 60_000.0 / per_minute  # milliseconds one unit costs
        self.waiting = 0

    @property
    def waiters(self) -> int:
        """Tries of this process sleeping until their reserved slot."""
        return self.waiting + self.local.waiters

    async def acquire(self, amount: float, deadline: float | None) -> float:
        """Take `amount`, as the one gate of an `admit`."""
        return (await self._factory.admit((), ((self, amount),), deadline)).waited

    async def refund(self, amount: float) -> None:
        """Give back `amount` taken earlier and not used."""
        if amount > 0:
            await self._factory.refund(((self, amount),))

    def too_big(self, amount: float) -> CapacityError:
        """The refusal of an amount larger than the whole burst (as in memory)."""
        return too_big(self.error, self.name, self.burst, self.unit, amount)

    def refusal(self, wait: float, why: str) -> CapacityError:
        """The refusal of a wait that may not happen (as in memory)."""
        return rate_refusal(self.error, self.name, self.per_minute, self.unit, wait=wait, why=why)


class RedisConcurrencyGate:
    """A concurrency cap shared by every replica, as leases; `local` is the outage share."""

    __slots__ = ("_factory", "freed", "held", "key", "limit", "line", "local", "name")

    def __init__(
        self, factory: RedisGates, name: str, limit: int, local: MemoryConcurrencyGate
    ) -> None:
        self.name = name
        self.limit = limit
        self.local = local
        self.key = f"{factory.prefix}cap:{name}"
        self.held = 0  # leases this process holds in Redis
        self.freed = asyncio.Event()  # set when this process gives a slot back
        # One unit, the turn to ask Redis; its `held` counts this process's leases per caller.
        self.line = FairQueue(1, counts_slots=False)
        self._factory = factory

    @property
    def in_use(self) -> int:
        """Slots this process holds (in Redis, or locally while Redis is down)."""
        return self.held + self.local.in_use

    @property
    def waiters(self) -> int:
        """Tries of this process waiting for a slot (the one asking Redis included)."""
        return self.line.in_use + self.line.waiting + self.local.waiters

    def holding(self, caller: str) -> int:
        """Slots `caller` holds through this process (in Redis, or locally)."""
        return self.line.holding(caller) + self.local.holding(caller)

    async def acquire(self, deadline: float | None, caller: str = "", weight: float = 1.0) -> Lease:
        """Take a slot, as the one gate of an `admit`."""
        return (await self._factory.admit((self,), (), deadline, caller, weight)).leases[0]

    async def release(self, lease: Lease) -> None:
        """Give the lease's slot back (once)."""
        if lease.released:
            return
        await self._factory.give_back(Ticket((self,), [lease], (), 0.0))

    def busy(self, caller: str = "") -> ModelBusyError:
        """The refusal of a try that found the cap full until it could wait no longer."""
        return busy(self.name, self.limit, caller, self.holding(caller))


class RedisGates:
    """Makes Redis gates; admits and gives back a try's gates in one script each."""

    __slots__ = (
        "_admit",
        "_clock",
        "_give",
        "_held",
        "_id_prefix",
        "_ids",
        "_link",
        "_max_wait",
        "_max_waiters",
        "_renew",
        "_renewer",
        "_replicas",
        "_ttl",
        "prefix",
    )

    def __init__(
        self,
        link: RedisLink,
        max_waiters: int,
        max_wait: float,
        *,
        lease_ttl: float = 15.0,
        replicas: int = 1,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._link = link
        self._max_waiters = max_waiters
        self._max_wait = max_wait
        self._ttl = lease_ttl
        self._replicas = replicas
        self._clock = clock
        self.prefix = link.prefix
        self._admit = link.script(ADMIT)
        self._give = link.script(GIVE)
        self._renew = link.script(RENEW)
        self._ids = itertools.count()
        self._held: dict[str, tuple[str, ...]] = {}  # lease id -> the cap keys it holds
        self._renewer: asyncio.Task[None] | None = None
        self._id_prefix = f"{os.getpid()}-{os.urandom(4).hex()}-"

    def rate(
        self,
        name: str,
        per_minute: float,
        burst: float,
        *,
        unit: str = "requests",
        error: type[CapacityError],
    ) -> RedisRateGate:
        """A shared rate gate; its local twin allows this replica's share."""
        share = self._replicas
        local = MemoryRateGate(
            name,
            per_minute / share,
            max(burst / share, 1.0),
            self._max_waiters,
            max_wait=self._max_wait,
            unit=unit,
            error=error,
            clock=self._clock,
        )
        return RedisRateGate(
            self, name, per_minute=per_minute, burst=burst, unit=unit, error=error, local=local
        )

    def concurrency(self, name: str, limit: int) -> RedisConcurrencyGate:
        """A shared concurrency gate; its local twin allows this replica's share."""
        local = MemoryConcurrencyGate(
            name, max(limit // self._replicas, 1), self._max_waiters, self._max_wait, self._clock
        )
        return RedisConcurrencyGate(self, name, limit, local)

    # ---- admission -------------------------------------------------------------------

    def admit_now(
        self,
        caps: Sequence[ConcurrencyGate],
        rates: Sequence[tuple[RateGate, float]],
        caller: str = "",
    ) -> Ticket | None:
        """Never: shared state is decided by Redis (or, while it is away, by `admit`)."""
        return None

    def give_back_now(self, ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()) -> bool:
        """Never: Redis is told (see `give_back`)."""
        return False

    async def admit(
        self,
        caps: Sequence[ConcurrencyGate],
        rates: Sequence[tuple[RateGate, float]],
        deadline: float | None,
        caller: str = "",
        weight: float = 1.0,
    ) -> Ticket:
        """Take every slot and rate amount of one try in one script (see the module)."""
        shared_caps = [_ours(cap, RedisConcurrencyGate) for cap in caps]
        shared_rates = [(_ours(gate, RedisRateGate), amount) for gate, amount in rates]
        if not self._link.up:
            return await self._admit_locally(shared_caps, shared_rates, deadline, caller, weight)
        for gate, amount in shared_rates:
            if amount > gate.burst:
                raise gate.too_big(amount)
        clock = self._clock
        started = clock.monotonic()
        lease_id = f"{self._id_prefix}{next(self._ids)}" if shared_caps else ""
        taken = await self._take_shared(
            shared_caps, shared_rates, deadline, lease_id, started, caller=caller, weight=weight
        )
        if isinstance(taken, Ticket):
            return taken  # Redis did not answer: admitted by the local twins
        wait_text = taken
        leases: list[Lease] = []
        now = clock.monotonic()
        for cap in shared_caps:
            cap.held += 1
            cap.line.hold(caller)
            leases.append(RedisLease(lease_id, now, None, caller))
        if shared_caps:
            self._held[lease_id] = tuple(cap.key for cap in shared_caps)
            self._start_renewing()
        ticket = Ticket(shared_caps, leases, shared_rates, 0.0, token=lease_id)
        wait = float(wait_text) / 1000
        if wait > 0:  # a future slot is reserved for this try: sleep until it
            await self._sleep_reserved(ticket, shared_rates, wait)
            ticket.waited = clock.monotonic() - started
        return ticket

    async def _sleep_reserved(
        self, ticket: Ticket, rates: Sequence[tuple[RedisRateGate, float]], wait: float
    ) -> None:
        for gate, _ in rates:
            gate.waiting += 1
        try:
            await asyncio.sleep(wait)  # real time, as the memory gates' aiolimiter sleeps
        except BaseException:
            await self.give_back(ticket, rates)
            raise
        finally:
            for gate, _ in rates:
                gate.waiting -= 1

    def _rate_refusal(
        self, gate: RedisRateGate, wait_ms: float, queue_full: bool, left_ms: float
    ) -> CapacityError:
        if queue_full:
            why = "too many calls are already waiting"
        elif left_ms <= self._max_wait * 1000:
            why = "the wait would outlast the call's deadline"
        else:
            why = f"the wait would exceed {self._max_wait:g} s"
        return gate.refusal(wait_ms / 1000, why)

    async def _take_shared(
        self,
        shared_caps: list[RedisConcurrencyGate],
        shared_rates: list[tuple[RedisRateGate, float]],
        deadline: float | None,
        lease_id: str,
        started: float,
        *,
        caller: str,
        weight: float,
    ) -> str | Ticket:
        """Run ADMIT until it takes everything (its wait, as text), or raise a refusal.

        A try that finds a cap full waits for the turn of this process (see the
        module), then asks again each time a local slot frees or a poll ends,
        and hands the turn on as soon as a caller with less of its share waits.
        """
        clock = self._clock
        keys = [cap.key for cap in shared_caps] + [gate.key for gate, _ in shared_rates]
        fixed: list[object] = [cap.limit for cap in shared_caps]
        for gate, amount in shared_rates:
            fixed += [gate.t_ms, gate.burst * gate.t_ms, amount]
        ttl_ms = self._ttl * 1000
        poll = _POLL_FIRST
        line: RedisConcurrencyGate | None = None  # the cap whose turn this try holds
        loop = asyncio.get_running_loop()
        ends = loop.time()  # when waiting for a slot must stop (real time, set in line)
        # Tries already waiting in this process for one of these caps go first (fairly).
        queued = next((cap for cap in shared_caps if cap.line.in_use), None)
        try:
            if queued is not None:
                line = await self._join_line(queued, caller, weight, deadline, started)
                ends = loop.time() + self._wait_budget(deadline, started)
            while True:
                if line is not None and line.line.fairer_waiting(caller, weight):
                    # A caller with less of its share waits: it asks first. Checked right
                    # before each ADMIT, so a slot freed meanwhile goes to it, not to us.
                    turn, line = line, None
                    turn.line.give()
                    line = await self._wait_turn(turn, caller, weight, ends - loop.time(), True)
                left = _NEVER if deadline is None else (deadline - clock.monotonic()) * 1000
                queue_full = any(gate.waiters >= self._max_waiters for gate, _ in shared_rates)
                allowed = 0.0 if queue_full else min(left, self._max_wait * 1000)
                args = [clock.wall() * 1000, len(shared_caps), allowed, lease_id, ttl_ms, *fixed]
                try:
                    status, index, wait_text = await self._link.run(self._admit, keys, args)
                except RedisDownError:
                    return await self._admit_locally(
                        shared_caps, shared_rates, deadline, caller, weight
                    )
                except asyncio.CancelledError:
                    self._forget(shared_caps, lease_id)  # the script may have run: drop the lease
                    raise
                if status == 0:
                    return wait_text.decode() if isinstance(wait_text, bytes) else str(wait_text)
                if status == 2:
                    gate = shared_rates[index - 1][0]
                    raise self._rate_refusal(gate, float(wait_text), queue_full, left)
                cap = shared_caps[index - 1]
                if line is None:
                    line = await self._join_line(cap, caller, weight, deadline, started)
                    ends = loop.time() + self._wait_budget(deadline, started)
                    continue  # this try's turn now: ask again at once
                remaining = ends - loop.time()
                if remaining <= 0:
                    raise cap.busy(caller)
                await self._wait_for_slot(cap, min(poll, remaining))
                poll = min(poll * 2, _POLL_MAX)
        finally:
            if line is not None:
                line.line.give()  # the turn goes to the fairest waiting caller

    async def _join_line(
        self,
        cap: RedisConcurrencyGate,
        caller: str,
        weight: float,
        deadline: float | None,
        started: float,
    ) -> RedisConcurrencyGate:
        """Wait for this process's turn to ask Redis for `cap` (or raise busy)."""
        return await self._wait_turn(
            cap, caller, weight, self._wait_budget(deadline, started), False
        )

    async def _wait_turn(
        self, cap: RedisConcurrencyGate, caller: str, weight: float, seconds: float, first: bool
    ) -> RedisConcurrencyGate:
        """Take the turn of `cap` if it is free, else wait for it in `caller`'s line (at its
        head if `first`: a try that handed its turn on keeps its place among its caller's)."""
        if seconds <= 0:
            raise cap.busy(caller)
        if cap.line.take():
            return cap
        try:
            await cap.line.wait(caller, weight, seconds, self._max_waiters, first=first)
        except (TimeoutError, QueueFullError):
            raise cap.busy(caller) from None
        return cap

    def _wait_budget(self, deadline: float | None, started: float) -> float:
        """Seconds a try may still wait for a slot (its deadline's and `max_wait`'s)."""
        clock = self._clock
        remaining = self._max_wait - (clock.monotonic() - started)
        if deadline is not None:
            remaining = min(remaining, deadline - clock.monotonic())
        return remaining

    @staticmethod
    async def _wait_for_slot(cap: RedisConcurrencyGate, seconds: float) -> None:
        """Sleep until this process frees a slot of `cap`, or `seconds` (another may have)."""
        cap.freed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await cap.freed.wait()

    def _forget(self, caps: Sequence[RedisConcurrencyGate], lease_id: str) -> None:
        """An admission was cancelled mid-flight: remove its lease, if it was taken."""
        if not caps:
            return  # rate amounts it may have taken are not refunded (the safe side)
        args = [self._clock.wall() * 1000, len(caps), lease_id]
        self._link.fire(self._give, [cap.key for cap in caps], args)

    async def _admit_locally(
        self,
        caps: Sequence[RedisConcurrencyGate],
        rates: Sequence[tuple[RedisRateGate, float]],
        deadline: float | None,
        caller: str,
        weight: float,
    ) -> Ticket:
        inner = await admit_in_turn(
            [cap.local for cap in caps],
            [(gate.local, amount) for gate, amount in rates],
            deadline,
            caller,
            weight,
        )
        leases: list[Lease] = [
            RedisLease("", lease.taken_at, lease, caller) for lease in inner.leases
        ]
        return Ticket(caps, leases, rates, inner.waited, token=inner)

    # ---- giving back -----------------------------------------------------------------

    async def give_back(
        self, ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()
    ) -> None:
        """Release the ticket's slots and refund the unused amounts, where they were taken."""
        caps = [_ours(cap, RedisConcurrencyGate) for cap in ticket.caps]
        refunds_ = [(_ours(gate, RedisRateGate), amount) for gate, amount in refunds if amount > 0]
        if isinstance(ticket.token, Ticket):  # admitted locally while Redis was down
            for lease in ticket.leases:
                lease.released = True
            await give_back_in_turn(
                ticket.token, [(gate.local, amount) for gate, amount in refunds_]
            )
            return
        held: list[RedisConcurrencyGate] = []
        lease_id = ""
        for cap, lease in zip(caps, ticket.leases, strict=True):
            if lease.released:
                continue
            lease.released = True
            assert isinstance(lease, RedisLease)
            if lease.local is not None:  # a single gate's lease, taken locally
                await cap.local.release(lease.local)
                continue
            lease_id = lease.id
            held.append(cap)
            cap.held -= 1
            cap.line.unhold(lease.caller)
        if lease_id:
            self._held.pop(lease_id, None)
        if not held and not refunds_:
            return
        args: list[object] = [self._clock.wall() * 1000, len(held), lease_id]
        for gate, amount in refunds_:
            args += [gate.t_ms, amount]
        keys = [cap.key for cap in held] + [gate.key for gate, _ in refunds_]
        # Sent now, not waited for: the try is over. Whatever this process sends next goes
        # after it on the one connection, so a waiter woken below finds the slot free. If
        # Redis does not answer, the leases are no longer renewed and expire, and the refund
        # is lost (the safe side).
        self._link.fire(self._give, keys, args)
        for cap in held:
            cap.freed.set()

    async def refund(self, refunds: Sequence[tuple[RedisRateGate, float]]) -> None:
        """Give back amounts of earlier acquires (the single-gate `refund`)."""
        if self._link.up:
            await self.give_back(Ticket((), [], (), 0.0, token=""), refunds)
        else:
            for gate, amount in refunds:
                await gate.local.refund(amount)

    # ---- leases ----------------------------------------------------------------------

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="redis-lease-renewal"
            )

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self._ttl / 3)  # housekeeping runs on real time
            if not self._held or not self._link.up:
                continue
            keys: list[str] = []
            leases: list[str] = []
            for lease_id, cap_keys in self._held.items():
                keys += cap_keys
                leases += [lease_id] * len(cap_keys)
            ttl_ms = self._ttl * 1000
            try:
                await self._link.run(
                    self._renew,
                    keys,
                    [self._clock.wall() * 1000 + ttl_ms, math.ceil(ttl_ms * 2), *leases],
                )
            except RedisDownError:
                continue

    async def aclose(self) -> None:
        """Stop renewing (the leases then expire, if the calls did not give them back)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


def _ours(gate: object, kind: type[G]) -> G:
    """`gate` as this backend's own kind (a gate of another backend is a bug)."""
    assert isinstance(gate, kind), f"{type(gate).__name__} is not a {kind.__name__}"
    return gate
