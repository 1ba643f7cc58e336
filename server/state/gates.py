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

Refusals are CapacityErrors (RESOURCE_EXHAUSTED with a retry-after hint): the
class of error is the gate's creator's choice (a model's own limits fall
back, the global relay budget does not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from server.errors import CapacityError, ModelBusyError

BUSY_RETRY_AFTER = 1.0  # a slot's wait cannot be predicted; this hint is honest enough


class Lease:
    """One concurrency slot held; a shared store may reclaim it after `expires_at`."""

    __slots__ = ("expires_at", "released", "taken_at")

    def __init__(self, taken_at: float, expires_at: float | None = None) -> None:
        self.taken_at = taken_at  # monotonic seconds
        self.expires_at = expires_at  # None: never (the holder is this process)
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


def busy(name: str, limit: int) -> ModelBusyError:
    """The refusal of a try that found a concurrency cap full until it could wait no longer."""
    return ModelBusyError(
        f"{name} has {limit} calls in flight, its limit; retry shortly", BUSY_RETRY_AFTER
    )


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

    async def acquire(self, deadline: float | None) -> Lease:
        """Take a slot, waiting in line while `deadline` allows, or raise a CapacityError."""
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
    ) -> Ticket:
        """Take a slot of each of `caps`, then each (gate, amount) of `rates`: all or none.

        Waits (while `deadline` allows) as the single gates would; on a refusal
        nothing stays taken and the refusing gate's CapacityError is raised.
        """
        ...

    async def give_back(
        self, ticket: Ticket, refunds: Sequence[tuple[RateGate, float]] = ()
    ) -> None:
        """Release the ticket's slots and refund the unused `refunds` of its rate gates."""
        ...


async def admit_in_turn(
    caps: Sequence[ConcurrencyGate],
    rates: Sequence[tuple[RateGate, float]],
    deadline: float | None,
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
            leases.append(await cap.acquire(deadline))  # noqa: PERF401 (kept on failure)
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
