"""The SQL ledger: nothing lost, nothing on the request path.

`record` (on the request path) turns the call into rows, appends one line to
the journal (one write(2); see ``journal.py``) and keeps the rows for the
writer. A writer task wakes every `flush_interval` seconds, or as soon as
`batch_size` calls are journalled, closes the active journal segment and
writes the closed segments to the database, each in one transaction; a
segment is dropped from the unwritten calls in the same step as its commit,
and deleted from disk after it. Readers (GetUsage, the budget seed) add the
database's figures and the unwritten calls under the lock that step holds,
so a call is counted exactly once whichever side holds it.

Failure behaviour, chosen:

* database down or slow: calls go on being served and journalled (bounded by
  disk); the writer retries with backoff, logs when the ledger falls behind
  and when it catches up, and `lag` (the metric switchyard.ledger.pending)
  says how far behind it is. GetUsage and export answer UNAVAILABLE meanwhile.
* journal cannot be written (disk full, I/O error): `record` raises
  SpendNotRecordedError and the call fails UNAVAILABLE: spend is never
  dropped silently.
* SIGTERM: `aclose` writes what it can within the shutdown grace; the rest
  stays in the journal. SIGKILL or a crash: the journal is replayed at the
  next start, and the database ignores calls it already has (the request id
  is the key), so nothing is counted twice. Only a machine crash can lose
  calls: those still in the page cache and not yet written out.

Retention: calls older than `retention_days` are folded into hourly totals
per tenant (and per model), then deleted, in batches of `_FOLD_BATCH` calls
per transaction, so no long lock is taken and GetUsage over old windows still
answers (to the hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
from collections import deque
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from server.clock import SYSTEM_CLOCK, Clock
from server.errors import LedgerUnavailableError, SpendNotRecordedError
from server.settings import ConfigError, LedgerSettings
from server.state.ledger import CallRecord, ModelTotals, Tally, UsageSummary, summary_of
from server.state.rows import CallRow, decode, encode, from_record
from server.state.sql.database import Database
from server.state.sql.journal import Journal, JournalError

log = logging.getLogger("switchyard")
T = TypeVar("T")

MINUTE = 60
HOUR = 3600
DAY = 86_400
_KEEP_IN_MEMORY = 100_000  # rows of closed segments kept decoded; beyond, re-read from disk
_FOLD_BATCH = 1000  # calls folded per transaction
_FOLD_EVERY = HOUR  # seconds between retention passes
_DB_TIMEOUT = 10.0  # seconds one database operation may take before it counts as failed
_MAX_BACKOFF = 5.0
_BEHIND_LOG_EVERY = 30.0  # seconds between "still behind" log lines


@dataclass(slots=True)
class _Segment:
    """A closed journal segment waiting for the database."""

    path: Path
    count: int
    rows: list[CallRow] | None  # decoded, unless too much is kept in memory


def _tally(rows: Iterable[CallRow], tenant: str, start_us: int, end_us: int) -> Tally:
    """The tenant's calls among `rows` that ended in [start_us, end_us), added up."""
    tally = Tally()
    for row in rows:
        if row.tenant != tenant or not start_us <= row.ended_at_us < end_us:
            continue
        tally.requests += 1
        tally.errors += row.failed
        if row.cache == "hit":
            tally.cache_hits += 1
            tally.saved_cost += row.saved_cost
        elif row.cache == "miss":
            tally.cache_misses += 1
        for attempt in row.attempts:
            if attempt.outcome == "skipped":
                continue
            totals = tally.models.get(attempt.model)
            if totals is None:
                totals = tally.models[attempt.model] = ModelTotals()
            totals.attempts += 1
            totals.failed_attempts += attempt.outcome != "success"
            totals.input_tokens += attempt.input_tokens
            totals.output_tokens += attempt.output_tokens
            totals.cached_input_tokens += attempt.cached_input_tokens
            totals.cost += attempt.cost
            totals.reasoning_tokens += attempt.reasoning_tokens
            totals.cache_write_tokens += attempt.cache_write_tokens
    return tally


