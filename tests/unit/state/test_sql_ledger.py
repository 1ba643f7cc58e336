"""The SQL ledger on SQLite and on a real PostgreSQL: journal replay, export, retention,
spend for budgets, migrations, locks, outages. No mocks below the ledger's own seams."""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from server.errors import LedgerUnavailableError, SpendNotRecordedError
from server.settings import ConfigError, LedgerSettings
from server.state.sql import migrate
from server.state.sql.database import PostgresDatabase, SqliteDatabase
from server.state.sql.ledger import SqlLedger
from tests.helpers import EPOCH, FakeClock

from .conftest import open_test_ledger
from .test_ledger import CLAUDE, GPT, paid, record

DAY = 86_400


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def opened(kind, data_dir, request, clock=None) -> SqlLedger:
    ledger = await open_test_ledger(kind, data_dir, request, clock)
    assert isinstance(ledger, SqlLedger)
    return ledger


def segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "journal").glob("segment-*.jsonl"))


async def test_a_journal_replayed_twice_counts_once(kind, tmp_path, request):
    first = await opened(kind, tmp_path / "a", request)
    for n in range(3):
        first.record(record("svc", EPOCH + n, (paid(GPT, 10, 5),)))
    first._rotate()  # what the writer does each interval
    [closed] = [p for p in segments(tmp_path / "a") if p.stat().st_size]
    kept = tmp_path / "kept.jsonl"
    shutil.copy(closed, kept)
    await first.aclose()  # written and trimmed
    assert segments(tmp_path / "a") == []
    for _ in range(2):  # a crash after the commit, before the trim: the segment is back
        shutil.copy(kept, tmp_path / "a" / "journal" / closed.name)
        again = await opened(kind, tmp_path / "a", request)
        assert again.lag == 0  # replayed at start, and the database kept its own copy
        totals = await again.summary("svc", EPOCH - 60, EPOCH + 60)
        assert totals.requests == 3 and totals.total.cost == 3 * paid(GPT, 10, 5).cost
        await again.aclose()


async def test_calls_a_killed_process_had_only_journalled_come_back(kind, tmp_path, request):
    dying = await opened(kind, tmp_path / "a", request)
    for n in range(4):
        dying.record(record("svc", EPOCH + n, (paid(CLAUDE, 3, 2),)))
    # The process dies here: its journal is all that is left. A new process on a copy
    # of its data directory (the same database) replays it.
    shutil.copytree(tmp_path / "a" / "journal", tmp_path / "b" / "journal")
    heir = await opened(kind, tmp_path / "b", request)
    assert heir.lag == 0
    assert (await heir.summary("svc", EPOCH - 60, EPOCH + 60)).requests == 4
    await dying.aclose()  # had it lived, writing its copy changes nothing
    assert (await heir.summary("svc", EPOCH - 60, EPOCH + 60)).requests == 4
    await heir.aclose()


async def test_export_pages_in_order_and_resumes_after_a_position(kind, tmp_path, request):
    ledger = await opened(kind, tmp_path, request)
    for n in range(7):
        ledger.record(record("svc", EPOCH + n, (paid(GPT, 1, 1), paid(CLAUDE, 2, 0))))
    ledger.record(record("other", EPOCH + 3, (paid(GPT, 1, 1),)))
    after, pages = (-1, ""), []
    while True:
        page = await ledger.export("svc", EPOCH, EPOCH + 60, after, 3)
        if not page:
            break
        pages.append(page)
        after = (page[-1].ended_at_us, page[-1].request_id)
    assert [len(p) for p in pages] == [3, 3, 1]
    rows = [row for page in pages for row in page]
    assert [r.ended_at_us for r in rows] == sorted(r.ended_at_us for r in rows)
    assert {r.tenant for r in rows} == {"svc"}
    first = rows[0]
    assert [a.model for a in first.attempts] == [GPT.name, CLAUDE.name]
    assert first.cost == sum(a.cost for a in first.attempts) and first.status == "OK"
    window = await ledger.export("svc", EPOCH + 2, EPOCH + 4, (-1, ""), 100)
    assert [r.ended_at_us for r in window] == [int((EPOCH + 2) * 1e6), int((EPOCH + 3) * 1e6)]
    await ledger.aclose()


async def test_old_calls_fold_into_hourly_totals_and_old_windows_still_answer(
    kind, tmp_path, request
):
    clock = FakeClock()
    ledger = await opened(kind, tmp_path, request, clock)
    old = clock.wall() - 100 * DAY  # past the 90-day retention
    hour = old - old % 3600
    for n in range(5):
        ledger.record(record("svc", hour + 60 * n, (paid(GPT, 10, 2),), status="OK"))
    ledger.record(record("svc", hour + 61, (paid(GPT, 1, 0),), status="UNAVAILABLE"))
    ledger.record(record("svc", clock.wall() - 60, (paid(GPT, 10, 2),)))  # recent: kept
    await ledger.flush()
    before = await ledger.summary("svc", hour, hour + 3600)
    assert await ledger.fold_old(clock.wall()) == 6
    assert await ledger.fold_old(clock.wall()) == 0  # nothing left to fold
    after = await ledger.summary("svc", hour + 600, hour + 3600)  # inside the folded hour
    assert (after.requests, after.errors) == (before.requests, before.errors) == (6, 1)
    assert after.models == before.models and after.start == hour  # exact to the hour
    assert await ledger.export("svc", hour, hour + 3600, (-1, ""), 100) == []  # rows gone
    recent = await ledger.summary("svc", clock.wall() - 3600, clock.wall())
    assert recent.requests == 1
    await ledger.aclose()


