"""The ledger: what each caller spent, per model, over any recent time window.

Every finished call is entered once (by the accounting stage) as a
`CallRecord`: its attempts with their usage and exact cost, whether it
ended in an error, and what the response cache did for it. The ledger keeps
running totals in time buckets, so `summary` answers "caller X over the last
24 hours" without keeping every call:

* minute buckets for the last 25 hours, so the default GetUsage window (the
  last 24 hours) is exact to the minute;
* older minutes are folded into hour buckets, kept for 35 days, so a window
  reaching further back is exact to the hour.

Money is integer nano-dollars throughout; nothing is ever rounded.

Stages and the servicer see only the `Ledger` protocol, so a shared store
(one that several gateway instances write to) can replace `InMemoryLedger`
without touching them::

    ledger = InMemoryLedger()
    ledger.record(CallRecord("billing-svc", time.time(), tuple(call.attempts)))
    day = ledger.summary("billing-svc", time.time() - 86_400, time.time())
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from server.domain import Attempt, CacheUse, Outcome

MINUTE = 60
HOUR = 3600
FINE_SPAN = 25 * HOUR  # minute buckets are kept this long
RETENTION = 35 * 24 * HOUR  # hour buckets are kept this long


@dataclass(slots=True)
class ModelTotals:
    """Running totals of one model's attempts."""

    attempts: int = 0
    failed_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost: int = 0  # nano-dollars

    def add(self, other: ModelTotals) -> None:
        """Add `other` into these totals."""
        self.attempts += other.attempts
        self.failed_attempts += other.failed_attempts
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.cost += other.cost


@dataclass(slots=True)
class Tally:
    """Everything entered for one caller in one time bucket."""

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


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call, as the ledger enters it."""

    caller: str
    at: float  # wall-clock seconds (time.time()) when the call ended
    attempts: tuple[Attempt, ...]
    failed: bool = False  # the call ended with an error status
    cache: CacheUse = CacheUse.NONE
    saved_cost: int = 0  # nano-dollars, on a cache hit


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A caller's totals over a window; `start`/`end` are the bucket-aligned bounds used."""

    caller: str
    start: float
    end: float
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    saved_cost: int = 0
    models: Mapping[str, ModelTotals] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def total(self) -> ModelTotals:
        """Every model's totals added up."""
        total = ModelTotals()
        for totals in self.models.values():
            total.add(totals)
        return total


class Ledger(Protocol):
    """Where finished calls are entered and summed up."""

    def record(self, entry: CallRecord) -> None:
        """Enter one finished call."""
        ...

    def summary(self, caller: str, start: float, end: float) -> UsageSummary:
        """The caller's totals for calls that ended in [start, end) (wall-clock seconds)."""
        ...


class _Book:
    """One caller's buckets: minute index -> Tally, then hour index -> Tally."""

    __slots__ = ("hours", "last_minute", "minutes")

    def __init__(self) -> None:
        self.minutes: dict[int, Tally] = {}
        self.hours: dict[int, Tally] = {}
        self.last_minute = -1


class InMemoryLedger:
    """A ledger in this process's memory; lost on restart."""

    __slots__ = ("_books",)

    def __init__(self) -> None:
        self._books: dict[str, _Book] = {}

    def record(self, entry: CallRecord) -> None:
        """Add the call into its caller's bucket for the minute it ended in."""
        book = self._books.get(entry.caller)
        if book is None:
            book = self._books[entry.caller] = _Book()
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

    def summary(self, caller: str, start: float, end: float) -> UsageSummary:
        """Sum the caller's buckets that begin in [start, end), aligned to bucket edges.

        The window actually summed is returned in `start`/`end`: the start is
        rounded down to the minute (to the hour where only hour buckets are
        left), the end up to the minute.
        """
        first_minute = math.floor(start / MINUTE) * MINUTE
        first_hour = math.floor(start / HOUR) * HOUR
        aligned_end = math.ceil(end / MINUTE) * MINUTE
        book = self._books.get(caller)
        if book is None:
            return UsageSummary(caller, first_minute, aligned_end)
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
            caller,
            first_hour if reaches_back else first_minute,
            aligned_end,
            total.requests,
            total.errors,
            total.cache_hits,
            total.cache_misses,
            total.saved_cost,
            MappingProxyType(dict(sorted(total.models.items()))),
        )


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
