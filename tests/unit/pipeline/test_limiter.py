import asyncio
import time

import pytest

from server.domain import ModelCall
from server.errors import RateLimitedError
from server.pipeline.limiter import Bucket, LimiterStage, RateBudget

from .fakes import CATALOG, ScriptedModels, routed_call


async def test_bucket_predicts_the_wait_aiolimiter_will_impose():
    bucket = Bucket(2, 1.0)  # 2 per second, bursts of 2
    await bucket.acquire(2)
    predicted = bucket.wait_time(1)
    assert predicted == pytest.approx(0.5, abs=0.02)
    started = time.monotonic()
    await bucket.acquire(1)
    assert time.monotonic() - started == pytest.approx(predicted, abs=0.05)
    assert Bucket(5, 1.0).wait_time(5) == 0.0


async def test_burst_is_free_then_the_deadline_decides_at_once():
    budget = RateBudget("relay", per_minute=60, burst=2, max_waiters=10)  # 1 a second
    assert await budget.acquire(1, None) == 0.0
    assert await budget.acquire(1, None) == 0.0
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as caught:
        await budget.acquire(1, deadline=time.monotonic() + 0.3)
    assert time.monotonic() - started < 0.1  # refused at once, not after 0.3 s
    assert caught.value.retry_after == pytest.approx(1.0, abs=0.11)
    assert "60 requests/min" in caught.value.message
    assert "deadline" in caught.value.message
    assert budget.waiters == 0


async def test_calls_without_deadline_wait_no_longer_than_max_wait():
    budget = RateBudget("relay", per_minute=60, burst=1, max_waiters=10, max_wait=0.5)
    await budget.acquire(1, None)
    with pytest.raises(RateLimitedError, match=r"exceed 0\.5 s"):
        await budget.acquire(1, None)


async def test_waits_when_the_deadline_allows():
    budget = RateBudget("relay", per_minute=6000, burst=1, max_waiters=10)  # 100 a second
    await budget.acquire(1, None)
    waited = await budget.acquire(1, deadline=time.monotonic() + 1.0)
    assert 0.005 < waited < 0.2


async def test_queue_is_bounded():
    budget = RateBudget("relay", per_minute=60, burst=1, max_waiters=1)
    await budget.acquire(1, None)
    first = asyncio.create_task(budget.acquire(1, None))
    await asyncio.sleep(0)  # let it join the queue
    assert budget.waiters == 1
    with pytest.raises(RateLimitedError, match="too many calls are already waiting"):
        await budget.acquire(1, None)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert budget.waiters == 0  # a cancelled waiter gives its place back


async def test_large_requests_are_not_starved_by_small_ones():
    budget = RateBudget("tokens", per_minute=6000, burst=10, max_waiters=10)  # 100 units/s
    await budget.acquire(10, None)
    order: list[str] = []

    async def take(name: str, amount: int) -> None:
        await budget.acquire(amount, None)
        order.append(name)

    large = asyncio.create_task(take("large", 10))
    await asyncio.sleep(0)
    smalls = [asyncio.create_task(take(f"small{i}", 1)) for i in range(3)]
    await asyncio.gather(large, *smalls)
    assert order[0] == "large"  # aiolimiter alone would serve the small ones first


async def test_limiter_stage_refuses_before_calling_the_relay():
    models = ScriptedModels({"gpt-4.1": ["ok"]})
    budget = RateBudget("relay", per_minute=60, burst=1, max_waiters=10)
    stage = LimiterStage(models, budget)
    call = routed_call(model="gpt-4.1", deadline=time.monotonic() + 0.2)
    item = ModelCall(call, CATALOG.models["gpt-4.1"], 10)
    await stage.query(item)
    with pytest.raises(RateLimitedError):
        await stage.query(item)
    with pytest.raises(RateLimitedError):
        async for _ in stage.stream(item):
            pass
    assert models.tried == ["gpt-4.1"]
