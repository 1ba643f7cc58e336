"""The ledger contract, on every backend: totals per tenant and model, exact money, cache use,
the same before and after a durable ledger wrote its queue."""

import itertools

from server.catalog import default_catalog
from server.domain import Attempt, CacheUse, Outcome, Usage
from server.state.ledger import CallRecord
from server.state.sql.ledger import SqlLedger

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


async def summary(ledger, tenant, start, end):
    """The summary as readers see it before the ledger wrote its queue and after: the same."""
    before = await ledger.summary(tenant, start, end)
    if isinstance(ledger, SqlLedger):
        await ledger.flush()
        assert ledger.lag == 0
        after = await ledger.summary(tenant, start, end)
        assert after == before
    return before


_ids = itertools.count(1)


def record(tenant, at, attempts, **fields):
    """A finished call with a request id of its own."""
    return CallRecord(f"r{next(_ids):06d}", tenant, at, attempts, **fields)


async def test_totals_per_model_with_failed_and_skipped_attempts(ledger):
    ledger.record(
        record(
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
    day = await summary(ledger, "billing", T0, T0 + 60)
    assert (day.requests, day.errors) == (1, 0)
    claude = day.models[CLAUDE.name]
    assert (claude.attempts, claude.failed_attempts, claude.cost) == (1, 1, 60_000)
    gpt = day.models[GPT.name]
    assert (gpt.input_tokens, gpt.cached_input_tokens, gpt.output_tokens) == (10, 6, 2)
    assert gpt.cost == 4 * 8_000 + 6 * 2_000 + 2 * 32_000 == 108_000
    assert day.total.cost == 168_000
    assert list(day.models) == sorted(day.models)


async def test_callers_never_see_each_other(ledger):
    ledger.record(record("a", T0, (paid(GPT, 1, 1),)))
    assert (await summary(ledger, "b", T0 - 60, T0 + 60)).requests == 0
    assert (await summary(ledger, "a", T0 - 60, T0 + 60)).requests == 1


async def test_cache_hits_misses_and_savings(ledger):
    ledger.record(record("c", T0, (paid(GPT, 5, 5),), cache=CacheUse.MISS))
    ledger.record(record("c", T0, (), cache=CacheUse.HIT, saved_cost=200_000))
    ledger.record(record("c", T0, (), cache=CacheUse.HIT, saved_cost=200_000))
    ledger.record(record("c", T0, (paid(GPT, 5, 5),), cache=CacheUse.REFRESH))
    totals = await summary(ledger, "c", T0, T0 + 60)
    assert (totals.cache_hits, totals.cache_misses, totals.saved_cost) == (2, 1, 400_000)
    assert totals.requests == 4 and totals.models[GPT.name].attempts == 2


async def test_totals_count_reasoning_tokens_and_cache_writes(ledger):
    """GetUsage's totals of the two parts issue 15 bills apart: of output, the reasoning;
    of input, what was written to the prompt cache."""
    thinking = Usage(100, 40, reasoning_tokens=25, cache_write_tokens=60)
    ledger.record(
        record(
            "billing",
            T0 + 5,
            (
                Attempt(CLAUDE, Outcome.SUCCESS, 0.2, 200, "", thinking, 1_000),
                Attempt(CLAUDE, Outcome.SUCCESS, 0.2, 200, "", Usage(10, 4, reasoning_tokens=3)),
                paid(GPT, 10, 2),
            ),
        )
    )
    day = await summary(ledger, "billing", T0, T0 + 60)
    claude, gpt = day.models[CLAUDE.name], day.models[GPT.name]
    assert (claude.reasoning_tokens, claude.cache_write_tokens) == (28, 60)
    assert (gpt.reasoning_tokens, gpt.cache_write_tokens) == (0, 0)
    assert (day.total.reasoning_tokens, day.total.cache_write_tokens) == (28, 60)
