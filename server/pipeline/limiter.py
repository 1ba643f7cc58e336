"""The limiter: Switchyard's own budgets, applied to every relay try.

Each try must get, in this order:

1. a concurrency slot of its model (the catalog's `max_concurrent`) and of
   its provider (anthropic 10, openai 20, google 30, others 5 by default);
2. a unit of the global relay budget (500 requests a minute, bursts of 50);
3. a unit of its model's requests-per-minute budget and, from its model's
   tokens-per-minute budget, the call's input estimate plus its effective
   max_tokens. The unused part of that token reservation is given back when
   the try ends, from the usage the relay billed.

Slots come first because they can be handed back: a try that cannot get
one has not spent any of the scarcer rate budgets. Everything taken is given
back on every path (answer, error, timeout, cancel, shutdown) by one
`finally`.

Budgets are aiolimiter leaky buckets. A bucket alone would queue without
bound, let a waiter sleep past its caller's deadline, and (its waiters are a
min-heap by amount) let small requests overtake large ones forever. So each
`RateBudget` puts a bounded FIFO in front of its bucket and predicts the
wait before queueing: a try that cannot get capacity within its caller's
deadline (or `max_wait`), or finds the queue full, is refused at once with
RESOURCE_EXHAUSTED and a retry-after hint instead of failing later with a
timeout. A model's own limits raise ModelBusyError, on which the fallback
stage tries the next model; the global relay budget raises RateLimitedError,
which no other model can avoid.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

from aiolimiter import AsyncLimiter

from server import telemetry as semconv
from server.catalog import ModelSpec
from server.domain import Attempt, Completion, ModelCall, Outcome, StreamEvent
from server.errors import CapacityError, ModelBusyError, RateLimitedError
from server.pipeline.base import Handler, Stage
from server.settings import LimitSettings
from server.telemetry import Telemetry

BUSY_RETRY_AFTER = 1.0  # a slot's wait cannot be predicted; this hint is honest enough


class Bucket(AsyncLimiter):
    """aiolimiter's bucket, able to say how long until an amount fits.

    Reads and lowers the bucket's level, which aiolimiter keeps private; the
    pinned aiolimiter version and tests/unit/pipeline/test_limiter.py guard it.
    """

    __slots__ = ()

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` more fits in the bucket (0 if it fits now)."""
        self._leak()
        excess = self._level + amount - self.max_rate
        return max(excess, 0.0) / self._rate_per_sec

    def refund(self, amount: float) -> None:
        """Give back `amount` taken earlier but not used."""
        self._leak()
        self._level = max(self._level - amount, 0.0)
        self._wake_next()


class RateBudget:
    """A budget of `per_minute` units a minute with bursts of `burst`."""

    __slots__ = (
        "_bucket",
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
    ) -> None:
        self.name = name
        self.per_minute = per_minute
        self.unit = unit
        self._error = error
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

        Returns the seconds waited. Raises at once when the wait would
        outlast `deadline` (a time.monotonic() instant) or the longest
        allowed wait, when the queue is full, or when `amount` can never fit.
        """
        if amount > self._bucket.max_rate:
            raise self._error(
                f"{self.name} allows at most {self._bucket.max_rate:g} {self.unit} at once"
                f" and this call needs {amount:g}; ask for fewer tokens",
                60.0,
            )
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

    def refund(self, amount: float) -> None:
        """Give back `amount` of an earlier acquire that went unused."""
        if amount > 0:
            self._bucket.refund(amount)

    def _refusal(self, wait: float, why: str) -> CapacityError:
        retry_after = math.ceil(wait * 10) / 10  # whole tenths read better than 0.4173 s
        return self._error(
            f"{self.name} ({self.per_minute:g} {self.unit}/min) is spent"
            f" and {why}; retry in {retry_after:g} s",
            retry_after,
        )


class ConcurrencyCap:
    """At most `limit` tries at once; waiters queue FIFO, bounded, deadline-aware."""

    __slots__ = ("_max_wait", "_max_waiters", "_waiters", "in_use", "limit", "name")

    def __init__(self, name: str, limit: int, max_waiters: int, max_wait: float) -> None:
        self.name = name
        self.limit = limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._max_waiters = max_waiters
        self._max_wait = max_wait

    @property
    def waiters(self) -> int:
        """Tries queued for a slot right now."""
        return len(self._waiters)

    async def acquire(self, deadline: float | None) -> None:
        """Take a slot, waiting in line while the deadline allows."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        timeout = self._max_wait
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        if len(self._waiters) >= self._max_waiters or timeout <= 0:
            raise self._busy()
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            async with asyncio.timeout(timeout):
                await slot
        except BaseException as exc:
            if slot.done() and not slot.cancelled():
                self.release()  # a slot was handed over as we gave up: pass it on
            else:
                slot.cancel()
                self._waiters.remove(slot)  # leave the line, so it stays bounded truly
            if isinstance(exc, TimeoutError):
                raise self._busy() from None
            raise

    def release(self) -> None:
        """Give a slot back: to the first live waiter, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to it; in_use is unchanged
                return
        self.in_use -= 1

    def _busy(self) -> ModelBusyError:
        return ModelBusyError(
            f"{self.name} has {self.limit} calls in flight, its limit; retry shortly",
            BUSY_RETRY_AFTER,
        )


class ModelLimits:
    """Everything one model's tries must take, in the order they take it."""

    __slots__ = ("model_cap", "provider_cap", "rpm", "tpm")

    def __init__(
        self,
        model_cap: ConcurrencyCap,
        provider_cap: ConcurrencyCap,
        rpm: RateBudget | None,
        tpm: RateBudget | None,
    ) -> None:
        self.model_cap = model_cap
        self.provider_cap = provider_cap
        self.rpm = rpm
        self.tpm = tpm


