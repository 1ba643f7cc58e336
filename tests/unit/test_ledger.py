"""The windowed ledger: totals per caller and model, exact money, minute and hour buckets."""

from server.catalog import default_catalog
from server.domain import Attempt, CacheUse, Outcome, Usage
from server.ledger import FINE_SPAN, HOUR, RETENTION, CallRecord, InMemoryLedger

CATALOG = default_catalog()
GPT = CATALOG.models["gpt-4.1"]
CLAUDE = CATALOG.models["claude-sonnet-4-20250514"]
T0 = 1_800_000_000.0  # a whole hour (1,800,000,000 / 3,600 = 500,000)


def paid(model, inp, out, cached=0, outcome=Outcome.SUCCESS):
    usage = Usage(inp, out, cached_input_tokens=cached)
    price = model.price
    # the ledger adds what the attempt says it cost; compute it by hand here
    cost = (
        (inp - cached) * price.input_nanos
        + cached * price.cached_input_nanos
        + out * price.output_nanos
    )
    return Attempt(model, outcome, 0.1, 200, "", usage, cost)


def test_totals_per_model_with_failed_and_skipped_attempts():
    ledger = InMemoryLedger()
    ledger.record(
        CallRecord(
            "billing",
            T0 + 10,
            (
                # a billed failure: 4 input tokens at $15/M = 60,000 nanos
                Attempt(CLAUDE, Outcome.RETRYABLE_ERROR, 0.1, 0, "reset", Usage(4, 0), 60_000),
                Attempt(CLAUDE, Outcome.SKIPPED, 0.0),  # never sent: not counted
                # 10 input (6 cached) and 2 output on gpt-4.1: 4*8,000 + 6*2,000 + 2*32,000
                paid(GPT, 10, 2, cached=6),
            ),
        )
    )
    day = ledger.summary("billing", T0, T0 + 60)
    assert (day.requests, day.errors) == (1, 0)
    claude = day.models[CLAUDE.name]
    assert (claude.attempts, claude.failed_attempts, claude.cost) == (1, 1, 60_000)
    gpt = day.models[GPT.name]
    assert (gpt.input_tokens, gpt.cached_input_tokens, gpt.output_tokens) == (10, 6, 2)
    assert gpt.cost == 4 * 8_000 + 6 * 2_000 + 2 * 32_000 == 108_000
    assert day.total.cost == 168_000
    assert list(day.models) == sorted(day.models)


def test_callers_never_see_each_other():
    ledger = InMemoryLedger()
    ledger.record(CallRecord("a", T0, (paid(GPT, 1, 1),)))
    assert ledger.summary("b", T0 - 60, T0 + 60).requests == 0
    assert ledger.summary("a", T0 - 60, T0 + 60).requests == 1


def test_window_is_aligned_to_minutes_and_excludes_what_is_outside():
    ledger = InMemoryLedger()
    for offset in (0, 59, 60, 125, 600):
        ledger.record(CallRecord("c", T0 + offset, (paid(GPT, 1, 0),), failed=offset == 125))
    # [T0+61, T0+130): minute buckets starting at T0+60 and T0+120
    window = ledger.summary("c", T0 + 61, T0 + 130)
    assert (window.requests, window.errors) == (2, 1)
    assert (window.start, window.end) == (T0 + 60, T0 + 180)
    assert ledger.summary("c", T0, T0 + 3600).requests == 5
    assert ledger.summary("c", T0 + 601, T0 + 3600).requests == 1  # rounded down to T0+600
    assert ledger.summary("c", T0 + 660, T0 + 3600).requests == 0


def test_cache_hits_misses_and_savings():
    ledger = InMemoryLedger()
    ledger.record(CallRecord("c", T0, (paid(GPT, 5, 5),), cache=CacheUse.MISS))
    ledger.record(CallRecord("c", T0, (), cache=CacheUse.HIT, saved_cost=200_000))
    ledger.record(CallRecord("c", T0, (), cache=CacheUse.HIT, saved_cost=200_000))
    ledger.record(CallRecord("c", T0, (paid(GPT, 5, 5),), cache=CacheUse.REFRESH))
    totals = ledger.summary("c", T0, T0 + 60)
    assert (totals.cache_hits, totals.cache_misses, totals.saved_cost) == (2, 1, 400_000)
    assert totals.requests == 4 and totals.models[GPT.name].attempts == 2


def test_old_minutes_fold_into_hours_and_hours_expire():
    ledger = InMemoryLedger()
    ledger.record(CallRecord("c", T0 + 30, (paid(GPT, 1, 0),)))
    ledger.record(CallRecord("c", T0 + 90, (paid(GPT, 1, 0),)))
    # a call 26 hours later folds the two old minutes into the hour starting at T0
    later = T0 + FINE_SPAN + HOUR
    ledger.record(CallRecord("c", later, (paid(GPT, 1, 0),)))
    old = ledger.summary("c", T0 + 60, T0 + 120)  # asks for one minute, gets the hour
    assert old.requests == 2 and old.start == T0
    assert ledger.summary("c", later, later + 1).requests == 1
    # past the retention, the hour is gone
    ledger.record(CallRecord("c", T0 + RETENTION + 2 * HOUR, (paid(GPT, 1, 0),)))
    assert ledger.summary("c", T0, T0 + HOUR).requests == 0
