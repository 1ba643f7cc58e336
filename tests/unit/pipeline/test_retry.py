import asyncio
import random

import pytest

from server.clock import SYSTEM_CLOCK
from server.domain import Completion, ModelCall, StreamStart, TextDelta
from server.errors import RelayAuthError, RelayUnavailableError
from server.pipeline.retry import RetryBudget, RetryStage
from server.settings import RetrySettings
from tests.helpers import FakeClock

from .fakes import CATALOG, ScriptedModels, routed_call

GPT = CATALOG.models["gpt-4.1"]


class FlakyModel(ScriptedModels):
    """Fails the first `failures` tries with `error`, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__({"gpt-4.1": ["ok"]})
        self.failures = failures
        self.error = error
        self.tries = 0
        self.tried_once = asyncio.Event()

    async def query(self, item, /):
        self.tries += 1
        self.tried_once.set()
        if self.tries <= self.failures:
            raise self.error
        return await super().query(item)

    async def stream(self, item, /):
        self.tries += 1
        if self.tries <= self.failures:
            raise self.error
        async for event in super().stream(item):
            yield event


def stage(model, budget: RetryBudget | None = None, clock=None, **settings) -> RetryStage:
    defaults = {"base_delay": 0.001, "max_delay": 0.002}
    return RetryStage(
        model,
        RetrySettings(**{**defaults, **settings}),
        budget or RetryBudget(0.2, 100, 10),
        random.Random(7),
        clock or FakeClock(),
    )


def item(deadline: float | None = None) -> ModelCall:
    return ModelCall(routed_call(model="gpt-4.1", deadline=deadline), GPT, 10)


def overloaded(retry_after: float | None = None) -> RelayUnavailableError:
    return RelayUnavailableError("the provider is overloaded; retry later", 529, retry_after)


async def test_retryable_failures_are_retried_until_an_answer():
    model = FlakyModel(2, overloaded())
    completion = await stage(model).query(item())
    assert completion.content == "ok"
    assert model.tries == 3


async def test_gives_up_after_max_attempts():
    model = FlakyModel(5, overloaded())
    with pytest.raises(RelayUnavailableError):
        await stage(model, max_attempts=3).query(item())
    assert model.tries == 3


async def test_final_errors_are_not_retried():
    model = FlakyModel(5, RelayAuthError("bad key", 401))
    with pytest.raises(RelayAuthError):
        await stage(model).query(item())
    assert model.tries == 1


async def test_retry_after_is_honoured():
    clock = FakeClock()
    model = FlakyModel(1, overloaded(retry_after=0.15))
    await stage(model, clock=clock).query(item())
    assert model.tries == 2 and clock.slept == [0.15]


async def test_backoff_without_a_hint_is_drawn_under_the_cap():
    clock = FakeClock()
    model = FlakyModel(2, overloaded())
    await stage(model, clock=clock, base_delay=0.1, max_delay=0.3).query(item())
    assert len(clock.slept) == 2
    assert 0 <= clock.slept[0] <= 0.1 and 0 <= clock.slept[1] <= 0.2


async def test_a_retry_after_longer_than_allowed_moves_on_at_once():
    model = FlakyModel(1, overloaded(retry_after=60))
    with pytest.raises(RelayUnavailableError):
        await stage(model, max_retry_after=10).query(item())
    assert model.tries == 1


async def test_no_retry_when_the_deadline_cannot_cover_it():
    clock = FakeClock()
    model = FlakyModel(1, overloaded(retry_after=0.5))
    with pytest.raises(RelayUnavailableError):
        await stage(model, clock=clock).query(item(deadline=clock.monotonic() + 0.3))
    assert clock.slept == []
    assert model.tries == 1


def test_backoff_is_full_jitter_under_an_exponential_cap():
    retry = stage(FlakyModel(0, overloaded()), base_delay=0.1, max_delay=0.3, max_attempts=10)
    target = item()
    delays: dict[int, list[float]] = {}
    for n in (1, 2, 3, 4):
        drawn = [retry.delay(target, overloaded(), n) for _ in range(200)]
        delays[n] = [d for d in drawn if d is not None]
        assert len(delays[n]) == 200  # never refused: no deadline, budget to spare
    assert all(0 <= d <= 0.1 for d in delays[1])
    assert all(0 <= d <= 0.2 for d in delays[2])
    assert all(0 <= d <= 0.3 for d in delays[3] + delays[4])  # capped at max_delay
    assert max(delays[2]) > 0.1  # the range really grows
    assert len(set(delays[1])) > 100  # and is spread, not fixed


def test_retry_budget_allows_a_share_of_recent_tries_plus_a_floor():
    budget = RetryBudget(ratio=0.2, min_per_second=0.1, window=10)  # floor: 1 per window
    now = 1000.0
    for _ in range(20):
        budget.record_try(now)
    allowed = sum(budget.try_spend(now) for _ in range(10))
    assert allowed == 5  # 0.2 * 20 + 0.1 * 10
    assert not budget.try_spend(now + 5)
    assert budget.try_spend(now + 10.5)  # the window moved on: old retries expired


def test_retry_budget_forgets_tries_older_than_its_window():
    budget = RetryBudget(ratio=0.2, min_per_second=5, window=10)
    for tick in range(100_000):  # 100 tries a second for 1,000 s, and never a retry
        budget.record_try(tick / 100)
    assert budget.held <= 10 * 100 + 1  # one window's worth, not all 100,000


async def test_spent_budget_stops_retries():
    budget = RetryBudget(ratio=0, min_per_second=0, window=10)
    model = FlakyModel(1, overloaded())
    with pytest.raises(RelayUnavailableError):
        await stage(model, budget).query(item())
    assert model.tries == 1


async def test_streams_retry_before_the_first_token():
    model = FlakyModel(2, overloaded())
    events = [event async for event in stage(model).stream(item())]
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], Completion)
    assert model.tries == 3


async def test_streams_do_not_retry_after_the_first_token():
    model = ScriptedModels({"gpt-4.1": ["a", "b"]}, fail_after={"gpt-4.1": (1, overloaded())})
    received = []
    with pytest.raises(RelayUnavailableError):
        async for event in stage(model).stream(item()):
            received.append(event)
    assert received[1:] == [TextDelta("a")]
    assert model.tried == ["gpt-4.1"]


async def test_backoff_sleep_is_cancellable():
    model = FlakyModel(1, overloaded(retry_after=5))
    task = asyncio.create_task(stage(model, clock=SYSTEM_CLOCK).query(item()))
    await model.tried_once.wait()  # now the stage sleeps out the 5 s Retry-After
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