class Limits:
    """The global relay budget and every model's and provider's limits."""

    __slots__ = ("_models", "providers", "relay")

    def __init__(self, models: Mapping[str, ModelSpec], settings: LimitSettings) -> None:
        def rate(name: str, per_minute: int, unit: str, error: type[CapacityError]) -> RateBudget:
            return RateBudget(
                name,
                per_minute,
                per_minute,
                settings.max_waiters,
                max_wait=settings.max_wait,
                unit=unit,
                error=error,
            )

        self.relay = RateBudget(
            "Switchyard's relay budget",
            settings.relay_rpm,
            settings.relay_burst,
            settings.max_waiters,
            max_wait=settings.max_wait,
        )
        self.providers: dict[str, ConcurrencyCap] = {}
        self._models: dict[str, ModelLimits] = {}
        for model in models.values():
            provider = self.providers.get(model.provider)
            if provider is None:
                limit = settings.provider_concurrency.get(
                    model.provider, settings.other_provider_concurrency
                )
                provider = self.providers[model.provider] = ConcurrencyCap(
                    f"provider {model.provider}", limit, settings.max_waiters, settings.max_wait
                )
            self._models[model.name] = ModelLimits(
                ConcurrencyCap(
                    f"model {model.name}",
                    model.max_concurrent,
                    settings.max_waiters,
                    settings.max_wait,
                ),
                provider,
                rate(f"{model.name}'s request budget", model.rpm, "requests", ModelBusyError)
                if model.rpm
                else None,
                rate(f"{model.name}'s token budget", model.tpm, "tokens", ModelBusyError)
                if model.tpm
                else None,
            )

    def of(self, model: ModelSpec) -> ModelLimits:
        """The limits of `model`."""
        return self._models[model.name]

    def provider_load(self) -> dict[str, tuple[int, int]]:
        """provider -> (tries holding a slot now, the cap), sorted by provider."""
        return {name: (cap.in_use, cap.limit) for name, cap in sorted(self.providers.items())}


class LimiterStage(Stage[ModelCall]):
    """Takes every limit a try needs before it, and gives it all back after."""

    __slots__ = ("_limits", "_telemetry")

    def __init__(
        self, next_handler: Handler[ModelCall], limits: Limits, telemetry: Telemetry | None = None
    ) -> None:
        super().__init__(next_handler)
        self._limits = limits
        self._telemetry = telemetry or Telemetry.disabled()

    async def _take(self, item: ModelCall) -> Callable[[], None]:
        """Take what `item` needs; return the function that gives it back."""
        limits = self._limits.of(item.model)
        deadline = item.call.deadline
        taken: list[Callable[[], None]] = []
        reserved = 0
        started = time.monotonic()
        span = self._telemetry.child(item.call.span, "limiter wait")
        try:
            await limits.model_cap.acquire(deadline)
            taken.append(limits.model_cap.release)
            await limits.provider_cap.acquire(deadline)
            taken.append(limits.provider_cap.release)
            await self._limits.relay.acquire(1, deadline)
            if limits.rpm is not None:
                await limits.rpm.acquire(1, deadline)
            if limits.tpm is not None:
                route = item.call.route
                assert route is not None
                reserved = route.input_tokens + item.max_tokens
                await limits.tpm.acquire(reserved, deadline)
        except BaseException as exc:
            for give_back in reversed(taken):
                give_back()
            if isinstance(exc, CapacityError):  # reported like any try that did not happen
                item.call.attempts.append(
                    Attempt(
                        item.model, Outcome.SKIPPED, time.monotonic() - started, error=exc.reason
                    )
                )
                self._telemetry.instruments.limiter_rejections.add(
                    1, {semconv.GEN_AI_REQUEST_MODEL: item.model.name}
                )
                item.call.span.add_event(
                    semconv.EVENT_LIMITER_REFUSED,
                    {
                        semconv.SWITCHYARD_MODEL: item.model.name,
                        semconv.SWITCHYARD_REASON: exc.reason,
                    },
                )
                span.set_attribute(semconv.ERROR_TYPE, type(exc).__name__)
            raise
        finally:
            waited = time.monotonic() - started
            span.set_attribute(semconv.SWITCHYARD_LIMITER_WAIT_MS, round(waited * 1000, 3))
            span.end()
        if self._telemetry.tracing:
            self._telemetry.instruments.limiter_wait.record(
                waited, {semconv.GEN_AI_REQUEST_MODEL: item.model.name}
            )
        attempts_before = len(item.call.attempts)

        def release() -> None:
            for give_back in reversed(taken):
                give_back()
            if limits.tpm is not None:
                used = sum(
                    a.usage.input_tokens + a.usage.output_tokens
                    for a in item.call.attempts[attempts_before:]
                )
                limits.tpm.refund(reserved - used)

        return release

    async def query(self, item: ModelCall, /) -> Completion:
        """Take the limits, try, give them back."""
        release = await self._take(item)
        try:
            return await self.next.query(item)
        finally:
            release()

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """Take the limits, stream, give them back when the stream ends."""
        release = await self._take(item)
        try:
            async with aclosing(self.next.stream(item)) as events:
                async for event in events:
                    yield event
        finally:
            release()
