"""The ledger's two databases behind one small interface: SQLite (one process) and
PostgreSQL (shared by replicas).

Both run the same statements (written with `?` placeholders; PostgreSQL's are
numbered for it) and keep the same schema (``migrations/``). Every write is
one transaction that ignores calls already present, so writing a batch twice
counts it once. Drivers, chosen by measuring CPU per recorded call
(``bench/ledger.py``, printed by `make bench`): asyncpg, whose COPY into a
staging table then INSERT ... ON CONFLICT costs the least per row of the four
PostgreSQL ways measured (1.4 us against psycopg's 2.4 us COPY and 8.6 us
executemany), and the standard sqlite3 on a thread of its own (aiosqlite is
the same module behind a thread and a queue: within noise of it, one more
dependency).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from server.state.ledger import ModelTotals, Tally
from server.state.rows import AttemptRow, CallRow
from server.state.sql import migrate

T = TypeVar("T")
HOUR_US = 3_600_000_000

CALL_COLUMNS = (
    "request_id", "ended_at_us", "tenant", "key_id", "end_user", "route_model", "route_reason",
    "model", "status", "input_tokens", "output_tokens", "cached_input_tokens", "estimated",
    "cost_nanos", "latency_us", "ttft_us", "cache", "saved_cost_nanos", "labels",
    "reasoning_tokens", "cache_write_tokens",  # migration 0004: last, in this order
)  # fmt: skip
ATTEMPT_COLUMNS = (
    "request_id", "seq", "tenant", "ended_at_us", "model", "provider", "outcome", "http_status",
    "error", "latency_us", "input_tokens", "output_tokens", "cached_input_tokens", "estimated",
    "cost_nanos", "reasoning_tokens", "cache_write_tokens",
)  # fmt: skip

_ERRORS = "CASE WHEN status NOT IN ('OK', 'CANCELLED') THEN 1 ELSE 0 END"
SUMMARY_CALLS = f"""
SELECT COUNT(*), COALESCE(SUM({_ERRORS}), 0),
       COALESCE(SUM(CASE WHEN cache = 'hit' THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN cache = 'miss' THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN cache = 'hit' THEN saved_cost_nanos ELSE 0 END), 0)
FROM ledger_calls WHERE tenant = ? AND ended_at_us >= ? AND ended_at_us < ?"""
SUMMARY_MODELS = """
SELECT model, COUNT(*), COALESCE(SUM(CASE WHEN outcome <> 'success' THEN 1 ELSE 0 END), 0),
       SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cost_nanos),
       SUM(reasoning_tokens), SUM(cache_write_tokens)
FROM ledger_attempts
WHERE tenant = ? AND ended_at_us >= ? AND ended_at_us < ? AND outcome <> 'skipped'
GROUP BY model"""
HOURLY_CALLS = """
SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(errors), 0), COALESCE(SUM(cache_hits), 0),
       COALESCE(SUM(cache_misses), 0), COALESCE(SUM(saved_cost_nanos), 0), MIN(hour_us)
FROM ledger_hourly_calls WHERE tenant = ? AND hour_us >= ? AND hour_us < ?"""
HOURLY_MODELS = """
SELECT model, SUM(attempts), SUM(failed_attempts), SUM(input_tokens), SUM(output_tokens),
       SUM(cached_input_tokens), SUM(cost_nanos), SUM(reasoning_tokens), SUM(cache_write_tokens)
FROM ledger_hourly_models WHERE tenant = ? AND hour_us >= ? AND hour_us < ? GROUP BY model"""
SPEND = """
SELECT tenant, SUM(CASE WHEN ended_at_us >= ? THEN cost_nanos ELSE 0 END), SUM(cost_nanos)
FROM ledger_calls WHERE ended_at_us >= ? GROUP BY tenant
UNION ALL
SELECT tenant, SUM(CASE WHEN hour_us >= ? THEN cost_nanos ELSE 0 END), SUM(cost_nanos)
FROM ledger_hourly_calls WHERE hour_us >= ? GROUP BY tenant"""
EXPORT_CALLS = f"""
SELECT {", ".join(CALL_COLUMNS)} FROM ledger_calls
WHERE tenant = ? AND ended_at_us >= ? AND ended_at_us < ?
  AND (ended_at_us > ? OR (ended_at_us = ? AND request_id > ?))
