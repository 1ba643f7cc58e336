"""Retry: try the same model again after a passing failure, within reason.

This stage is the single owner of backoff. A try that failed `retryable`
(connect error, timeout, 408, 409, 429, 5xx, 529, an SSE error before the
first token) is repeated on the same model after a delay:

* the relay's own hint when it gave one (`retry-after-ms`, `retry-after` in
  seconds or as an HTTP date); a hint longer than `max_retry_after` sends
  the call to the next model instead of waiting;
* otherwise exponential backoff with full jitter: uniform(0, min(max_delay,
  base_delay * 2^n)), so a crowd of failed calls does not return in step.

It stops (and the fallback stage moves on) after `max_attempts` tries, when
the caller's remaining deadline cannot cover the delay plus another try as
long as the last one, or when the retry budget is spent: retries may add at
most `budget_ratio` of the tries made in the last `budget_window` seconds
(with `budget_min_per_second` always allowed), so an outage cannot turn
into a retry storm that multiplies the load on a struggling provider.

A stream is retried only before its first text reached the caller.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncGenerator

from server import telemetry as semconv
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import Completion, ModelCall, StreamEvent
from server.errors import RelayError
from server.pipeline.base import Handler, Stage
from server.settings import RetrySettings


class RetryBudget:
    """Allows retries up to a share of recent tries, plus a small floor."""

    __slots__ = ("_min_per_second", "_ratio", "_retries", "_tries", "_window")

    def __init__(self, ratio: float, min_per_second: float, window: float) -> None:
        self._ratio = ratio
        self._min_per_second = min_per_second
        self._window = window
        self._tries: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        horizon = now - self._window
        for times in (self._tries, self._retries):
            while times and times[0] < horizon:
                times.popleft()

    def record_try(self, now: float) -> None:
        """Count a first try of a model (and forget those older than the window)."""
        self._tries.append(now)
        if self._tries[0] < now - self._window:
            self._trim(now)

    @property
    def held(self) -> int:
        """Timestamps kept: only those inside the window, so memory stays bounded."""
        return len(self._tries) + len(self._retries)

    def try_spend(self, now: float) -> bool:
        """Take one retry if the budget allows it now."""
        self._trim(now)
        allowed = self._ratio * len(self._tries) + self._min_per_second * self._window
        if len(self._retries) + 1 > allowed:
            return False
        self._retries.append(now)
        return True


class RetryStage(Stage[ModelCall]):
    """Repeats retryable failures of one model; see the module docstring."""

    __slots__ = ("_budget", "_clock", "_random", "_settings")

    def __init__(
        self,
        next_handler: Handler[ModelCall],
        settings: RetrySettings,
        budget: RetryBudget,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(next_handler)
        self._settings = settings
        self._budget = budget
        self._random = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self._clock = clock

    def delay(self, item: ModelCall, error: RelayError, tries: int) -> float | None:
        """Seconds to wait before try number `tries + 1`, or None to give up."""
        s = self._settings
        if not error.retryable or tries >= s.max_attempts:
            return None
        hint = error.retry_after
        if hint is not None:
            if hint > s.max_retry_after:
                return None
            wait = hint
        else:
            wait = self._random.uniform(0.0, min(s.max_delay, s.base_delay * 2 ** (tries - 1)))
        now = self._clock.monotonic()
        remaining = item.call.remaining(now)
        if remaining is not None:
            last = item.call.attempts[-1].latency if item.call.attempts else 0.0
            if wait + last >= remaining:
                return None
        if not self._budget.try_spend(now):
            return None
        item.call.span.add_event(
            semconv.EVENT_RETRY,
            {
                semconv.SWITCHYARD_MODEL: item.model.name,
                semconv.SWITCHYARD_RETRY_ATTEMPT: tries + 1,
                semconv.SWITCHYARD_RETRY_DELAY_MS: round(wait * 1000, 3),
                semconv.SWITCHYARD_REASON: error.reason,
            },
        )
        return wait

    async def query(self, item: ModelCall, /) -> Completion:
        """Try, and try again while `delay` allows."""
        self._budget.record_try(self._clock.monotonic())
        tries = 1
        while True:
            try:
                return await self.next.query(item)
            except RelayError as error:
                wait = self.delay(item, error, tries)
                if wait is None:
                    raise
            await self._clock.sleep(wait)
            tries += 1

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream; before the first text only, try again while `delay` allows."""
        self._budget.record_try(self._clock.monotonic())
        tries = 1
        while True:
            events = self.next.stream(item)
            try:
                first = await anext(events, None)
            except RelayError as error:
                await events.aclose()
                wait = self.delay(item, error, tries)
                if wait is None:
                    raise
            else:
                try:
                    if first is not None:
                        yield first  # committed: no retry from here on
                        async for event in events:
                            yield event
                    return
                finally:
                    await events.aclose()
            await self._clock.sleep(wait)
            tries += 1
