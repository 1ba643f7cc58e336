"""The limiter: Switchyard's own request budgets, applied to every relay try.

Budgets are aiolimiter leaky buckets. A bucket alone would queue without
bound, let a waiter sleep past its caller's deadline, and (its waiters are a
min-heap by amount) let small requests overtake large ones forever. So each
`RateBudget` puts a bounded FIFO in front of its bucket and predicts the wait
before queueing: a try that cannot get capacity within its caller's deadline,
or that finds the queue full, is refused at once with RESOURCE_EXHAUSTED and
a retry-after hint, instead of failing later with a timeout.

Budgets apply per relay request, retries included, because that is what the
relay's plan limits count::

    budget = RateBudget("relay", per_minute=500, burst=50, max_waiters=1000)
    waited = await budget.acquire(1, deadline=time.monotonic() + 2.0)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from aiolimiter import AsyncLimiter

from server.domain import Completion, ModelCall, StreamEvent
from server.errors import RateLimitedError
from server.pipeline.base import Handler, Stage


class Bucket(AsyncLimiter):
    """aiolimiter's bucket, able to say how long until an amount fits.

    Reads the bucket's level, which aiolimiter keeps private; the pinned
    aiolimiter version and tests/unit/pipeline/test_limiter.py guard this.
    """

    __slots__ = ()

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` more fits in the bucket (0 if it fits now)."""
        self._leak()
        excess = self._level + amount - self.max_rate
        return max(excess, 0.0) / self._rate_per_sec


class RateBudget:
    """A budget of `per_minute` units a minute with bursts of `burst`."""

    __slots__ = (
        "_bucket",
        "_lock",
        "_max_wait",
        "_max_waiters",
        "_queued",
        "_waiters",
        "name",
        "per_minute",
    )

    def __init__(
        self,
        name: str,
        per_minute: float,
        burst: float,
        max_waiters: int,
        max_wait: float = float("inf"),
    ) -> None:
        self.name = name
        self.per_minute = per_minute
        self._max_wait = max_wait
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
        """Take `amount`, waiting in line while the deadline allows.

        Returns the seconds waited. Raises RateLimitedError at once when the
        wait would outlast `deadline` (a time.monotonic() instant) or the
        longest allowed wait, or when the queue is full.
        """
        wait = self._bucket.wait_time(self._queued + amount)
        if wait > 0:
            if self._waiters >= self._max_waiters:
                raise self._refusal(wait, "too many calls are already waiting")
            if deadline is not None and wait > deadline - time.monotonic():
                raise self._refusal(wait, "the wait would outlast the call's deadline")
            if wait > self._max_wait:
                raise self._refusal(wait, f"the wait would exceed {self._max_wait:g} s")
        started = time.monotonic()
        self._waiters += 1
        self._queued += amount
        try:
            async with self._lock:
                await self._bucket.acquire(amount)
        finally:
            self._waiters -= 1
            self._queued -= amount
        return time.monotonic() - started if wait > 0 else 0.0

    def _refusal(self, wait: float, why: str) -> RateLimitedError:
        retry_after = math.ceil(wait * 10) / 10  # whole tenths read better than 0.4173 s
        return RateLimitedError(
            f"Switchyard's {self.name} budget ({self.per_minute:g} requests/min) is spent"
            f" and {why}; retry in {retry_after:g} s",
            retry_after,
        )


class LimiterStage(Stage[ModelCall]):
    """Takes one unit of the relay budget before each relay try."""

    __slots__ = ("_relay_budget",)

    def __init__(self, next_handler: Handler[ModelCall], relay_budget: RateBudget) -> None:
        super().__init__(next_handler)
        self._relay_budget = relay_budget

    async def query(self, item: ModelCall, /) -> Completion:
        """Wait for budget, then try."""
        await self._relay_budget.acquire(1, item.call.deadline)
        return await self.next.query(item)

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """Wait for budget, then stream."""
        await self._relay_budget.acquire(1, item.call.deadline)
        async with aclosing(self.next.stream(item)) as events:
            async for event in events:
                yield event
