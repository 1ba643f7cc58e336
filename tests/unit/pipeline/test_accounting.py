import asyncio
from typing import cast

import pytest

from server.domain import Attempt, CacheUse, Call, Outcome, Usage
from server.errors import RelayUnavailableError
from server.ledger import InMemoryLedger
from server.pipeline.accounting import AccountingStage
from server.pipeline.base import Handler
from server.pipeline.fallback import FallbackStage

from .fakes import CATALOG, ScriptedModels, routed_call

NOW = 1_800_000_000.0  # a fixed wall-clock instant


def summary(ledger, caller="tester"):
    return ledger.summary(caller, NOW - 3600, NOW + 60)


async def test_calls_are_entered_once_on_success_failure_and_early_close():
    ledger = InMemoryLedger()
    models = ScriptedModels(
        {"gpt-4.1": ["a", "b"], "gemini-2.5-flash": RelayUnavailableError("down", 503)}
    )
    stage = AccountingStage(FallbackStage(models), ledger, clock=lambda: NOW)
    await stage.query(routed_call(model="gpt-4.1"))
    with pytest.raises(RelayUnavailableError):
        await stage.query(routed_call(model="gemini-2.5-flash", fallback=False))
    stream = stage.stream(routed_call(model="gpt-4.1"))
    await anext(stream)
    await stream.aclose()
    totals = summary(ledger)
    assert totals.requests == 3
    assert totals.errors == 1  # the early close is not an error
    assert totals.models["gemini-2.5-flash"].failed_attempts == 1
    assert totals.models["gpt-4.1"].attempts == 1  # the closed stream never recorded an attempt


async def test_a_cancelled_call_is_entered_with_what_it_was_billed_and_is_no_error():
    ledger = InMemoryLedger()
    gate = asyncio.Event()

    class Slow:
        async def query(self, call):
            call.attempts.append(
                Attempt(
                    CATALOG.models["gpt-4.1"],
                    Outcome.CANCELLED,
                    0.1,
                    usage=Usage(7, 0),
                    cost=56_000,
                )
            )
            await gate.wait()

    stage = AccountingStage(cast(Handler[Call], Slow()), ledger, clock=lambda: NOW)
    task = asyncio.create_task(stage.query(routed_call(model="gpt-4.1")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    totals = summary(ledger)
    assert (totals.requests, totals.errors) == (1, 0)
    assert totals.models["gpt-4.1"].cost == 7 * 8_000  # 7 input tokens at $8/M


async def test_cache_use_and_savings_reach_the_ledger():
    ledger = InMemoryLedger()

    class Cached:
        async def query(self, call):
            call.cache = CacheUse.HIT
            call.saved_cost = 120_000

    stage = AccountingStage(cast(Handler[Call], Cached()), ledger, clock=lambda: NOW)
    await stage.query(routed_call())
    totals = summary(ledger)
    assert (totals.cache_hits, totals.cache_misses, totals.saved_cost) == (1, 0, 120_000)
    assert totals.models == {}  # nothing was sent, nothing billed