ORDER BY ended_at_us, request_id LIMIT ?"""
_ATTEMPT_FIELDS = ", ".join(ATTEMPT_COLUMNS[1:2] + ATTEMPT_COLUMNS[4:])
# A page's attempts, through the key: the tenant and the page's first and last end times.
EXPORT_ATTEMPTS = f"""
SELECT request_id, {_ATTEMPT_FIELDS} FROM ledger_attempts
WHERE tenant = ? AND ended_at_us >= ? AND ended_at_us <= ?"""
# The retention fold: calls that ended before a boundary added into hourly totals, then
# deleted; the boundary is picked so one transaction folds about one batch.
FOLD_BOUNDARY = (
    "SELECT ended_at_us FROM ledger_calls WHERE ended_at_us < ?"
    " ORDER BY ended_at_us LIMIT 1 OFFSET ?"
)
FOLD_CALLS = f"""
INSERT INTO ledger_hourly_calls
  (tenant, hour_us, requests, errors, cache_hits, cache_misses, saved_cost_nanos, cost_nanos)
SELECT tenant, (ended_at_us / {HOUR_US}) * {HOUR_US}, COUNT(*), SUM({_ERRORS}),
       SUM(CASE WHEN cache = 'hit' THEN 1 ELSE 0 END),
       SUM(CASE WHEN cache = 'miss' THEN 1 ELSE 0 END),
       SUM(CASE WHEN cache = 'hit' THEN saved_cost_nanos ELSE 0 END), SUM(cost_nanos)
FROM ledger_calls WHERE ended_at_us < ?
GROUP BY tenant, (ended_at_us / {HOUR_US}) * {HOUR_US}
ON CONFLICT (tenant, hour_us) DO UPDATE SET
  requests = ledger_hourly_calls.requests + excluded.requests,
  errors = ledger_hourly_calls.errors + excluded.errors,
  cache_hits = ledger_hourly_calls.cache_hits + excluded.cache_hits,
  cache_misses = ledger_hourly_calls.cache_misses + excluded.cache_misses,
  saved_cost_nanos = ledger_hourly_calls.saved_cost_nanos + excluded.saved_cost_nanos,
  cost_nanos = ledger_hourly_calls.cost_nanos + excluded.cost_nanos"""
FOLD_MODELS = f"""
INSERT INTO ledger_hourly_models
  (tenant, hour_us, model, attempts, failed_attempts, input_tokens, output_tokens,
   cached_input_tokens, cost_nanos, reasoning_tokens, cache_write_tokens)
SELECT tenant, (ended_at_us / {HOUR_US}) * {HOUR_US}, model, COUNT(*),
       SUM(CASE WHEN outcome <> 'success' THEN 1 ELSE 0 END), SUM(input_tokens),
       SUM(output_tokens), SUM(cached_input_tokens), SUM(cost_nanos), SUM(reasoning_tokens),
       SUM(cache_write_tokens)
