"""Circuit breakers: which models to stop sending calls to, for a while.

Each model has one breaker::

    CLOSED --(`failures` passing failures in a row)--> OPEN
    OPEN --(`cooldown` seconds)--> HALF_OPEN: exactly one probe try goes through
    HALF_OPEN --(probe answers)--> CLOSED
    HALF_OPEN --(probe fails)--> OPEN again, for another cooldown

The breaker stage (``server/pipeline/breaker.py``) decides what counts as a
failure and reports each try's outcome; a `BreakerRegistry` holds the state,
so a shared store can open a circuit on every replica at once. `CircuitBreaker`
is the state machine itself, pure (it is handed the time), for any backend
that keeps the state in this process.
"""

from __future__ import annotations

from typing import Protocol

from server.domain import CIRCUIT_CLOSED, CircuitState, CircuitStatus
from server.errors import CircuitOpenError
from server.settings import BreakerSettings


class BreakerRegistry(Protocol):
    """Every model's breaker."""

    async def admit(self, model: str) -> None:
        """Let a try of `model` through (as the probe, when half-open) or raise CircuitOpenError."""
        ...

    async def succeeded(self, model: str) -> None:
        """The try answered: the model is healthy."""
        ...

    async def failed(self, model: str) -> None:
        """The try failed in a way that says the model is unwell."""
        ...

    async def neutral(self, model: str) -> None:
        """The try ended in a way that says nothing about the model (frees a probe)."""
        ...

    async def status(self, model: str) -> CircuitStatus:
        """The breaker of `model` now."""
        ...

    def snapshot(self, model: str) -> CircuitStatus:
        """The breaker of `model` as this process last saw it (read by metrics: no I/O)."""
        ...


class CircuitBreaker:
    """The state machine of one model's breaker; every method is told the time."""

    __slots__ = ("_cooldown", "_failures", "_limit", "_opened_at", "_probing", "model")

    def __init__(self, model: str, settings: BreakerSettings) -> None:
        self.model = model
        self._limit = settings.failures
        self._cooldown = settings.cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def status(self, now: float) -> CircuitStatus:
        """The state at `now`, and seconds until a probe is allowed."""
        if self._opened_at is None:
            return CIRCUIT_CLOSED
        left = self._opened_at + self._cooldown - now
        if left > 0 or self._probing:
            state = CircuitState.OPEN if left > 0 else CircuitState.HALF_OPEN
            return CircuitStatus(state, max(left, 0.0))
        return CircuitStatus(CircuitState.HALF_OPEN)

    def admit(self, now: float) -> None:
        """Let a try through, or raise CircuitOpenError."""
        if self._opened_at is None:
            return
        status = self.status(now)
        if status.state is CircuitState.OPEN or self._probing:
            raise CircuitOpenError(self.model, self._failures, max(status.retry_in, 0.1))
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

    def opened_elsewhere(self, now: float, left: float) -> None:
        """Another replica opened this circuit; its cooldown ends in `left` seconds."""
        if self._opened_at is not None and self.status(now).state is not CircuitState.CLOSED:
            return  # already open (or probing) here
        self._failures = max(self._failures, self._limit)
        self._opened_at = now - max(self._cooldown - left, 0.0)
        self._probing = False

    @property
    def cooldown(self) -> float:
        """Seconds a circuit stays open before a probe."""
        return self._cooldown
