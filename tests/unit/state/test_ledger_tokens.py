"""Reasoning tokens and prompt-cache writes in the SQL ledger (migrations 0004 and 0005).

Both are kept per call and per attempt, in the journal and the database, on
SQLite and PostgreSQL alike, and come back in the export; a journal line of the
format before them (2) is still read, with 0 for both.
"""

from __future__ import annotations

import orjson
import pytest

from server.domain import Attempt, Outcome, Usage
from server.pricing import cost_nanos
from server.state.rows import FORMAT, decode, encode, from_record
from tests.helpers import EPOCH, FakeClock

from .test_ledger import CLAUDE, GPT, paid, record
from .test_sql_ledger import DAY, opened


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def thinking(reasoning: int, written: int) -> Attempt:
    usage = Usage(100, 40, reasoning_tokens=reasoning, cache_write_tokens=written)
    return Attempt(CLAUDE, Outcome.SUCCESS, 0.2, 200, "", usage, cost_nanos(usage, CLAUDE.price))


async def test_export_keeps_reasoning_and_cache_writes_per_call_and_attempt(
    kind, tmp_path, request
):
    ledger = await opened(kind, tmp_path, request)
    ledger.record(record("svc", EPOCH + 1, (thinking(25, 60), thinking(5, 0), paid(GPT, 1, 1))))
    for flushed in (False, True):  # from the journal, then from the database
        if flushed:
            await ledger.flush()
        [row] = await ledger.export("svc", EPOCH, EPOCH + 60, (-1, ""), 10)
        assert (row.reasoning_tokens, row.cache_write_tokens) == (30, 60)
        assert [(a.reasoning_tokens, a.cache_write_tokens) for a in row.attempts] == [
            (25, 60),
            (5, 0),
            (0, 0),
        ]
        # 60 writes at $18.75/M instead of $15/M: 60 x 3,750 nanos more than plain input
        assert row.attempts[0].cost == 60 * 3_750 + paid(CLAUDE, 100, 40).cost
    await ledger.aclose()


def test_a_journal_line_of_the_previous_format_reads_with_zeros():
    row = from_record(record("svc", EPOCH, (thinking(3, 4),)))
    assert decode(encode(row)) == row and FORMAT == 3
    old = orjson.loads(encode(row))
    old[0] = 2
    old[1] = old[1][:20]  # format 2: no call totals of the two ...
    old[1][19] = [attempt[:12] for attempt in old[1][19]]  # ... nor attempt figures
    read = decode(orjson.dumps(old))
    assert (read.reasoning_tokens, read.cache_write_tokens) == (0, 0)
    assert read.attempts[0].cost == row.attempts[0].cost
    assert (read.attempts[0].reasoning_tokens, read.attempts[0].cache_write_tokens) == (0, 0)
    with pytest.raises(ValueError, match="not a journal line"):
        decode(orjson.dumps([1, old[1]]))


async def test_hourly_totals_keep_reasoning_and_cache_writes_when_old_calls_fold(
    kind, tmp_path, request
):
    """Migration 0005: a window past the retention is answered from the hourly totals,
    which now hold both parts too."""
    clock = FakeClock()
    ledger = await opened(kind, tmp_path, request, clock)
    old = clock.wall() - 100 * DAY
    hour = old - old % 3600
    ledger.record(record("svc", hour + 60, (thinking(25, 60), paid(GPT, 1, 1))))
    ledger.record(record("svc", hour + 120, (thinking(5, 0),)))
    await ledger.flush()
    before = await ledger.summary("svc", hour, hour + 3600)
    assert (before.total.reasoning_tokens, before.total.cache_write_tokens) == (30, 60)
    assert await ledger.fold_old(clock.wall()) == 2
    after = await ledger.summary("svc", hour, hour + 3600)
    assert after.models == before.models
    assert (after.total.reasoning_tokens, after.total.cache_write_tokens) == (30, 60)
    await ledger.aclose()
