"""The stats book: latest-wins usage per response, rollback, snapshots and waiting."""

from __future__ import annotations

import asyncio

import pytest

from server.simulator.stats import StatsBook
from server.simulator.wire import UsageReport


def test_latest_report_wins_within_a_response_and_responses_add_up() -> None:
    book = StatsBook(["m"])
    with book.serving("m") as first:
        first.record(UsageReport(input_tokens=10, output_tokens=1), 0)  # message_start
        first.record(None, 1)
        first.record(None, 1)
        first.record(UsageReport(output_tokens=2), 0)  # message_delta supersedes the 1
        assert book.snapshot().model("m").in_flight == 1
    with book.serving("m") as second:
        second.record(UsageReport(5, 3), 3)
    stats = book.snapshot().model("m")
    assert (stats.input_tokens, stats.output_tokens, stats.tokens_sent) == (15, 5, 5)
    assert stats.in_flight == 0


def test_restore_takes_back_an_unwritten_frame_only() -> None:
    book = StatsBook(["m"])
    with book.serving("m") as other, book.serving("m") as tally:
        other.record(UsageReport(7, 7), 7)
        tally.record(UsageReport(4, 1), 1)
        state = tally.checkpoint()
        tally.record(UsageReport(output_tokens=9), 8)
        tally.restore(state)
    stats = book.snapshot().model("m")
    assert (stats.input_tokens, stats.output_tokens, stats.tokens_sent) == (11, 8, 8)


def test_snapshots_are_immutable_copies() -> None:
    book = StatsBook(["m"])
    before = book.snapshot()
    book.received("m")
    book.received(None)
    assert before.model("m").requests == 0
    after = book.snapshot()
    assert (after.requests, after.model("m").requests) == (2, 1)
    assert after.model("never-asked").requests == 0
    with pytest.raises(TypeError):
        after.models["m"] = after.models["m"]  # type: ignore[index]


async def test_wait_until_wakes_on_change_not_on_a_timer() -> None:
    book = StatsBook(["m"])
    waiter = asyncio.create_task(book.wait_until(lambda s: s.open_connections == 2, 5))
    book.connection_opened()
    await asyncio.sleep(0)  # let the waiter re-check once: still unmet
    assert not waiter.done()
    book.connection_opened()
    assert (await waiter).open_connections == 2
