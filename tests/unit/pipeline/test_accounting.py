import asyncio
from typing import cast

import pytest

from server.domain import (
    Attempt,
    CacheUse,
    Call,
    Completion,
    FinishReason,
    Identity,
    Outcome,
    Usage,
)
from server.errors import RelayUnavailableError, SpendNotRecordedError
from server.pipeline.accounting import AccountingStage
from server.pipeline.base import Handler
from server.pipeline.fallback import FallbackStage
from server.state.ledger import CallRecord
from server.state.memory import MemoryLedger
from tests.helpers import EPOCH, FakeClock

from .fakes import CATALOG, ScriptedModels, routed_call

NOW = EPOCH  # FakeClock's wall-clock instant


async def summary(ledger, tenant="tester"):
    return await ledger.summary(tenant, NOW - 3600, NOW + 60)


async def test_calls_are_entered_once_on_success_failure_and_early_close():
    ledger = MemoryLedger()
    models = ScriptedModels(
        {"gpt-4.1": ["a", "b"], "gemini-2.5-flash": RelayUnavailableError("down", 503)}
    )
    stage = AccountingStage(FallbackStage(models), ledger, clock=FakeClock())
    await stage.query(routed_call(model="gpt-4.1"))
    with pytest.raises(RelayUnavailableError):
        await stage.query(routed_call(model="gemini-2.5-flash", fallback=False))
    stream = stage.stream(routed_call(model="gpt-4.1"))
    await anext(stream)
    await stream.aclose()
    totals = await summary(ledger)
    assert totals.requests == 3
    assert totals.errors == 1  # the early close is not an error
    assert totals.models["gemini-2.5-flash"].failed_attempts == 1
    assert totals.models["gpt-4.1"].attempts == 1  # the closed stream never recorded an attempt


async def test_a_cancelled_call_is_entered_with_what_it_was_billed_and_is_no_error():
    ledger = MemoryLedger()
    gate = asyncio.Event()
    billed = asyncio.Event()

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
            billed.set()
            await gate.wait()

    stage = AccountingStage(cast(Handler[Call], Slow()), ledger, clock=FakeClock())
    task = asyncio.create_task(stage.query(routed_call(model="gpt-4.1")))
    await billed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    totals = await summary(ledger)
    assert (totals.requests, totals.errors) == (1, 0)
    assert totals.models["gpt-4.1"].cost == 7 * 8_000  # 7 input tokens at $8/M


async def test_cache_use_and_savings_reach_the_ledger():
    ledger = MemoryLedger()

    class Cached:
        async def query(self, call):
            call.cache = CacheUse.HIT
            call.saved_cost = 120_000
            model = CATALOG.models["gpt-4.1"]
            return Completion(model, "cached", Usage(), FinishReason.STOP)

    stage = AccountingStage(cast(Handler[Call], Cached()), ledger, clock=FakeClock())
    await stage.query(routed_call())
    totals = await summary(ledger)
    assert (totals.cache_hits, totals.cache_misses, totals.saved_cost) == (1, 0, 120_000)
    assert totals.models == {}  # nothing was sent, nothing billed


async def test_the_record_carries_the_request_id_and_the_whole_identity():
    records: list[CallRecord] = []

    class Recorder(MemoryLedger):
        def record(self, entry: CallRecord) -> None:
            records.append(entry)

    clock = FakeClock()
    stage = AccountingStage(FallbackStage(ScriptedModels({"gpt-4.1": ["a"]})), Recorder(), clock)
    call = routed_call(model="gpt-4.1")
    call.identity = Identity("billing", key_id="k1", user="alice")
    await stage.query(call)
    [record] = records
    assert (record.request_id, record.tenant, record.key_id, record.user) == (
        "rid",
        "billing",
        "k1",
        "alice",
    )
    assert record.at == clock.wall() and record.attempts == tuple(call.attempts)
    assert (record.status, record.model, record.route_model) == ("OK", "gpt-4.1", "gpt-4.1")
    assert record.route_reason == "gpt-4.1 was requested by name" and record.first_token is None


async def test_a_stream_is_recorded_before_its_final_message_leaves():
    records: list[CallRecord] = []

    class Recorder(MemoryLedger):
        def record(self, entry: CallRecord) -> None:
            records.append(entry)

    stage = AccountingStage(FallbackStage(ScriptedModels({"gpt-4.1": ["a"]})), Recorder())
    events = stage.stream(routed_call(model="gpt-4.1"))
    async for event in events:
        if isinstance(event, Completion):
            assert [r.status for r in records] == ["OK"]  # already entered
    assert len(records) == 1


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RelayUnavailableError("down", 503), "UNAVAILABLE"),
        (KeyError("bug"), "INTERNAL"),
    ],
)
async def test_the_status_a_call_ends_with_is_recorded(error, status):
    records: list[CallRecord] = []

    class Recorder(MemoryLedger):
        def record(self, entry: CallRecord) -> None:
            records.append(entry)

    class Failing:
        async def query(self, call):
            raise error

    stage = AccountingStage(cast(Handler[Call], Failing()), Recorder())
    with pytest.raises(type(error)):
        await stage.query(routed_call())
    assert [r.status for r in records] == [status] and records[0].failed


async def test_a_call_whose_spend_cannot_be_recorded_fails_unavailable():
    class Full(MemoryLedger):
        def record(self, entry: CallRecord) -> None:
            raise SpendNotRecordedError("the journal cannot be written; spend cannot be recorded")

    stage = AccountingStage(FallbackStage(ScriptedModels({"gpt-4.1": ["a"]})), Full())
    with pytest.raises(SpendNotRecordedError) as caught:
        await stage.query(routed_call(model="gpt-4.1"))
    assert caught.value.code.name == "UNAVAILABLE"