async def test_spend_since_the_day_and_month_counts_written_and_pending_calls(
    kind, tmp_path, request
):
    clock = FakeClock()
    ledger = await opened(kind, tmp_path, request, clock)
    now = clock.wall()
    day_start = now - now % DAY
    cost = paid(GPT, 10, 2).cost
    ledger.record(record("svc", day_start - 10, (paid(GPT, 10, 2),)))  # yesterday
    ledger.record(record("svc", now - 5, (paid(GPT, 10, 2),)))
    await ledger.flush()
    ledger.record(record("svc", now - 1, (paid(GPT, 10, 2),)))  # journalled only
    spend = await ledger.spend(day_start, day_start - 20 * DAY)
    assert spend == {"svc": (2 * cost, 3 * cost)}
    await ledger.aclose()


async def test_a_journal_that_cannot_be_written_fails_the_call(tmp_path, request, monkeypatch):
    ledger = await opened("sqlite", tmp_path, request)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("server.state.sql.journal.os.write", full)
    with pytest.raises(SpendNotRecordedError, match="cannot be recorded") as caught:
        ledger.record(record("svc", EPOCH, (paid(GPT, 1, 1),)))
    assert caught.value.code.name == "UNAVAILABLE"
    monkeypatch.undo()
    assert ledger.lag == 0  # nothing was counted for the refused call
    await ledger.aclose()


async def test_one_process_per_data_directory_and_per_sqlite_file(tmp_path, request):
    first = await opened("sqlite", tmp_path / "a", request)
    with pytest.raises(ConfigError) as same_dir:
        await opened("sqlite", tmp_path / "a", request)
    assert same_dir.value.key == "SWITCHYARD_DATA_DIR" and "in use by another" in str(
        same_dir.value
    )
    shared = tmp_path / "a" / "ledger.db"
    other = SqlLedger(
        SqliteDatabase(shared), tmp_path / "b", LedgerSettings(data_dir=str(tmp_path / "b")),
        FakeClock(), shared,
    )  # fmt: skip
    with pytest.raises(ConfigError) as same_file:
        await other.start()
    assert same_file.value.key == "SWITCHYARD_DATABASE_URL"
    assert "SQLite serves one process" in str(same_file.value)
    await first.aclose()
    await other.start()  # free again once the first let go
    await other.aclose()


def test_head_is_the_newest_migration():
    revisions = sorted(
        p.name.split("_")[0] for p in (migrate.MIGRATIONS / "versions").glob("0*.py")
    )
    assert revisions[-1] == migrate.HEAD


async def test_migrations_from_an_empty_database_and_from_the_previous_version(tmp_path, request):
    path = tmp_path / "old.db"
    await asyncio.to_thread(migrate.upgrade_sqlite, path, "0001")  # the previous release
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO ledger_calls VALUES ('r-old', ?, 'svc', NULL, NULL, 'gpt-4.1', 'why',"
            " 'gpt-4.1', 'OK', 1, 1, 0, 0, 40000, 10, NULL, 'none', 0, '{}')",
            (int(EPOCH * 1e6),),
        )
    ledger = SqlLedger(SqliteDatabase(path), tmp_path, LedgerSettings(), FakeClock(), path)
    await ledger.start()  # migrates to head on start
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (migrate.HEAD,)
        assert db.execute("SELECT COUNT(*) FROM ledger_hourly_calls").fetchone() == (0,)
    assert (await ledger.summary("svc", EPOCH - 60, EPOCH + 60)).requests == 1
    await ledger.aclose()


async def test_postgres_migrates_once_when_replicas_start_together(postgres_url, tmp_path):
    await migrate.upgrade_postgres(postgres_url, "0001")
    databases = [PostgresDatabase(postgres_url, "pg") for _ in range(3)]
    await asyncio.gather(*(database.connect() for database in databases))  # all at once
    connection = await asyncpg.connect(postgres_url)
    assert await connection.fetchval("SELECT version_num FROM alembic_version") == migrate.HEAD
    await connection.close()
    for database in databases:
        await database.close()


async def test_a_database_outage_loses_nothing_and_names_no_password(postgres, tmp_path, caplog):
    url = postgres.url.replace("switchyard@", "switchyard:hunter2@")  # trust auth ignores it
    shown = url.replace("hunter2", "***")
    ledger = SqlLedger(
        PostgresDatabase(url, shown), tmp_path, LedgerSettings(flush_interval=3600), FakeClock()
    )
    await ledger.start()
    ledger.record(record("svc", EPOCH, (paid(GPT, 1, 1),)))
    await ledger.flush()
    postgres.stop()
    with caplog.at_level(logging.INFO, "switchyard"):
        for n in range(1, 6):  # served and journalled while the database is down
            ledger.record(record("svc", EPOCH + n, (paid(GPT, 1, 1),)))
        with pytest.raises(LedgerUnavailableError) as down:
            await ledger.summary("svc", EPOCH - 60, EPOCH + 60)
        with pytest.raises(LedgerUnavailableError):
            await ledger.flush()
        assert ledger.lag == 5 and "5 calls are journalled" in down.value.message
        postgres.start()
        await ledger.flush()
    assert ledger.lag == 0
    assert (await ledger.summary("svc", EPOCH - 60, EPOCH + 60)).requests == 6
    assert "hunter2" not in caplog.text and "hunter2" not in down.value.message
    assert "does not answer" in caplog.text and "answers again" in caplog.text
    await ledger.aclose()


async def test_a_sqlite_database_closed_after_a_failed_write_opens_again(tmp_path):
    # The ledger closes its database when a write fails or times out and connects again
    # on its next drain: the SQLite thread must come back with it.
    database = SqliteDatabase(tmp_path / "ledger.db")
    await database.connect()
    await database.close()
    await database.connect()
    try:
        assert await database.spend(0, 0) == {}
    finally:
        await database.close()
    await database.close()  # closing twice is harmless
