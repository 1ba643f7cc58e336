import pytest

from server.domain import Attempt, Outcome, Usage
from server.errors import RelayUnavailableError
from server.pipeline.accounting import AccountingStage, InMemoryLedger
from server.pipeline.fallback import FallbackStage

from .fakes import CATALOG, ScriptedModels, routed_call


def test_ledger_totals_per_caller_and_model_skip_skipped_attempts():
    ledger = InMemoryLedger()
    call = routed_call()
    gpt, claude = CATALOG.models["gpt-4.1"], CATALOG.models["claude-sonnet-4-20250514"]
    call.attempts += [
        Attempt(gpt, Outcome.RETRYABLE_ERROR, 0.1, 503, "x", Usage(4, 0), 32_000),
        Attempt(claude, Outcome.SUCCESS, 0.2, 200, "", Usage(4, 2), 210_000),
        Attempt(claude, Outcome.SKIPPED, 0.0),
    ]
    ledger.record(call)
    totals = ledger.totals("tester")
    assert totals["gpt-4.1"].cost == 32_000 and totals["gpt-4.1"].failures == 1
    assert totals["claude-sonnet-4-20250514"].attempts == 1
    assert totals["claude-sonnet-4-20250514"].output_tokens == 2
    assert ledger.totals("someone-else") == {}


async def test_calls_are_entered_once_on_success_failure_and_early_close():
    ledger = InMemoryLedger()
    models = ScriptedModels(
        {"gpt-4.1": ["a", "b"], "gemini-2.5-flash": RelayUnavailableError("down", 503)}
    )
    stage = AccountingStage(FallbackStage(models), ledger)
    await stage.query(routed_call(model="gpt-4.1"))
    with pytest.raises(RelayUnavailableError):
        await stage.query(routed_call(model="gemini-2.5-flash", fallback=False))
    stream = stage.stream(routed_call(model="gpt-4.1"))
    await anext(stream)
    await stream.aclose()
    assert ledger.calls == 3
    assert ledger.totals("tester")["gemini-2.5-flash"].failures == 1
