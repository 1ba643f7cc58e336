"""The memory ledger's buckets: minute buckets aligned, folded into hours, hours expire."""

from server.state.memory.ledger import FINE_SPAN, HOUR, RETENTION, MemoryLedger

from .test_ledger import GPT, T0, paid, record


async def test_window_is_aligned_to_minutes_and_excludes_what_is_outside():
    ledger = MemoryLedger()
    for offset in (0, 59, 60, 125, 600):
        ledger.record(
            record(
                "c",
                T0 + offset,
                (paid(GPT, 1, 0),),
                status="UNAVAILABLE" if offset == 125 else "OK",
            )
        )
    # [T0+61, T0+130): minute buckets starting at T0+60 and T0+120
    window = await ledger.summary("c", T0 + 61, T0 + 130)
    assert (window.requests, window.errors) == (2, 1)
    assert (window.start, window.end) == (T0 + 60, T0 + 180)
    assert (await ledger.summary("c", T0, T0 + 3600)).requests == 5
    assert (await ledger.summary("c", T0 + 601, T0 + 3600)).requests == 1  # rounded down to T0+600
    assert (await ledger.summary("c", T0 + 660, T0 + 3600)).requests == 0


async def test_old_minutes_fold_into_hours_and_hours_expire():
    ledger = MemoryLedger()
    ledger.record(record("c", T0 + 30, (paid(GPT, 1, 0),)))
    ledger.record(record("c", T0 + 90, (paid(GPT, 1, 0),)))
    # a call 26 hours later folds the two old minutes into the hour starting at T0
    later = T0 + FINE_SPAN + HOUR
    ledger.record(record("c", later, (paid(GPT, 1, 0),)))
    old = await ledger.summary("c", T0 + 60, T0 + 120)  # asks for one minute, gets the hour
    assert old.requests == 2 and old.start == T0
    assert (await ledger.summary("c", later, later + 1)).requests == 1
    # past the retention, the hour is gone
    ledger.record(record("c", T0 + RETENTION + 2 * HOUR, (paid(GPT, 1, 0),)))
    assert (await ledger.summary("c", T0, T0 + HOUR)).requests == 0