FROM ledger_attempts WHERE ended_at_us < ? AND outcome <> 'skipped'
GROUP BY tenant, (ended_at_us / {HOUR_US}) * {HOUR_US}, model
ON CONFLICT (tenant, hour_us, model) DO UPDATE SET
  attempts = ledger_hourly_models.attempts + excluded.attempts,
  failed_attempts = ledger_hourly_models.failed_attempts + excluded.failed_attempts,
  input_tokens = ledger_hourly_models.input_tokens + excluded.input_tokens,
  output_tokens = ledger_hourly_models.output_tokens + excluded.output_tokens,
  cached_input_tokens = ledger_hourly_models.cached_input_tokens + excluded.cached_input_tokens,
  cost_nanos = ledger_hourly_models.cost_nanos + excluded.cost_nanos,
  reasoning_tokens = ledger_hourly_models.reasoning_tokens + excluded.reasoning_tokens,
  cache_write_tokens = ledger_hourly_models.cache_write_tokens + excluded.cache_write_tokens"""
FOLD_DELETE_ATTEMPTS = "DELETE FROM ledger_attempts WHERE ended_at_us < ?"
FOLD_DELETE_CALLS = "DELETE FROM ledger_calls WHERE ended_at_us < ?"
_FOLD_LOCK = 0x5377_7963_6801  # PostgreSQL: one replica folds at a time


class Window:
    """A summary's raw figures: the calls' tally, and where hourly totals began (if any)."""

    __slots__ = ("first_hour_us", "tally")

    def __init__(self, tally: Tally, first_hour_us: int | None) -> None:
        self.tally = tally
        self.first_hour_us = first_hour_us


class Database(Protocol):
    """What the SQL ledger asks of its database."""

    shown: str  # the database as logs may name it: no password

    async def connect(self) -> None:
        """Open connections and bring the schema to head (idempotent; raises when unreachable)."""
        ...

    async def write(self, rows: Sequence[CallRow]) -> None:
        """Insert the calls and their attempts in one transaction, skipping those present."""
        ...

    async def window(self, tenant: str, start_us: int, end_us: int) -> Window:
        """A tenant's calls that ended in [start_us, end_us), with hourly totals in it."""
        ...

    async def spend(self, day_us: int, month_us: int) -> dict[str, tuple[int, int]]:
        """tenant -> (cost since `day_us`, cost since `month_us`)."""
        ...

    async def export(
        self, tenant: str, start_us: int, end_us: int, after: tuple[int, str], limit: int
    ) -> list[CallRow]:
        """A page of a tenant's calls, ordered by (ended_at, request_id), after `after`."""
        ...

    async def fold(self, before_us: int, batch: int) -> int:
        """Fold up to `batch` calls that ended before `before_us` into hourly totals and
        delete them, in one transaction; the number folded (0 when none are left)."""
        ...

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read (`?` placeholders)."""
        ...

    async def transact(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run the statements in one transaction; each one's count of rows changed."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


def call_values(row: CallRow) -> tuple[Any, ...]:
    """A call's column values, in CALL_COLUMNS order (the row's fields but its attempts)."""
    return (*row[:19], row.reasoning_tokens, row.cache_write_tokens)


def attempt_values(row: CallRow, attempt: AttemptRow) -> tuple[Any, ...]:
    """An attempt's column values, in ATTEMPT_COLUMNS order."""
    return (
        row.request_id, attempt.seq, row.tenant, row.ended_at_us, attempt.model,
        attempt.provider, attempt.outcome, attempt.http_status, attempt.error,
        attempt.latency_us, attempt.input_tokens, attempt.output_tokens,
        attempt.cached_input_tokens, attempt.estimated, attempt.cost,
        attempt.reasoning_tokens, attempt.cache_write_tokens,
    )  # fmt: skip


def _attempt_row(a: Sequence[Any]) -> AttemptRow:
    # a: request_id, then the AttemptRow fields; SQLite keeps booleans as 0 and 1
    return AttemptRow._make((*a[1:11], bool(a[11]), *a[12:15]))


def _call_row(c: Sequence[Any], attempts: tuple[AttemptRow, ...]) -> CallRow:
    return CallRow._make((*c[:12], bool(c[12]), *c[13:19], attempts, *c[19:21]))


def _rows_of(calls: Sequence[Sequence[Any]], attempts: Sequence[Sequence[Any]]) -> list[CallRow]:
    by_call: dict[str, list[AttemptRow]] = {}
    for a in attempts:
        by_call.setdefault(a[0], []).append(_attempt_row(a))
    return [_call_row(c, tuple(sorted(by_call.get(c[0], ()), key=lambda a: a.seq))) for c in calls]


def _window(calls: Sequence[Any], models: Sequence[Sequence[Any]], hourly: Sequence[Any],
            hourly_models: Sequence[Sequence[Any]]) -> Window:  # fmt: skip
    tally = Tally(
        int(calls[0]) + int(hourly[0]),
        int(calls[1]) + int(hourly[1]),
        int(calls[2]) + int(hourly[2]),
        int(calls[3]) + int(hourly[3]),
        int(calls[4]) + int(hourly[4]),
    )
    for source in (models, hourly_models):
        for model, *figures in source:
            totals = tally.models.get(model)
            if totals is None:
                totals = tally.models[model] = ModelTotals()
            totals.add(ModelTotals(*(int(value) for value in figures)))
    return Window(tally, None if hourly[5] is None else int(hourly[5]))


