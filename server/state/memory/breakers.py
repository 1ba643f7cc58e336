"""Circuit breakers in this process's memory: each replica judges models on its own tries."""

from __future__ import annotations

from collections.abc import Iterable

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import CircuitStatus, ModelSpec
from server.settings import BreakerSettings
from server.state.breakers import CircuitBreaker


class MemoryBreakers:
    """One `CircuitBreaker` per model of the catalog."""

    __slots__ = ("_by_model", "_clock")

    def __init__(
        self,
        models: Iterable[ModelSpec],
        settings: BreakerSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._by_model = {model.name: CircuitBreaker(model.name, settings) for model in models}
        self._clock = clock

    def of(self, model: str) -> CircuitBreaker:
        """The breaker of `model`."""
        return self._by_model[model]

    async def admit(self, model: str) -> None:
        """Let a try through, or raise CircuitOpenError."""
        self._by_model[model].admit(self._clock.monotonic())

    async def succeeded(self, model: str) -> None:
        """The try answered."""
        self._by_model[model].succeeded()

    async def failed(self, model: str) -> None:
        """The try failed in a way that says the model is unwell."""
        self._by_model[model].failed(self._clock.monotonic())

    async def neutral(self, model: str) -> None:
        """The try said nothing about the model."""
        self._by_model[model].neutral()

    async def status(self, model: str) -> CircuitStatus:
        """The breaker of `model` now."""
        return self._by_model[model].status(self._clock.monotonic())

    def snapshot(self, model: str) -> CircuitStatus:
        """The same, without I/O (there is none here)."""
        return self._by_model[model].status(self._clock.monotonic())
