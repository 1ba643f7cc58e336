"""The one way Switchyard reads time and waits, so tests can set both.

Every stage and store that reads a clock or sleeps takes a `Clock` (default
`SYSTEM_CLOCK`) instead of calling `time` or `asyncio.sleep` itself:

* `monotonic()` for durations, deadlines, cooldowns and TTLs;
* `wall()` for what is dated: budget periods, ledger entries, GetUsage windows;
* `sleep()` for deliberate waits (retry backoff), so a test's clock can skip them.

Waits that are the event loop's own business (asyncio.timeout around a queued
acquire, aiolimiter's leak) keep the loop's time, which is `time.monotonic`.

    class FakeClock:               # what tests use: time moves only when told
        now = 0.0
        def monotonic(self): return self.now
        def wall(self): return 1_800_000_000.0 + self.now
        async def sleep(self, seconds): self.now += seconds
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Time as Switchyard reads it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, deadlines)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (dated records, UTC periods)."""
        ...

    async def sleep(self, seconds: float, /) -> None:
        """Wait `seconds` (cancellable)."""
        ...


class SystemClock:
    """The real clocks and asyncio's sleep."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)
    sleep = staticmethod(asyncio.sleep)


SYSTEM_CLOCK: Clock = SystemClock()
