"""The ledger in this process's memory, in time buckets; lost on restart.

It keeps running totals rather than every call, so `summary` costs the
same however many calls a tenant made:

* minute buckets for the last 25 hours, so the default GetUsage window (the
  last 24 hours) is exact to the minute;
* older minutes are folded into hour buckets, kept for 35 days, so a window
  reaching further back is exact to the hour.

At most `max_tenants` tenants are kept (SWITCHYARD_MAX_CALLERS): past it, the
totals of the tenant that called least recently are dropped, so callers who
name themselves cannot grow it without bound. Budgets do not read this
ledger (`spend` is empty), so nothing they enforce is lost with it.

See ``server/state/ledger.py`` for the contract.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from server.domain import CacheUse, Outcome
from server.errors import ExportUnavailableError
from server.state.ledger import CallRecord, ModelTotals, Tally, UsageSummary, summary_of
from server.state.rows import CallRow

MINUTE = 60
HOUR = 3600
FINE_SPAN = 25 * HOUR  # minute buckets are kept this long
RETENTION = 35 * 24 * HOUR  # hour buckets are kept this long


class _Book:
    """One tenant's buckets: minute index -> Tally, then hour index -> Tally."""

    __slots__ = ("hours", "last_minute", "minutes")

    def __init__(self) -> None:
        self.minutes: dict[int, Tally] = {}
        self.hours: dict[int, Tally] = {}
        self.last_minute = -1


class MemoryLedger:
    """A ledger in this process's memory; lost on restart."""

    __slots__ = ("_books", "_max_tenants")

    def __init__(self, max_tenants: int = 10_000) -> None:
        self._books: OrderedDict[str, _Book] = OrderedDict()  # least recently recorded first
        self._max_tenants = max_tenants

    def record(self, entry: CallRecord) -> None:
        """Add the call into its tenant's bucket for the minute it ended in."""
        books = self._books
        book = books.get(entry.tenant)
        if book is None:
            book = books[entry.tenant] = _Book()
            if len(books) > self._max_tenants:
                books.popitem(last=False)
        else:
            books.move_to_end(entry.tenant)
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
            totals.reasoning_tokens += usage.reasoning_tokens
            totals.cache_write_tokens += usage.cache_write_tokens

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
        return summary_of(tenant, first_hour if reaches_back else first_minute, aligned_end, total)

    @property
    def lag(self) -> int:
        """Nothing waits for a database here."""
        return 0

    async def start(self) -> None:
        """Nothing to open."""

    async def spend(self, day_start: float, month_start: float) -> dict[str, tuple[int, int]]:
        """Nothing survives a restart here: the budgets' own spend is all there is."""
        return {}

    async def export(
        self, tenant: str, start: float, end: float, after: tuple[int, str], limit: int
    ) -> list[CallRow]:
        """This ledger keeps totals, not calls: nothing to export."""
        raise ExportUnavailableError(
            "this gateway keeps its ledger in memory (SWITCHYARD_DATABASE_URL=memory), which"
            " keeps totals, not calls; export needs the SQLite or PostgreSQL ledger"
        )

    async def aclose(self, within: float = 10.0) -> None:
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
