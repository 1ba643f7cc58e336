"""Relay requests in flight per provider: counted in one place, read by GetUsage.

`InFlightStage` wraps the relay attempt, innermost, so a request counts from
the moment it is sent until its answer or stream has ended, and never while
it only waits for capacity. `ProviderLoad` is the counter; it is meant to be
shared with a per-provider concurrency limiter, whose caps it then reports
as each provider's limit (0 means no cap)::

    load = ProviderLoad({"anthropic": 10})
    attempt = InFlightStage(RelayAttempt(relay, 300.0), load)
    load.snapshot()  # {"anthropic": (in_flight, 10), ...}
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import aclosing

from server.domain import Completion, ModelCall, StreamEvent
from server.pipeline.base import Handler, Stage


class ProviderLoad:
    """Relay requests in flight now, per provider, with each provider's cap."""

    __slots__ = ("_counts", "_limits")

    def __init__(self, providers: Iterable[str], limits: Mapping[str, int] | None = None) -> None:
        self._counts = dict.fromkeys(providers, 0)
        self._limits = dict(limits or {})

    def enter(self, provider: str) -> None:
        """One more request to `provider` is in flight."""
        self._counts[provider] = self._counts.get(provider, 0) + 1

    def leave(self, provider: str) -> None:
        """One request to `provider` ended."""
        self._counts[provider] -= 1

    def in_flight(self, provider: str) -> int:
        """Requests to `provider` in flight now."""
        return self._counts.get(provider, 0)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """provider -> (in flight, cap or 0), sorted by provider."""
        return {
            provider: (count, self._limits.get(provider, 0))
            for provider, count in sorted(self._counts.items())
        }


class InFlightStage(Stage[ModelCall]):
    """Counts each relay try as in flight for its provider while it runs."""

    __slots__ = ("_load",)

    def __init__(self, next_handler: Handler[ModelCall], load: ProviderLoad) -> None:
        super().__init__(next_handler)
        self._load = load

    async def query(self, item: ModelCall, /) -> Completion:
        """Count the try while it runs."""
        provider = item.model.provider
        self._load.enter(provider)
        try:
            return await self.next.query(item)
        finally:
            self._load.leave(provider)

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """Count the streamed try until it ends, however it ends."""
        provider = item.model.provider
        self._load.enter(provider)
        try:
            async with aclosing(self.next.stream(item)) as events:
                async for event in events:
                    yield event
        finally:
            self._load.leave(provider)