def _spend(rows: Sequence[Sequence[Any]]) -> dict[str, tuple[int, int]]:
    spend: dict[str, tuple[int, int]] = {}
    for tenant, day, month in rows:
        had_day, had_month = spend.get(tenant, (0, 0))
        spend[tenant] = (had_day + int(day), had_month + int(month))
    return spend


class SqliteDatabase:
    """One SQLite file, on a thread of its own (SQLite's calls block)."""

    __slots__ = ("_connection", "_executor", "path", "shown")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shown = f"sqlite:///{path}"
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None

    def _thread(self) -> ThreadPoolExecutor:
        """The database's thread, started again after a close (the ledger closes the
        database when a write fails or times out, and connects again later)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        return self._executor

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._connection is None:
                raise sqlite3.OperationalError("the ledger database is not open")
            return work(self._connection)

        return await asyncio.get_running_loop().run_in_executor(self._thread(), run)

    async def connect(self) -> None:
        """Create the file if needed, migrate it to head, and open it (WAL, synchronous=NORMAL)."""

        def open_it() -> None:
            if self._connection is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None)
            try:
                current = _sqlite_revision(connection)
                if current != migrate.HEAD:
                    migrate.upgrade_sqlite(self.path)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute("PRAGMA busy_timeout=5000")
            except BaseException:
                connection.close()
                raise
            self._connection = connection

        await asyncio.get_running_loop().run_in_executor(self._thread(), open_it)

    async def write(self, rows: Sequence[CallRow]) -> None:
        """Insert the batch in one transaction, `_ROWS_PER_STATEMENT` rows per statement.

        Multi-row INSERTs, not executemany: sqlite3 gives up the GIL around each step of
        a statement, and executemany steps once per row, so on a busy gateway the writer
        thread waited for the event loop's thread (and it for the writer) once per row,
        costing several times the insert itself in CPU (measured).
        """
        calls = [call_values(row) for row in rows]
        attempts = [attempt_values(row, a) for row in rows for a in row.attempts]

        def write(connection: sqlite3.Connection) -> None:
            with _Transaction(connection):
                _insert_many(connection, "ledger_calls", CALL_COLUMNS, calls)
                _insert_many(connection, "ledger_attempts", ATTEMPT_COLUMNS, attempts)

        await self._call(write)

    async def window(self, tenant: str, start_us: int, end_us: int) -> Window:
        """The tenant's window: four aggregate queries in one read transaction."""
        first_hour = (start_us // HOUR_US) * HOUR_US
        args = (tenant, start_us, end_us)
        hourly_args = (tenant, first_hour, end_us)

        def read(connection: sqlite3.Connection) -> Window:
            with _Transaction(connection):
                return _window(
                    connection.execute(SUMMARY_CALLS, args).fetchone(),
                    connection.execute(SUMMARY_MODELS, args).fetchall(),
                    connection.execute(HOURLY_CALLS, hourly_args).fetchone(),
                    connection.execute(HOURLY_MODELS, hourly_args).fetchall(),
                )

        return await self._call(read)

    async def spend(self, day_us: int, month_us: int) -> dict[str, tuple[int, int]]:
        """Each tenant's cost since the start of the day and of the month."""
        args = (day_us, month_us, day_us, month_us)
        return await self._call(lambda c: _spend(c.execute(SPEND, args).fetchall()))

    async def export(
        self, tenant: str, start_us: int, end_us: int, after: tuple[int, str], limit: int
    ) -> list[CallRow]:
        """One page of calls with their attempts."""
        args = (tenant, start_us, end_us, after[0], after[0], after[1], limit)

        def read(connection: sqlite3.Connection) -> list[CallRow]:
            with _Transaction(connection):
                calls = connection.execute(EXPORT_CALLS, args).fetchall()
                if not calls:
                    return []
                span = (tenant, calls[0][1], calls[-1][1])
                return _rows_of(calls, connection.execute(EXPORT_ATTEMPTS, span).fetchall())

        return await self._call(read)

    async def fold(self, before_us: int, batch: int) -> int:
        """Fold about one batch of old calls into hourly totals, in one transaction."""

        def fold(connection: sqlite3.Connection) -> int:
            with _Transaction(connection):
                boundary = _boundary(
                    connection.execute(FOLD_BOUNDARY, (before_us, batch - 1)).fetchone(),
                    before_us,
                )
                connection.execute(FOLD_CALLS, (boundary,))
                connection.execute(FOLD_MODELS, (boundary,))
                connection.execute(FOLD_DELETE_ATTEMPTS, (boundary,))
                return connection.execute(FOLD_DELETE_CALLS, (boundary,)).rowcount

        return await self._call(fold)

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        return await self._call(lambda c: [tuple(row) for row in c.execute(sql, args)])

    async def transact(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """The statements in one transaction."""

        def run(connection: sqlite3.Connection) -> list[int]:
            with _Transaction(connection):
                return [connection.execute(sql, args).rowcount for sql, args in statements]

        return await self._call(run)

    async def close(self) -> None:
        """Close the file and stop the thread."""

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, close)
        executor.shutdown(wait=True)


class _Transaction:
    """BEGIN ... COMMIT (ROLLBACK on error) on an autocommit sqlite3 connection."""

    __slots__ = ("_connection",)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN")

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        self._connection.execute("COMMIT" if error is None else "ROLLBACK")


def _sqlite_revision(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table: a new database
        return None
    return None if row is None else str(row[0])


_ROWS_PER_STATEMENT = 500  # 500 x 21 values, well inside SQLite's 32,766 variables


def _boundary(found: Sequence[Any] | None, before_us: int) -> int:
    """Fold what ended before this: just past the batch's newest call, or the cutoff."""
    return before_us if found is None else min(int(found[0]) + 1, before_us)


def _insert_many(
    connection: sqlite3.Connection,
    table: str,
    columns: Sequence[str],
    values: Sequence[tuple[Any, ...]],
) -> None:
    """INSERT ... VALUES (...), (...), ... ON CONFLICT DO NOTHING, in a few statements."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    for start in range(0, len(values), _ROWS_PER_STATEMENT):
        chunk = values[start : start + _ROWS_PER_STATEMENT]
        connection.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * len(chunk))}"
            " ON CONFLICT DO NOTHING",
            [value for row in chunk for value in row],
        )


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2, ..."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class PostgresDatabase:
    """A PostgreSQL database shared by every replica, through an asyncpg pool."""

    __slots__ = ("_dsn", "_pool", "shown")

    def __init__(self, dsn: str, shown: str) -> None:
        self._dsn = dsn
        self.shown = shown
        self._pool: Any = None

    async def connect(self) -> None:
        """Migrate to head (under the advisory lock) and open the pool."""
        import asyncpg  # noqa: PLC0415 (only with PostgreSQL)

        if self._pool is not None:
            return
        connection = await asyncpg.connect(self._dsn, timeout=5)
        try:
            current = await _postgres_revision(connection)
        finally:
            await connection.close()
        if current != migrate.HEAD:
            await migrate.upgrade_postgres(self._dsn)
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=4, timeout=5, command_timeout=30, init=_staging
        )

    def _ready(self) -> Any:
        if self._pool is None:
            raise ConnectionError("the ledger database is not connected")
        return self._pool

    async def write(self, rows: Sequence[CallRow]) -> None:
        """COPY the batch into staging tables, then INSERT ... ON CONFLICT DO NOTHING."""
        calls = [call_values(row) for row in rows]
        attempts = [attempt_values(row, a) for row in rows for a in row.attempts]
        async with self._ready().acquire() as connection, connection.transaction():
            await connection.copy_records_to_table("calls_in", records=calls, columns=CALL_COLUMNS)
            if attempts:
                await connection.copy_records_to_table(
                    "attempts_in", records=attempts, columns=ATTEMPT_COLUMNS
                )
            await connection.execute(
                "INSERT INTO ledger_calls SELECT * FROM calls_in ON CONFLICT DO NOTHING;"
                "INSERT INTO ledger_attempts SELECT * FROM attempts_in ON CONFLICT DO NOTHING"
            )

    async def window(self, tenant: str, start_us: int, end_us: int) -> Window:
        """The tenant's window, in one read-only transaction."""
        first_hour = (start_us // HOUR_US) * HOUR_US
        async with self._ready().acquire() as connection, connection.transaction(readonly=True):
            return _window(
                await connection.fetchrow(_PG_SUMMARY_CALLS, tenant, start_us, end_us),
                await connection.fetch(_PG_SUMMARY_MODELS, tenant, start_us, end_us),
                await connection.fetchrow(_PG_HOURLY_CALLS, tenant, first_hour, end_us),
                await connection.fetch(_PG_HOURLY_MODELS, tenant, first_hour, end_us),
            )

    async def spend(self, day_us: int, month_us: int) -> dict[str, tuple[int, int]]:
        """Each tenant's cost since the start of the day and of the month."""
        async with self._ready().acquire() as connection:
            return _spend(await connection.fetch(_PG_SPEND, day_us, month_us, day_us, month_us))

    async def export(
        self, tenant: str, start_us: int, end_us: int, after: tuple[int, str], limit: int
    ) -> list[CallRow]:
        """One page of calls with their attempts."""
        async with self._ready().acquire() as connection, connection.transaction(readonly=True):
            calls = await connection.fetch(
                _PG_EXPORT_CALLS, tenant, start_us, end_us, after[0], after[0], after[1], limit
            )
            if not calls:
                return []
            span = (tenant, calls[0][1], calls[-1][1])
            return _rows_of(calls, await connection.fetch(_PG_EXPORT_ATTEMPTS, *span))

    async def fold(self, before_us: int, batch: int) -> int:
        """Fold about one batch of old calls, unless another replica is folding right now."""
        async with self._ready().acquire() as connection, connection.transaction():
            if not await connection.fetchval(f"SELECT pg_try_advisory_xact_lock({_FOLD_LOCK})"):
                return 0
            found = await connection.fetchrow(_PG_FOLD_BOUNDARY, before_us, batch - 1)
            boundary = _boundary(found, before_us)
            await connection.execute(_PG_FOLD_CALLS, boundary)
            await connection.execute(_PG_FOLD_MODELS, boundary)
            await connection.execute(_PG_FOLD_DELETE_ATTEMPTS, boundary)
            done = await connection.execute(_PG_FOLD_DELETE_CALLS, boundary)
            return int(done.split()[-1])  # "DELETE <count>"

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        async with self._ready().acquire() as connection:
            return [tuple(row) for row in await connection.fetch(numbered(sql), *args)]

    async def transact(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """The statements in one transaction."""
        counts = []
        async with self._ready().acquire() as connection, connection.transaction():
            for sql, args in statements:
                status = await connection.execute(numbered(sql), *args)
                counts.append(int(status.split()[-1]) if status.split()[-1].isdigit() else 0)
        return counts

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


_PG_SUMMARY_CALLS = numbered(SUMMARY_CALLS)
_PG_SUMMARY_MODELS = numbered(SUMMARY_MODELS)
_PG_HOURLY_CALLS = numbered(HOURLY_CALLS)
_PG_HOURLY_MODELS = numbered(HOURLY_MODELS)
_PG_SPEND = numbered(SPEND)
_PG_EXPORT_CALLS = numbered(EXPORT_CALLS)
_PG_EXPORT_ATTEMPTS = numbered(EXPORT_ATTEMPTS)
_PG_FOLD_BOUNDARY = numbered(FOLD_BOUNDARY)
_PG_FOLD_CALLS = numbered(FOLD_CALLS)
_PG_FOLD_MODELS = numbered(FOLD_MODELS)
_PG_FOLD_DELETE_ATTEMPTS = numbered(FOLD_DELETE_ATTEMPTS)
_PG_FOLD_DELETE_CALLS = numbered(FOLD_DELETE_CALLS)


async def _staging(connection: Any) -> None:
    """Each pooled connection's staging tables for COPY, emptied at every commit."""
    await connection.execute(
        "CREATE TEMP TABLE calls_in (LIKE ledger_calls) ON COMMIT DELETE ROWS;"
        "CREATE TEMP TABLE attempts_in (LIKE ledger_attempts) ON COMMIT DELETE ROWS"
    )


async def _postgres_revision(connection: Any) -> str | None:
    exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    value = await connection.fetchval("SELECT version_num FROM alembic_version")
    return None if value is None else str(value)
