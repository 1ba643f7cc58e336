"""The ledger's own figures: sustained insert rate into PostgreSQL, GetUsage over a big
table, and the CPU each driver spends per recorded call (how the drivers were chosen).

All three run in this process against a PostgreSQL server the benchmark starts for
itself (``tests/postgres.py``), so they measure the ledger, not the gRPC path (the
`switchyard(memory)`, `switchyard` (SQLite) and `switchyard(postgres)` rows do that):

* insert rate: `SqlLedger.record` as fast as one process can call it, for `calls`
  calls, then until the writer has committed them all; calls per second of wall time.
* GetUsage: `rows` calls bulk-loaded (COPY) over 30 days for 10 tenants, then
  `SqlLedger.summary` of one tenant's last 24 hours, `queries` times: p50 and p99.
* drivers: 20,000 rows in batches of 500 through asyncpg (executemany; COPY into a
  staging table), psycopg 3 (executemany; COPY), the standard sqlite3 on a thread, and
  aiosqlite; user+sys CPU of this process per row.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from server.catalog import default_catalog
from server.clock import SYSTEM_CLOCK
from server.domain import Attempt, CacheUse, Outcome, Usage
from server.settings import LedgerSettings
from server.state.ledger import CallRecord
from server.state.sql.database import ATTEMPT_COLUMNS, CALL_COLUMNS, PostgresDatabase
from server.state.sql.ledger import SqlLedger
from tests.postgres import TempPostgres

MODEL = default_catalog().models["gemini-2.5-flash"]
TENANTS = 10
DAYS = 30


def _record(n: int, at: float, tenant: str) -> CallRecord:
    attempt = Attempt(MODEL, Outcome.SUCCESS, 0.2, 200, "", Usage(16, 8), 120_000)
    return CallRecord(
        f"b{n:012d}", tenant, at, (attempt,), "OK", CacheUse.MISS, 0, None, None,
        MODEL.name, "simple query routed as FAST", MODEL.name, 0.25, None,
    )  # fmt: skip


async def insert_rate(url: str, work: Path, calls: int) -> dict[str, Any]:
    """Calls per second one gateway's ledger writes into PostgreSQL, sustained."""
    settings = LedgerSettings(data_dir=str(work), flush_interval=0.2)
    ledger = SqlLedger(PostgresDatabase(url, "bench"), work, settings, SYSTEM_CLOCK)
    await ledger.start()
    now = time.time()
    started = time.perf_counter()
    cpu = time.process_time()
    for n in range(calls):
        ledger.record(_record(n, now, f"tenant-{n % TENANTS}"))
        if n % 500 == 499:
            await asyncio.sleep(0)  # let the writer run, as a serving gateway would
    while ledger.lag:  # noqa: ASYNC110 (the ledger signals nothing; poll its lag)
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    cpu_us = (time.process_time() - cpu) / calls * 1e6
    await ledger.aclose()
    return {"calls": calls, "calls_per_s": calls / elapsed, "cpu_us_per_call": cpu_us}


