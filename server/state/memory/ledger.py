"""The ledger in this process's memory, in time buckets; lost on restart.

It keeps running totals rather than every call, so `summary` costs the
same however many calls a tenant made:

* minute buckets for the last 25 hours, so the default GetUsage window (the
  last 24 hours) is exact to the minute;
* older minutes are folded into hour buckets, kept for 35 days, so a window
  reaching further back is exact to the hour.

See ``server/state/ledger.py`` for the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType

from server.domain import CacheUse, Outcome
from server.state.ledger import CallRecord, ModelTotals, UsageSummary

MINUTE = 60
HOUR = 3600
FINE_SPAN = 25 * HOUR  # minute buckets are kept this long
RETENTION = 35 * 24 * HOUR  # hour buckets are kept this long


@dataclass(slots=True)
class Tally:
    """Everything entered for one tenant in one time bucket."""

    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    saved_cost: int = 0  # nano-dollars
    models: dict[str, ModelTotals] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        """Add `other` into this tally."""
        self.requests += other.requests
        self.errors += other.errors
        self.cache_hits += other.cache_hits
        self.cache_misses += other.cache_misses
        self.saved_cost += other.saved_cost
        for model, totals in other.models.items():
            mine = self.models.get(model)
            if mine is None:
                mine = self.models[model] = ModelTotals()
            mine.add(totals)


class _Book:
    """One tenant's buckets: minute index -> Tally, then hour index -> Tally."""

    __slots__ = ("hours", "last_minute", "minutes")

    def __init__(self) -> None:
        self.minutes: dict[int, Tally] = {}
        self.hours: dict[int, Tally] = {}
        self.last_minute = -1


class MemoryLedger:
    """A ledger in this process's memory; lost on restart."""

    __slots__ = ("_books",)

    def __init__(self) -> None:
        self._books: dict[str, _Book] = {}

    def record(self, entry: CallRecord) -> None:
        """Add the call into its tenant's bucket for the minute it ended in."""
        book = self._books.get(entry.tenant)
        if book is None:
            book = self._books[entry.tenant] = _Book()
        minute = int(entry.at // MINUTE)
        tally = book.minutes.get(minute)
        if tally is None:
            tally = book.minutes[minute] = Tally()
            if minute > book.last_minute:
                book.last_minute = minute
                _fold(book, minute)
        tally.requests += 1
        tally.errors += entry.failed
        if entry.cache is CacheUse.HIT:
            tally.cache_hits += 1
            tally.saved_cost += entry.saved_cost
        elif entry.cache is CacheUse.MISS:
            tally.cache_misses += 1
        models = tally.models
        for attempt in entry.attempts:
            if attempt.outcome is Outcome.SKIPPED:
                continue  # never sent: nothing to count
            totals = models.get(attempt.model.name)
            if totals is None:
                totals = models[attempt.model.name] = ModelTotals()
            usage = attempt.usage
            totals.attempts += 1
            totals.failed_attempts += attempt.outcome is not Outcome.SUCCESS
            totals.input_tokens += usage.input_tokens
            totals.output_tokens += usage.output_tokens
            totals.cached_input_tokens += usage.cached_input_tokens
            totals.cost += attempt.cost

    async def summary(self, tenant: str, start: float, end: float) -> UsageSummary:
        """Sum the tenant's buckets that begin in [start, end), aligned to bucket edges.

        The window actually summed is returned in `start`/`end`: the start is
        rounded down to the minute (to the hour where only hour buckets are
        left), the end up to the minute.
        """
        first_minute = math.floor(start / MINUTE) * MINUTE
        first_hour = math.floor(start / HOUR) * HOUR
        aligned_end = math.ceil(end / MINUTE) * MINUTE
        book = self._books.get(tenant)
        if book is None:
            return UsageSummary(tenant, first_minute, aligned_end)
        total = Tally()
        reaches_back = False
        for hour, tally in book.hours.items():
            begins = hour * HOUR
            if first_hour <= begins < end:
                total.add(tally)
                reaches_back = reaches_back or begins < first_minute
        for minute, tally in book.minutes.items():
            if first_minute <= minute * MINUTE < end:
                total.add(tally)
        return UsageSummary(
            tenant,
            first_hour if reaches_back else first_minute,
            aligned_end,
            total.requests,
            total.errors,
            total.cache_hits,
            total.cache_misses,
            total.saved_cost,
            MappingProxyType(dict(sorted(total.models.items()))),
        )

    async def aclose(self) -> None:
        """Nothing is queued: every record was applied when it came."""


def _fold(book: _Book, now_minute: int) -> None:
    """Fold minute buckets older than FINE_SPAN into hours; drop hours past RETENTION.

    Buckets are created in time order, so the oldest are at the front of
    each dict and the scan stops at the first one still young enough.
    """
    oldest_minute = now_minute - FINE_SPAN // MINUTE
    minutes = book.minutes
    while minutes:
        minute = next(iter(minutes))
        if minute >= oldest_minute:
            break
        hour = minute * MINUTE // HOUR
        target = book.hours.get(hour)
        if target is None:
            target = book.hours[hour] = Tally()
        target.add(minutes.pop(minute))
    oldest_hour = (now_minute * MINUTE - RETENTION) // HOUR
    hours = book.hours
    while hours:
        hour = next(iter(hours))
        if hour >= oldest_hour:
            break
        del hours[hour]
