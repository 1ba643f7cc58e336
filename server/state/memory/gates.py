"""Rate and concurrency gates in this process's memory (contract: ``server/state/gates.py``).

Rate gates are aiolimiter leaky buckets. A bucket alone would queue without
bound, let a waiter sleep past its caller's deadline, and (its waiters are a
min-heap by amount) let small requests overtake large ones forever. So each
`MemoryRateGate` puts a bounded FIFO in front of its bucket and predicts the
wait before queueing: a try that cannot get capacity within its caller's
deadline (or `max_wait`), or finds the queue full, is refused at once with
RESOURCE_EXHAUSTED and a retry-after hint instead of failing later with a
timeout.

Concurrency gates queue their waiters in a `FairQueue` (``state/gates.py``):
a freed slot goes straight to the live waiter of the caller holding the
least of the cap for its weight, FIFO within one caller, and a waiter that
gives up passes its slot on. A full queue makes room by refusing the newest
waiter of the caller asking the most, so one caller cannot fill it either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiolimiter import AsyncLimiter

from server.clock import SYSTEM_CLOCK, Clock
from server.errors import CapacityError, ModelBusyError, RateLimitedError
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


class Bucket(AsyncLimiter):
    """aiolimiter's bucket, able to say how long until an amount fits.

    Reads and lowers the bucket's level, which aiolimiter keeps private; the
    pinned aiolimiter version and tests/unit/state/test_gates.py guard it.
    """

    __slots__ = ()

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` more fits in the bucket (0 if it fits now)."""
        self._leak()
        excess = self._level + amount - self.max_rate
        return max(excess, 0.0) / self._rate_per_sec

    def take(self, amount: float) -> None:
        """Take `amount` that `wait_time` just said fits (what `acquire` does, unawaited)."""
        self._level += amount

    def refund(self, amount: float) -> None:
        """Give back `amount` taken earlier but not used."""
        self._leak()
        self._level = max(self._level - amount, 0.0)
        self._wake_next()


