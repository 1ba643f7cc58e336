"""Circuit breakers: stop sending calls to a model that keeps failing.

Each model has one breaker::

    CLOSED --(`failures` passing failures in a row)--> OPEN
    OPEN --(`cooldown` seconds)--> HALF_OPEN: exactly one probe try goes through
    HALF_OPEN --(probe answers)--> CLOSED
    HALF_OPEN --(probe fails)--> OPEN again, for another cooldown

Only passing failures count (overload, 5xx, network, timeouts, a stream cut
off): a bad key or a refused request says nothing about the model's health,
and neither does a caller who cancels. While a circuit is open, the model's
tries are refused at once with CircuitOpenError and recorded as SKIPPED, so
the fallback stage moves straight to the next model. Route reports every
breaker's state.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncGenerator, Iterable

from server import telemetry as semconv
from server.catalog import ModelSpec
from server.domain import Attempt, Completion, ModelCall, Outcome, StreamEvent
from server.errors import CircuitOpenError, RelayError, StreamInterruptedError
from server.pipeline.base import Handler, Stage
from server.settings import BreakerSettings


class CircuitState(enum.Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """The breaker of one model."""

    __slots__ = ("_cooldown", "_failures", "_limit", "_opened_at", "_probing", "model")

    def __init__(self, model: str, settings: BreakerSettings) -> None:
        self.model = model
        self._limit = settings.failures
        self._cooldown = settings.cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def state(self, now: float) -> tuple[CircuitState, float]:
        """The state now, and seconds until a probe is allowed (0 unless open)."""
        if self._opened_at is None:
            return CircuitState.CLOSED, 0.0
        left = self._opened_at + self._cooldown - now
        if left > 0 or self._probing:
            return CircuitState.OPEN if left > 0 else CircuitState.HALF_OPEN, max(left, 0.0)
        return CircuitState.HALF_OPEN, 0.0

    def admit(self, now: float) -> None:
        """Let a try through, or raise CircuitOpenError."""
        if self._opened_at is None:
            return
        state, left = self.state(now)
        if state is CircuitState.OPEN or self._probing:
            raise CircuitOpenError(self.model, self._failures, max(left, 0.1))
        self._probing = True  # this try is the probe

    def succeeded(self) -> None:
        """The try answered: the model is healthy."""
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failed(self, now: float) -> None:
        """The try failed in a way that says the model is unwell."""
        self._failures += 1
        if self._probing or self._failures >= self._limit:
            self._opened_at = now
        self._probing = False

    def neutral(self) -> None:
        """The try ended in a way that says nothing about the model."""
        self._probing = False


class Breakers:
    """Every model's breaker."""

    __slots__ = ("_by_model",)

    def __init__(self, models: Iterable[ModelSpec], settings: BreakerSettings) -> None:
        self._by_model = {model.name: CircuitBreaker(model.name, settings) for model in models}

    def of(self, model: ModelSpec) -> CircuitBreaker:
        """The breaker of `model`."""
        return self._by_model[model.name]

    def state(self, model: ModelSpec, now: float | None = None) -> tuple[CircuitState, float]:
        """The state of `model`'s breaker now, with seconds until a probe."""
        return self._by_model[model.name].state(time.monotonic() if now is None else now)


class BreakerStage(Stage[ModelCall]):
    """Refuses tries of open circuits and tells each breaker how its tries end."""

    __slots__ = ("_breakers",)

    def __init__(self, next_handler: Handler[ModelCall], breakers: Breakers) -> None:
        super().__init__(next_handler)
        self._breakers = breakers

    def _admit(self, item: ModelCall) -> CircuitBreaker:
        breaker = self._breakers.of(item.model)
        try:
            breaker.admit(time.monotonic())
        except CircuitOpenError as error:
            item.call.attempts.append(Attempt(item.model, Outcome.SKIPPED, 0.0, error=error.reason))
            item.call.span.add_event(
                semconv.EVENT_CIRCUIT_OPEN,
                {
                    semconv.SWITCHYARD_MODEL: item.model.name,
                    semconv.SWITCHYARD_CIRCUIT_RETRY_IN_MS: round((error.retry_after or 0) * 1000),
                },
            )
            raise
        return breaker

    async def query(self, item: ModelCall, /) -> Completion:
        """Try unless the circuit is open; report the outcome to the breaker."""
        breaker = self._admit(item)
        try:
            completion = await self.next.query(item)
        except RelayError as error:
            _report(breaker, error)
            raise
        except BaseException:
            breaker.neutral()
            raise
        breaker.succeeded()
        return completion

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream unless the circuit is open; report the outcome to the breaker."""
        breaker = self._admit(item)
        events = self.next.stream(item)
        settled = False
        try:
            async for event in events:
                if isinstance(event, Completion):
                    settled = True
                    breaker.succeeded()
                yield event
        except RelayError as error:
            settled = True
            _report(breaker, error)
            raise
        finally:
            if not settled:  # cancelled, or ended by something other than the relay
                breaker.neutral()
            await events.aclose()


def _report(breaker: CircuitBreaker, error: RelayError) -> None:
    # A stream cut off after its first text is the model's trouble all the same.
    if error.retryable or isinstance(error, StreamInterruptedError):
        breaker.failed(time.monotonic())
    else:
        breaker.neutral()
