"""Rate gates and concurrency gates: the capacity every relay try must take first.

The limiter stage (``server/pipeline/limiter.py``) decides WHICH gates a try
needs (its model's and its provider's concurrency, the global relay budget,
its model's request and token budgets); a `GateFactory` from the state
backend makes each gate, so the same stage runs on memory or a shared store.

* A `RateGate` is a budget of units a minute with bursts: `acquire` takes an
  amount, waiting in line (FIFO) only as long as the caller's deadline allows
  and refusing at once when it could not get it in time; `refund` gives back
  what was taken and went unused (the unused part of a token reservation).
* A `ConcurrencyGate` allows `limit` holders at once. `acquire` returns a
  `Lease`: when it was taken and, for a store shared by several processes,
  when it expires, so a slot held by a process that died comes back. In
  memory a lease never expires. `release` is idempotent: a lease gives its
  slot back once.

A try needs several gates at once (its model's and provider's slots, then
the rate budgets), so the factory takes them together: `admit` takes every
slot and every rate amount of one try or none of them, and `give_back`
returns them. In memory that is one gate after another; a shared store does
it in one round trip.

Fair shares: when a concurrency cap is full, its waiters queue per caller
(the tenant) in a `FairQueue`, FIFO within one caller, and a freed slot goes
to the waiting caller holding the least of the cap for its weight (held /
weight; weights per tenant from `SWITCHYARD_TENANT_WEIGHTS`). So a caller
that opened many calls cannot keep the others waiting: once it holds its
share, every slot that frees goes to the others first. Slots are never
taken back from a holder; a caller past its share simply gets no more while
others wait. The shares are this process's: with Redis each replica orders
its own waiters (see ``redis/gates.py``).

Refusals are CapacityErrors (RESOURCE_EXHAUSTED with a retry-after hint): the
class of error is the gate's creator's choice (a model's own limits fall
back, the global relay budget does not).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from server.errors import CapacityError, ModelBusyError

BUSY_RETRY_AFTER = 1.0  # a slot's wait cannot be predicted; this hint is honest enough


class Lease:
    """One concurrency slot held by `caller`; a shared store may reclaim it after `expires_at`."""

    __slots__ = ("caller", "expires_at", "released", "taken_at")

    def __init__(self, taken_at: float, expires_at: float | None = None, caller: str = "") -> None:
        self.taken_at = taken_at  # monotonic seconds
        self.expires_at = expires_at  # None: never (the holder is this process)
        self.caller = caller  # whose share the slot counts in
        self.released = False


def too_big(
    error: type[CapacityError], name: str, burst: float, unit: str, amount: float
) -> CapacityError:
    """The refusal of an amount larger than a rate gate's whole burst (every backend's)."""
    return error(
        f"{name} allows at most {burst:g} {unit} at once and this call needs {amount:g};"
        " ask for fewer tokens",
        60.0,
    )


def rate_refusal(
    error: type[CapacityError], name: str, per_minute: float, unit: str, *, wait: float, why: str
) -> CapacityError:
    """The refusal of a wait for a rate gate that may not happen (every backend's)."""
    retry_after = math.ceil(wait * 10) / 10  # whole tenths read better than 0.4173 s
    return error(
        f"{name} ({per_minute:g} {unit}/min) is spent and {why}; retry in {retry_after:g} s",
        retry_after,
    )


def busy(name: str, limit: int, caller: str = "", held: int = 0) -> ModelBusyError:
    """The refusal of a try that found a concurrency cap full until it could wait no longer.

    `held`: how many of the slots the refused try's caller holds itself, said
    so that a caller past its fair share knows why others were served first.
    """
    share = ""
    if held:
        share = (
            f", {held} of them by caller {caller!r} (a freed slot goes first to the callers"
            " holding less of their share)"
        )
    return ModelBusyError(
        f"{name} has {limit} calls in flight, its limit{share}; retry shortly", BUSY_RETRY_AFTER
    )


class QueueFullError(Exception):
    """A `FairQueue` has no room for this waiter (or pushed it out for another caller's)."""


class _Waiter:
    """One try waiting in a `FairQueue`: whose it is, its weight, when it came."""

    __slots__ = ("caller", "future", "queued", "seq", "weight")

    def __init__(self, caller: str, weight: float, seq: int, future: asyncio.Future[None]) -> None:
        self.caller = caller
        self.weight = weight
        self.seq = seq  # arrival order: ties between callers go to the earlier waiter
        self.future = future
        self.queued = True  # still in its caller's line


class FairQueue:
    """`limit` units handed to waiting callers by weighted fair share, FIFO within one caller.

    A unit is a slot of a cap (memory) or the turn to ask the shared store
    for one (Redis). `held` counts each caller's slots of the cap; a freed
    unit goes to the waiting caller with the smallest held / weight, ties to
    the one waiting longest. `counts_slots` says whether a unit IS a slot
    (then handing one over counts it as held at once, so two releases in a
    row cannot both pick the same caller before it runs).

    Free path (a unit free, nobody waiting): `take` and `hold`, no allocation
    and no lock; the queue costs only while someone waits::

        if queue.take():
            queue.hold(caller)
        else:
            await queue.wait(caller, weight, seconds, max_waiters)  # held on return
        ...
        queue.unhold(caller)
        queue.give()
    """

    __slots__ = ("_arrivals", "_counts_slots", "_lines", "held", "in_use", "limit", "waiting")

    def __init__(self, limit: int, *, counts_slots: bool = True) -> None:
        self.limit = limit
        self.in_use = 0  # units out (slots held, or 1 while a try has the turn)
        self.waiting = 0  # live waiters in all lines
        self._counts_slots = counts_slots
        self.held: dict[str, int] = {}  # caller -> slots of the cap it holds; no zeros kept
        self._lines: dict[str, deque[_Waiter]] = {}  # caller -> its waiters, oldest first
        self._arrivals = 0

    def holding(self, caller: str) -> int:
        """Slots of the cap `caller` holds now (in this process)."""
        return self.held.get(caller, 0)

    def hold(self, caller: str) -> None:
        """Count one more slot as `caller`'s."""
        self.held[caller] = self.held.get(caller, 0) + 1

    def unhold(self, caller: str) -> None:
        """Count one slot fewer as `caller`'s (the entry goes at zero: nothing kept per caller)."""
        left = self.held.get(caller, 0) - 1
        if left > 0:
            self.held[caller] = left
        else:
            self.held.pop(caller, None)

    def take(self) -> bool:
        """Take a unit at once when one is free and nobody waits for it."""
        if self.in_use < self.limit and not self.waiting:
            self.in_use += 1
            return True
        return False

    async def wait(
        self,
        caller: str,
        weight: float,
        seconds: float,
        max_waiters: int,
        *,
        first: bool = False,
    ) -> None:
        """Wait in `caller`'s line until a unit is handed over (at the line's head if `first`).

        Raises TimeoutError past `seconds`, and QueueFullError when
        `max_waiters` already wait and `caller` asks for more than anyone
        else (otherwise the newest waiter of the greediest caller is pushed
        out to make room: a caller flooding the queue is refused, not the others).
        """
        if self.waiting >= max_waiters:
            self._make_room(caller, weight)
        self._arrivals += 1
        waiter = _Waiter(caller, weight, self._arrivals, asyncio.get_running_loop().create_future())
        line = self._lines.get(caller)
        if line is None:
            line = self._lines[caller] = deque()
        if first:
            line.appendleft(waiter)
        else:
            line.append(waiter)
        self.waiting += 1
        future = waiter.future
        try:
            async with asyncio.timeout(seconds):
                await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                # a unit was handed over as this waiter gave up: pass it on
                if self._counts_slots:
                    self.unhold(caller)
                self.give()
            else:
                future.cancel()
                self._leave(waiter)  # so the line stays bounded truly
            raise

    def give(self) -> None:
        """A unit came free: hand it to the fairest waiting caller, else back to the pool."""
        if not self.waiting:  # the free path
            self.in_use -= 1
            return
        waiter = self._fairest()
        if waiter is None:
            self.in_use -= 1
            return
        if self._counts_slots:
            self.hold(waiter.caller)  # now, not when it runs: the next pick must see it
        waiter.future.set_result(None)  # the unit moves to it; in_use is unchanged

    def fairer_waiting(self, caller: str, weight: float) -> bool:
        """Does a waiting caller hold less of its share than `caller` does?"""
        mine = self.holding(caller) / weight
        return any(
            line and self.holding(other) / line[0].weight < mine
            for other, line in self._lines.items()
            if other != caller
        )

    def _fairest(self) -> _Waiter | None:
        """Take the next waiter out: the head of the line of the least-served caller."""
        best: _Waiter | None = None
        best_key = (0.0, 0)
        for caller, line in list(self._lines.items()):
            while line and line[0].future.done():  # gave up meanwhile (cancelled)
                self._drop(line.popleft())
            if not line:
                del self._lines[caller]
                continue
            head = line[0]
            key = (self.holding(caller) / head.weight, head.seq)
            if best is None or key < best_key:
                best, best_key = head, key
        if best is not None:
            line = self._lines[best.caller]
            line.popleft()
            if not line:
                del self._lines[best.caller]
            self._drop(best)
        return best

    def _make_room(self, caller: str, weight: float) -> None:
        """Push out the newest waiter of the caller asking the most for its weight, unless
        that is `caller` itself: then `caller` is refused (QueueFullError)."""
        greediest = ""
        most = (self.holding(caller) + len(self._lines.get(caller, ())) + 1) / weight
        for other, line in self._lines.items():
            if other == caller or not line:
                continue
            asks = (self.holding(other) + len(line)) / line[-1].weight
            if asks > most:
                greediest, most = other, asks
        pushed = self._lines.get(greediest) if greediest else None
        if pushed is None:
            raise QueueFullError
        while pushed:
            newest = pushed.pop()
            self._drop(newest)
            if not newest.future.done():
                newest.future.set_exception(QueueFullError())
                break
        if not pushed:  # (dead waiters dropped on the way made room as well)
            del self._lines[greediest]

    def _leave(self, waiter: _Waiter) -> None:
        if waiter.queued:
            line = self._lines[waiter.caller]
            line.remove(waiter)
            self._drop(waiter)
            if not line:
                del self._lines[waiter.caller]

    def _drop(self, waiter: _Waiter) -> None:
        waiter.queued = False
        self.waiting -= 1


class Ticket:
    """What one try holds after `GateFactory.admit`: its slots, its rate amounts, the wait.

    `token` is the backend's own record of what it took (which store, which
    lease), read only by the factory that made the ticket.
    """

    __slots__ = ("caps", "leases", "rates", "token", "waited")

    def __init__(
        self,
        caps: Sequence[ConcurrencyGate],
        leases: list[Lease],
        rates: Sequence[tuple[RateGate, float]],
        waited: float,
        token: object = None,
    ) -> None:
        self.caps = caps
        self.leases = leases
        self.rates = rates
        self.waited = waited  # seconds spent waiting for capacity
        self.token = token


class RateGate(Protocol):
    """A budget of `per_minute` units a minute."""

    name: str
    per_minute: float
    unit: str

    @property
    def waiters(self) -> int:
        """Tries queued for capacity right now (in this process)."""
        ...

    async def acquire(self, amount: float, deadline: float | None) -> float:
        """Take `amount`, waiting in line while `deadline` allows; return the seconds waited.

        Raises a CapacityError at once when the wait would outlast the deadline
        (a monotonic instant) or the longest allowed wait, when the queue is
        full, or when `amount` can never fit.
        """
        ...

    async def refund(self, amount: float) -> None:
        """Give back `amount` of an earlier acquire that went unused."""
        ...


class ConcurrencyGate(Protocol):
    """At most `limit` holders at once."""

    name: str
    limit: int

    @property
    def in_use(self) -> int:
        """Slots held now, as far as this process knows (read by metrics: no I/O)."""
        ...

    @property
    def waiters(self) -> int:
        """Tries queued for a slot right now (in this process)."""
        ...

    def holding(self, caller: str) -> int:
        """Slots `caller` holds now, as far as this process knows (no I/O)."""
        ...

    async def acquire(self, deadline: float | None, caller: str = "", weight: float = 1.0) -> Lease:
        """Take a slot for `caller`, waiting its turn (fair share, see the module) while
        `deadline` allows, or raise a CapacityError."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the lease's slot back (once; later calls do nothing)."""
        ...


class GateFactory(Protocol):
    """Makes the gates of one state backend."""

    def rate(
        self,
        name: str,
        per_minute: float,
        burst: float,
        *,
        unit: str = "requests",
        error: type[CapacityError],
    ) -> RateGate:
        """A rate gate: `per_minute` units a minute, at most `burst` at once."""
        ...

    def concurrency(self, name: str, limit: int) -> ConcurrencyGate:
        """A concurrency gate of `limit` slots."""
        ...

    async def admit(
        self,
        caps: Sequence[ConcurrencyGate],
        rates: Sequence[tuple[RateGate, float]],
        deadline: float | None,
        caller: str = "",
        weight: float = 1.0,
    ) -> Ticket:
        """Take a slot of each of `caps`, then each (gate, amount) of `rates`: all or none.

        Waits (while `deadline` allows) as the single gates would, for a slot
        in `caller`'s turn under its `weight`; on a refusal nothing stays taken
        and the refusing gate's CapacityError is raised.
        """
        ...

    async def give_back(
        self, ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()
    ) -> None:
        """Release the ticket's slots and refund the unused `refunds` of its rate gates."""
        ...

    def admit_now(
        self,
        caps: Sequence[ConcurrencyGate],
        rates: Sequence[tuple[RateGate, float]],
        caller: str = "",
    ) -> Ticket | None:
        """`admit` when nothing has to wait or be asked elsewhere: every slot free with
        nobody queued and every amount fitting now, all taken without an await; else
        None with nothing taken, and the caller awaits `admit` (a backend whose state
        lives in another process always answers None)."""
        ...

    def give_back_now(self, ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()) -> bool:
        """`give_back` done at once when it needs no I/O (True); False: nothing was given
        back, await `give_back`."""
        ...


async def admit_in_turn(
    caps: Sequence[ConcurrencyGate],
    rates: Sequence[tuple[RateGate, float]],
    deadline: float | None,
    caller: str = "",
    weight: float = 1.0,
) -> Ticket:
    """`admit` for gates that each hold their own state: one gate after another.

    Slots come first because they can be handed back: a try that cannot get
    one has not spent any of the scarcer rate budgets. On a refusal (or a
    cancel) what was taken is given back; a rate amount that was taken is
    refunded.
    """
    leases: list[Lease] = []
    taken: list[tuple[RateGate, float]] = []
    try:
        for cap in caps:
            leases.append(await cap.acquire(deadline, caller, weight))  # noqa: PERF401
        waited = 0.0
        for gate, amount in rates:
            waited += await gate.acquire(amount, deadline)
            taken.append((gate, amount))
    except BaseException:
        await give_back_in_turn(Ticket(caps[: len(leases)], leases, taken, 0.0), taken)
        raise
    return Ticket(caps, leases, rates, waited)


async def give_back_in_turn(ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()) -> None:
    """`give_back` for gates that each hold their own state: slots last taken first."""
    for cap, lease in zip(reversed(ticket.caps), reversed(ticket.leases), strict=True):
        await cap.release(lease)
    for gate, amount in refunds:
        if amount > 0:
            await gate.refund(amount)