class DirectoryLock:
    """An exclusive lock on a file, held while the process lives (fcntl.flock)."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, setting: str, what: str, advice: str) -> None:
        """Take the lock, or raise ConfigError naming `setting` and the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                setting, f"{what} is in use by another Switchyard process (pid {holder}); {advice}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqlLedger:
    """The ledger on a SQL database, through a local journal (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        data_dir: Path,
        settings: LedgerSettings,
        clock: Clock = SYSTEM_CLOCK,
        sqlite_file: Path | None = None,
    ) -> None:
        self._db = database
        self._settings = settings
        self._clock = clock
        self._journal = Journal(data_dir / "journal")
        self._locks = [DirectoryLock(data_dir / "switchyard.lock")]
        if sqlite_file is not None:
            self._locks.append(DirectoryLock(sqlite_file.with_name(sqlite_file.name + ".lock")))
        self._active: list[CallRow] = []  # rows of the active segment
        self._closed: deque[_Segment] = deque()
        self._kept = 0  # decoded rows held in self._closed
        self._lag = 0
        self._connected = False
        self._read_lock = asyncio.Lock()  # a commit's hand-over vs. a reader's two sums
        self._drain_lock = asyncio.Lock()  # one writer of segments at a time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._behind_since: float | None = None
        self._next_fold = 0.0

    @property
    def lag(self) -> int:
        """Calls journalled but not yet committed to the database."""
        return self._lag

    @property
    def database(self) -> str:
        """The database, as logs name it (no password)."""
        return self._db.shown

    async def start(self) -> None:
        """Lock the data directory, replay the journal, connect, and start the writer.

        Raises ConfigError when another process holds the data directory (or the
        SQLite file) or the journal cannot be opened; an unreachable database is
        not an error (calls are journalled until it answers).
        """
        try:
            self._locks[0].acquire(
                "SWITCHYARD_DATA_DIR",
                f"the data directory {self._journal.directory.parent}",
                "give every Switchyard process its own SWITCHYARD_DATA_DIR",
            )
            for lock in self._locks[1:]:
                lock.acquire(
                    "SWITCHYARD_DATABASE_URL",
                    f"the SQLite ledger {lock.path.with_suffix('')}",
                    "SQLite serves one process: give each its own file, or share a PostgreSQL"
                    " database (SWITCHYARD_DATABASE_URL=postgresql://...) between them",
                )
            left = self._journal.open()
        except (OSError, JournalError) as error:
            self._release()
            raise ConfigError(
                "SWITCHYARD_DATA_DIR",
                f"cannot open the journal in {self._journal.directory}: {error.strerror}",
            ) from None
        except BaseException:
            self._release()
            raise
        for path in left:
            rows = self._decode(path)
            if not rows:
                self._journal.remove(path)
                continue
            self._lag += len(rows)
            self._closed.append(_Segment(path, len(rows), rows))
            self._kept += len(rows)
        if self._lag:
            log.info("ledger: replaying %d journalled calls from the last run", self._lag)
        try:
            await self._drain()
        except Exception as error:  # the database may come later; calls are journalled
            self._falling_behind(error)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    def record(self, entry: CallRecord) -> None:
        """Journal the call (one write), keep it for the writer, wake it for a full batch."""
        row = from_record(entry)
        try:
            self._journal.append(encode(row))
        except JournalError as error:
            # One line, no traceback: the cause is the disk, not the code.
            log.error("ledger: cannot write the journal (%s); calls fail until it can", error)  # noqa: TRY400
            raise SpendNotRecordedError(
                "this call's spend cannot be recorded (the gateway's journal cannot be written);"
                " the call was not billed and its answer is withheld; retry, and tell the"
                " operator"
            ) from None
        self._active.append(row)
        self._lag += 1
        if len(self._active) >= self._settings.batch_size:
            self._wake.set()

    async def summary(self, tenant: str, start: float, end: float) -> UsageSummary:
        """The database plus the unwritten calls, over [start, end) aligned to minutes (to
        hours where only hourly totals are left)."""
        first = math.floor(start / MINUTE) * MINUTE
        last = math.ceil(end / MINUTE) * MINUTE
        async with self._read_lock:
            window = await self._guarded(self._db.window(tenant, _us(first), _us(last)))
            pending = _tally(self._unwritten(), tenant, _us(first), _us(last))
        total = window.tally
        total.add(pending)
        shown: float = first
        if window.first_hour_us is not None and window.first_hour_us < _us(first):
            shown = window.first_hour_us / 1_000_000
        return summary_of(tenant, shown, last, total)

    async def spend(self, day_start: float, month_start: float) -> dict[str, tuple[int, int]]:
        """Each tenant's spend since the day's and the month's start, once the backlog is in."""
        await self.flush()
        day_us, month_us = _us(day_start), _us(month_start)
        async with self._read_lock:
            spend = await self._guarded(self._db.spend(day_us, month_us))
            for row in self._unwritten():
                if row.ended_at_us >= month_us:
                    day, month = spend.get(row.tenant, (0, 0))
                    today = row.cost if row.ended_at_us >= day_us else 0
                    spend[row.tenant] = (day + today, month + row.cost)
        return spend

    def _unwritten(self) -> Iterator[CallRow]:
        """Every call journalled and not yet committed (segments kept on disk are read)."""
        for segment in self._closed:
            yield from segment.rows if segment.rows is not None else self._decode(segment.path)
        yield from self._active

    async def export(
        self, tenant: str, start: float, end: float, after: tuple[int, str], limit: int
    ) -> list[CallRow]:
        """A page of calls, once everything journalled before the request is written."""
        await self.flush()
        return await self._guarded(self._db.export(tenant, _us(start), _us(end), after, limit))

    async def flush(self) -> None:
        """Write every call journalled so far; LedgerUnavailableError when the database cannot."""
        self._rotate()
        try:
            await self._drain()
        except Exception as error:
            self._falling_behind(error)
            raise self._unavailable() from None

    async def fold_old(self, now: float) -> int:
        """Fold calls older than the retention into hourly totals, in small batches."""
        before = now - self._settings.retention_days * DAY
        folded = 0
        while True:
            async with self._read_lock:  # readers see a batch either raw or folded, never both
                async with asyncio.timeout(_DB_TIMEOUT):
                    count = await self._db.fold(_us(before), _FOLD_BATCH)
            folded += count
            if count < _FOLD_BATCH:
                break
            await asyncio.sleep(0)  # let calls through between batches
        if folded:
            log.info(
                "ledger: folded %d calls older than %d days", folded, self._settings.retention_days
            )
        return folded

    async def aclose(self, within: float = 10.0) -> None:
        """Stop the writer, write what can be written within `within` s, keep the rest."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._rotate()
        try:
            async with asyncio.timeout(within):
                await self._drain()
        except Exception as error:  # TimeoutError included: what is left stays journalled
            log.warning(
                "ledger: %d calls stay in the journal for the next start (%s)",
                self._lag,
                type(error).__name__,
            )
        self._journal.close()
        with contextlib.suppress(Exception):
            await self._db.close()
        self._release()

    def _release(self) -> None:
        for lock in reversed(self._locks):
            lock.release()

    # --- the writer ------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._settings.flush_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
            self._wake.clear()
            self._rotate()
            try:
                await self._drain()
            except Exception as error:
                self._falling_behind(error)
                backoff = min(max(backoff * 2, 0.25), _MAX_BACKOFF)
                continue
            backoff = self._settings.flush_interval
            if self._clock.monotonic() >= self._next_fold:
                self._next_fold = self._clock.monotonic() + _FOLD_EVERY
                try:
                    await self.fold_old(self._clock.wall())
                except Exception as error:
                    log.warning("ledger: the retention fold failed (%s)", type(error).__name__)

    def _rotate(self) -> None:
        closed = self._journal.rotate()
        if closed is None:
            return
        rows, self._active = self._active, []
        if self._kept + len(rows) > _KEEP_IN_MEMORY:
            self._closed.append(_Segment(closed, len(rows), None))  # re-read when written
        else:
            self._closed.append(_Segment(closed, len(rows), rows))
            self._kept += len(rows)

    async def _drain(self) -> None:
        """Write the closed segments, oldest first; raises when the database fails."""
        async with self._drain_lock:
            if not self._connected:
                async with asyncio.timeout(_DB_TIMEOUT):
                    await self._db.connect()
                self._connected = True
            while self._closed:
                segment = self._closed[0]
                rows = segment.rows if segment.rows is not None else self._decode(segment.path)
                try:
                    async with self._read_lock:  # readers see it written, or unwritten
                        async with asyncio.timeout(_DB_TIMEOUT):
                            await self._db.write(rows)
                        self._closed.popleft()
                        self._lag -= segment.count
                except BaseException:
                    self._connected = False  # reconnect from scratch next time
                    with contextlib.suppress(Exception):
                        await self._db.close()
                    raise
                if segment.rows is not None:
                    self._kept -= len(segment.rows)
                self._journal.remove(segment.path)
            if self._behind_since is not None:
                log.info(
                    "ledger: %s answers again; the journalled calls are written",
                    self._db.shown,
                )
                self._behind_since = None

    def _decode(self, path: Path) -> list[CallRow]:
        rows = []
        for line in self._journal.read(path):
            try:
                rows.append(decode(line))
            except ValueError as error:  # written by another version, or damaged
                log.error("ledger: skipped a journal line of %s: %s", path.name, error)  # noqa: TRY400
        return rows

    def _falling_behind(self, error: BaseException) -> None:
        now = self._clock.monotonic()
        if self._behind_since is None or now - self._behind_since >= _BEHIND_LOG_EVERY:
            log.warning(
                "ledger: %s does not answer (%s); %d calls are journalled and not yet written;"
                " calls go on being served and are written when it answers",
                self._db.shown,
                type(error).__name__,
                self._lag,
            )
            self._behind_since = now

    async def _guarded(self, operation: Awaitable[T]) -> T:
        """Await a database read; LedgerUnavailableError when the database fails it."""
        try:
            async with asyncio.timeout(_DB_TIMEOUT):
                return await operation
        except Exception as error:
            self._falling_behind(error)
            raise self._unavailable() from None

    def _unavailable(self) -> LedgerUnavailableError:
        return LedgerUnavailableError(
            f"the ledger database does not answer now ({self._lag} calls are journalled and"
            " not yet written); calls are still served and recorded; retry shortly"
        )


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)
