"""The breaker stage: stop sending tries to a model that keeps failing.

The state machine (CLOSED -> OPEN -> HALF_OPEN probe -> CLOSED) and where it
is kept belong to the `BreakerRegistry` (``server/state/breakers.py``); this
stage decides what each try's ending says about the model. Only passing
failures count (overload, 5xx, network, timeouts, a stream cut off): a bad
key or a refused request says nothing about the model's health, and neither
does a caller who cancels. While a circuit is open, the model's tries are
refused at once with CircuitOpenError and recorded as SKIPPED, so the
fallback stage moves straight to the next model. Route reports every
breaker's state.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from server import telemetry as semconv
from server.domain import Attempt, Completion, ModelCall, Outcome, StreamEvent
from server.errors import CircuitOpenError, RelayError, StreamInterruptedError
from server.pipeline.base import Handler, Stage
from server.state.breakers import BreakerRegistry


class BreakerStage(Stage[ModelCall]):
    """Refuses tries of open circuits and tells the registry how each try ends."""

    __slots__ = ("_breakers",)

    def __init__(self, next_handler: Handler[ModelCall], breakers: BreakerRegistry) -> None:
        super().__init__(next_handler)
        self._breakers = breakers

    async def _admit(self, item: ModelCall) -> None:
        try:
            await self._breakers.admit(item.model.name)
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

    async def query(self, item: ModelCall, /) -> Completion:
        """Try unless the circuit is open; report the outcome to the registry."""
        await self._admit(item)
        name = item.model.name
        try:
            completion = await self.next.query(item)
        except RelayError as error:
            await self._report(name, error)
            raise
        except BaseException:
            await self._breakers.neutral(name)
            raise
        await self._breakers.succeeded(name)
        return completion

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream unless the circuit is open; report the outcome to the registry."""
        await self._admit(item)
        name = item.model.name
        events = self.next.stream(item)
        settled = False
        try:
            async for event in events:
                if isinstance(event, Completion):
                    settled = True
                    await self._breakers.succeeded(name)
                yield event
        except RelayError as error:
            settled = True
            await self._report(name, error)
            raise
        finally:
            if not settled:  # cancelled, or ended by something other than the relay
                await self._breakers.neutral(name)
            await events.aclose()

    async def _report(self, model: str, error: RelayError) -> None:
        # A stream cut off after its first text is the model's trouble all the same.
        if error.retryable or isinstance(error, StreamInterruptedError):
            await self._breakers.failed(model)
        else:
            await self._breakers.neutral(model)