async def get_usage(url: str, work: Path, rows: int, queries: int) -> dict[str, Any]:
    """GetUsage latency for one tenant's last 24 hours with `rows` calls in the table."""
    schema = PostgresDatabase(url, "bench")
    await schema.connect()  # migrates the empty database to head
    await schema.close()
    connection = await asyncpg.connect(url)
    now_us = int(time.time() * 1e6)
    span = DAYS * 86_400 * 1_000_000
    rng = random.Random(7)
    try:
        for start in range(0, rows, 50_000):
            batch = range(start, min(start + 50_000, rows))
            ended = [now_us - rng.randrange(span) for _ in batch]
            calls = [
                (f"g{n:012d}", at, f"tenant-{n % TENANTS}", None, None, MODEL.name, "bench",
                 MODEL.name, "OK", 16, 8, 0, False, 120_000, 250_000, None, "miss", 0, "{}", 0, 0)
                for n, at in zip(batch, ended, strict=True)
            ]  # fmt: skip
            attempts = [
                (f"g{n:012d}", 0, f"tenant-{n % TENANTS}", at, MODEL.name, "google", "success",
                 200, "", 200_000, 16, 8, 0, False, 120_000, 0, 0)
                for n, at in zip(batch, ended, strict=True)
            ]  # fmt: skip
            await connection.copy_records_to_table(
                "ledger_calls", records=calls, columns=CALL_COLUMNS
            )
            await connection.copy_records_to_table(
                "ledger_attempts", records=attempts, columns=ATTEMPT_COLUMNS
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    ledger = SqlLedger(PostgresDatabase(url, "bench"), work, LedgerSettings(data_dir=str(work)))
    await ledger.start()
    now = time.time()
    timings = []
    for _ in range(queries):
        started = time.perf_counter()
        summary = await ledger.summary("tenant-3", now - 86_400, now)
        timings.append((time.perf_counter() - started) * 1000)
    await ledger.aclose()
    timings.sort()
    return {
        "rows": rows,
        "tenant_calls_in_window": summary.requests,
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
    }


async def drivers(url: str, work: Path, rows: int) -> dict[str, float]:
    """CPU per row of each driver, in batches of 500 (see the module docstring)."""
    import aiosqlite  # noqa: PLC0415 (bench extra)
    import psycopg  # noqa: PLC0415

    columns = CALL_COLUMNS
    typed = ", ".join(f"{c} {'TEXT' if c in _TEXT else 'BIGINT'}" for c in columns)
    ddl = f"CREATE TABLE calls ({typed}, PRIMARY KEY (request_id))"
    values = [
        (f"d{n:012d}", n, "t", None, None, "m", "why", "m", "OK", 16, 8, 0, 0, 120000, 1500,
         None, "miss", 0, "{}", 0, 0)
        for n in range(rows)
    ]  # fmt: skip
    batches = [values[i : i + 500] for i in range(0, rows, 500)]
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    insert = f"INSERT INTO calls ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    results: dict[str, float] = {}

    async def timed(name: str, run: Any) -> None:
        cpu = time.process_time()
        await run()
        results[name] = (time.process_time() - cpu) / rows * 1e6

    pg = await asyncpg.connect(url)

    async def reset_pg() -> None:
        await pg.execute("DROP TABLE IF EXISTS calls; DROP TABLE IF EXISTS calls_in")
        await pg.execute(ddl)

    async def asyncpg_many() -> None:
        for batch in batches:
            async with pg.transaction():
                await pg.executemany(insert, batch)

    async def asyncpg_copy() -> None:
        for batch in batches:
            async with pg.transaction():
                await pg.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS calls_in (LIKE calls) ON COMMIT DELETE ROWS"
                )
                await pg.copy_records_to_table("calls_in", records=batch, columns=columns)
                await pg.execute("INSERT INTO calls SELECT * FROM calls_in ON CONFLICT DO NOTHING")

    for name, run in (("asyncpg executemany", asyncpg_many), ("asyncpg COPY", asyncpg_copy)):
        await reset_pg()
        await timed(name, run)
    await pg.close()

    ps = await psycopg.AsyncConnection.connect(url)
    percent = insert
    for i in range(len(columns), 0, -1):
        percent = percent.replace(f"${i}", "%s")

    async def psycopg_many() -> None:
        for batch in batches:
            async with ps.cursor() as cursor:
                await cursor.executemany(percent, batch)
            await ps.commit()

    async def psycopg_copy() -> None:
        for batch in batches:
            await ps.execute(
                "CREATE TEMP TABLE IF NOT EXISTS calls_in (LIKE calls) ON COMMIT DELETE ROWS"
            )
            copying = f"COPY calls_in ({', '.join(columns)}) FROM STDIN"
            async with ps.cursor() as cursor, cursor.copy(copying) as copy:
                for row in batch:
                    await copy.write_row(row)
            await ps.execute("INSERT INTO calls SELECT * FROM calls_in ON CONFLICT DO NOTHING")
            await ps.commit()

    for name, run in (("psycopg executemany", psycopg_many), ("psycopg COPY", psycopg_copy)):
        await ps.execute("DROP TABLE IF EXISTS calls")
        await ps.execute(ddl)
        await ps.commit()
        await timed(name, run)
    await ps.close()

    lite = ", ".join("?" * len(columns))
    sql = f"INSERT INTO calls ({', '.join(columns)}) VALUES ({lite}) ON CONFLICT DO NOTHING"
    path = work / "drivers.db"

    async def sqlite_thread() -> None:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("DROP TABLE IF EXISTS calls")
        db.execute(ddl)

        def write(batch: list[tuple[Any, ...]]) -> None:
            db.execute("BEGIN")
            db.executemany(sql, batch)
            db.execute("COMMIT")

        for batch in batches:
            await asyncio.to_thread(write, batch)
        db.close()

    async def sqlite_aio() -> None:
        async with aiosqlite.connect(path) as db:
            await db.execute("DROP TABLE IF EXISTS calls")
            await db.execute(ddl)
            for batch in batches:
                await db.executemany(sql, batch)
                await db.commit()

    await timed("sqlite3 on a thread", sqlite_thread)
    await timed("aiosqlite", sqlite_aio)
    return results


_TEXT = {"request_id", "tenant", "key_id", "end_user", "route_model", "route_reason", "model",
         "status", "cache", "labels"}  # fmt: skip


async def measure(smoke: bool, say: Any) -> dict[str, Any]:
    """Every ledger figure (tiny counts with `smoke`)."""
    calls, rows, queries, driver_rows = (
        (2_000, 20_000, 20, 2_000) if smoke else (50_000, 1_000_000, 200, 20_000)
    )
    work = Path(tempfile.mkdtemp(prefix="switchyard-ledger-bench-"))
    with TempPostgres() as postgres:
        say(f"ledger: insert rate ({calls:,} calls into PostgreSQL)")
        inserted = await insert_rate(postgres.create_database("inserts"), work / "a", calls)
        say(f"ledger: GetUsage with {rows:,} calls in the table")
        usage = await get_usage(postgres.create_database("usage"), work / "b", rows, queries)
        say("ledger: CPU per row of each driver")
        chosen = await drivers(postgres.create_database("drivers"), work, driver_rows)
    return {"insert": inserted, "get_usage": usage, "drivers_cpu_us_per_row": chosen}
