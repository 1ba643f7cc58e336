"""The budget stage: refuse before the relay, hold while running, settle however it ends."""

from typing import cast

import pytest

from server.domain import Call
from server.errors import BudgetExceededError, RelayUnavailableError
from server.pipeline.base import Handler
from server.pipeline.budget import BudgetStage
from server.pipeline.fallback import FallbackStage
from server.pricing import largest_cost
from server.settings import BudgetLimits, BudgetSettings
from server.state.memory import MemoryBudgetStore
from tests.helpers import FakeClock

from .fakes import ScriptedModels, routed_call

USD = 1_000_000_000


def book(day):
    return MemoryBudgetStore(BudgetSettings(BudgetLimits(day=day)), FakeClock())


async def spent(budgets) -> int:
    return (await budgets.status("tester"))[0].spent


async def test_reserved_while_running_then_settled_to_the_actual_cost():
    budgets = book(USD)
    seen = []

    class Peek:
        async def query(self, call):
            seen.append(await spent(budgets))
            return await FallbackStage(ScriptedModels({"gpt-4.1": ["ab"]})).query(call)

    call = routed_call(model="gpt-4.1", max_tokens=10)
    await BudgetStage(cast(Handler[Call], Peek()), budgets).query(call)
    # held while running: 5 input and 10 output tokens on the priciest model of the chain,
    # claude-sonnet-4 (gpt-4.1 falls back to it): 5 * 15,000 + 10 * 75,000
    assert call.route is not None
    assert seen == [largest_cost(call.route)] == [825_000]
    # ScriptedModels bills 1 nano per output token: the settled spend is the actual cost
    assert await spent(budgets) == call.cost == 1


async def test_refused_before_anything_is_sent():
    models = ScriptedModels({"gpt-4.1": ["a"]})
    stage = BudgetStage(FallbackStage(models), book(1000))
    with pytest.raises(BudgetExceededError):
        await stage.query(routed_call(model="gpt-4.1"))
    with pytest.raises(BudgetExceededError):
        await anext(stage.stream(routed_call(model="gpt-4.1")))
    assert models.tried == []


async def test_failures_and_closed_streams_release_the_hold():
    budgets = book(USD)
    models = ScriptedModels(
        {"gpt-4.1": ["a", "b", "c"], "claude-sonnet-4-20250514": RelayUnavailableError("x", 503)}
    )
    stage = BudgetStage(FallbackStage(models), budgets)
    with pytest.raises(RelayUnavailableError):
        await stage.query(routed_call(model="claude-sonnet-4-20250514", fallback=False))
    stream = stage.stream(routed_call(model="gpt-4.1"))
    await anext(stream)
    assert await spent(budgets) > 0  # held while the stream runs
    await stream.aclose()
    assert await spent(budgets) == 0  # nothing was billed by the fakes