class MemoryRateGate:
    """A budget of `per_minute` units a minute with bursts of `burst`."""

    __slots__ = (
        "_bucket",
        "_clock",
        "_error",
        "_lock",
        "_max_wait",
        "_max_waiters",
        "_queued",
        "_waiters",
        "name",
        "per_minute",
        "unit",
    )

    def __init__(
        self,
        name: str,
        per_minute: float,
        burst: float,
        max_waiters: int,
        *,
        max_wait: float = float("inf"),
        unit: str = "requests",
        error: type[CapacityError] = RateLimitedError,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.per_minute = per_minute
        self.unit = unit
        self._error = error
        self._max_wait = max_wait
        self._clock = clock
        # Capacity `burst`, draining at per_minute/60 a second.
        self._bucket = Bucket(burst, burst * 60.0 / per_minute)
        self._lock = asyncio.Lock()  # FIFO: one waiter at a time drives the bucket
        self._max_waiters = max_waiters
        self._waiters = 0
        self._queued = 0.0

    @property
    def waiters(self) -> int:
        """Tries queued for capacity right now."""
        return self._waiters

    async def acquire(self, amount: float, deadline: float | None) -> float:
        """Take `amount`, waiting in line while the deadline allows (see RateGate)."""
        if amount > self._bucket.max_rate:
            raise too_big(self._error, self.name, self._bucket.max_rate, self.unit, amount)
        wait = self._bucket.wait_time(self._queued + amount)
        if wait <= 0 and not self._lock.locked():
            # Nobody in line and it fits: taken at once, as the bucket would after the
            # lock (the common case, without the lock's and the bucket's awaits).
            self._bucket.take(amount)
            return 0.0
        if wait > 0:
            if self._waiters >= self._max_waiters:
                raise self._refusal(wait, "too many calls are already waiting")
            if deadline is not None and wait > deadline - self._clock.monotonic():
                raise self._refusal(wait, "the wait would outlast the call's deadline")
            if wait > self._max_wait:
                raise self._refusal(wait, f"the wait would exceed {self._max_wait:g} s")
        started = self._clock.monotonic()
        self._waiters += 1
        self._queued += amount
        try:
            async with self._lock:
                await self._bucket.acquire(amount)
        finally:
            self._waiters -= 1
            self._queued -= amount
        return self._clock.monotonic() - started if wait > 0 else 0.0

    def take_now(self, amount: float) -> bool:
        """Take `amount` if nobody is in line and it fits now (True); else take nothing."""
        bucket = self._bucket
        if (
            self._lock.locked()
            or amount > bucket.max_rate
            or bucket.wait_time(self._queued + amount) > 0
        ):
            return False
        bucket.take(amount)
        return True

    async def refund(self, amount: float) -> None:
        """Give back `amount` of an earlier acquire that went unused."""
        self.refund_now(amount)

    def refund_now(self, amount: float) -> None:
        """`refund`, which never waits."""
        if amount > 0:
            self._bucket.refund(amount)

    def _refusal(self, wait: float, why: str) -> CapacityError:
        return rate_refusal(self._error, self.name, self.per_minute, self.unit, wait=wait, why=why)


class MemoryConcurrencyGate:
    """At most `limit` tries at once; waiters queue by fair share, bounded, deadline-aware."""

    __slots__ = ("_clock", "_max_wait", "_max_waiters", "_queue", "limit", "name")

    def __init__(
        self,
        name: str,
        limit: int,
        max_waiters: int,
        max_wait: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.limit = limit
        self._queue = FairQueue(limit)
        self._max_waiters = max_waiters
        self._max_wait = max_wait
        self._clock = clock

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return self._queue.in_use

    @property
    def waiters(self) -> int:
        """Tries queued for a slot right now."""
        return self._queue.waiting

    def holding(self, caller: str) -> int:
        """Slots `caller` holds now."""
        return self._queue.holding(caller)

    async def acquire(self, deadline: float | None, caller: str = "", weight: float = 1.0) -> Lease:
        """Take a slot for `caller`, waiting its turn while the deadline allows."""
        queue = self._queue
        if queue.in_use < self.limit and not queue.waiting:  # `take` and `hold`, inlined
            queue.in_use += 1
            held = queue.held
            held[caller] = held.get(caller, 0) + 1
            return Lease(self._clock.monotonic(), None, caller)  # the only allocation
        timeout = self._max_wait
        if deadline is not None:
            timeout = min(timeout, deadline - self._clock.monotonic())
        if timeout <= 0:
            raise self._busy(caller)
        try:
            await queue.wait(caller, weight, timeout, self._max_waiters)
        except (TimeoutError, QueueFullError):
            raise self._busy(caller) from None
        return Lease(self._clock.monotonic(), None, caller)

    def take_now(self, caller: str) -> Lease | None:
        """A slot for `caller` if one is free and nobody waits; else None, nothing taken."""
        queue = self._queue
        if queue.in_use >= self.limit or queue.waiting:
            return None
        queue.in_use += 1
        held = queue.held
        held[caller] = held.get(caller, 0) + 1
        return Lease(self._clock.monotonic(), None, caller)

    async def release(self, lease: Lease) -> None:
        """Give the lease's slot back: to the fairest waiting caller, else to the pool."""
        self.release_now(lease)

    def release_now(self, lease: Lease) -> None:
        """`release`, which never waits."""
        if lease.released:
            return
        lease.released = True
        queue = self._queue
        queue.unhold(lease.caller)
        if queue.waiting:
            queue.give()
        else:  # the free path, inlined
            queue.in_use -= 1

    def _busy(self, caller: str) -> ModelBusyError:
        return busy(self.name, self.limit, caller, self._queue.holding(caller))


class MemoryGates:
    """Makes memory gates that share one queue bound, one longest wait and one clock."""

    __slots__ = ("_clock", "_max_wait", "_max_waiters")

    def __init__(self, max_waiters: int, max_wait: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._max_waiters = max_waiters
        self._max_wait = max_wait
        self._clock = clock

    def rate(
        self,
        name: str,
        per_minute: float,
        burst: float,
        *,
        unit: str = "requests",
        error: type[CapacityError],
    ) -> MemoryRateGate:
        """A memory rate gate."""
        return MemoryRateGate(
            name,
            per_minute,
            burst,
            self._max_waiters,
            max_wait=self._max_wait,
            unit=unit,
            error=error,
            clock=self._clock,
        )

    def concurrency(self, name: str, limit: int) -> MemoryConcurrencyGate:
        """A memory concurrency gate."""
        return MemoryConcurrencyGate(name, limit, self._max_waiters, self._max_wait, self._clock)

    async def admit(
        self,
        caps: Sequence[ConcurrencyGate],
        rates: Sequence[tuple[RateGate, float]],
        deadline: float | None,
        caller: str = "",
        weight: float = 1.0,
    ) -> Ticket:
        """Take each slot, then each rate amount, one gate after another."""
        return await admit_in_turn(caps, rates, deadline, caller, weight)

    async def give_back(
        self, ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()
    ) -> None:
        """Release the slots, last taken first, and refund the unused amounts."""
        await give_back_in_turn(ticket, refunds)

    def admit_now(
        self,
        caps: Sequence[ConcurrencyGate],
        rates: Sequence[tuple[RateGate, float]],
        caller: str = "",
    ) -> Ticket | None:
        """Every slot and amount taken at once, in `admit`'s order, when none has to wait
        (the common case: no coroutine per gate); else None, with what was taken given
        back. Gates of another backend are left to `admit`."""
        leases: list[Lease] = []
        taken: list[tuple[MemoryRateGate, float]] = []
        for cap in caps:
            lease = cap.take_now(caller) if type(cap) is MemoryConcurrencyGate else None
            if lease is None:
                return self._undo(caps, leases, taken)
            leases.append(lease)
        for gate, amount in rates:
            if type(gate) is not MemoryRateGate or not gate.take_now(amount):
                return self._undo(caps, leases, taken)
            taken.append((gate, amount))
        return Ticket(caps, leases, rates, 0.0)

    @staticmethod
    def _undo(
        caps: Sequence[ConcurrencyGate],
        leases: list[Lease],
        taken: list[tuple[MemoryRateGate, float]],
    ) -> None:
        for gate, amount in taken:
            gate.refund_now(amount)
        for cap, lease in zip(reversed(caps[: len(leases)]), reversed(leases), strict=True):
            assert type(cap) is MemoryConcurrencyGate
            cap.release_now(lease)

    def give_back_now(self, ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()) -> bool:
        """`give_back` at once: memory gates never wait to give back (False for others)."""
        caps: list[MemoryConcurrencyGate] = []
        for cap in ticket.caps:
            if type(cap) is not MemoryConcurrencyGate:
                return False
            caps.append(cap)
        gates: list[tuple[MemoryRateGate, float]] = []
        for gate, amount in refunds:
            if type(gate) is not MemoryRateGate:
                return False
            gates.append((gate, amount))
        for cap, lease in zip(reversed(caps), reversed(ticket.leases), strict=True):
            cap.release_now(lease)
        for gate, amount in gates:
            gate.refund_now(amount)
        return True
