import asyncio
import dataclasses
import time

import pytest

from server.catalog import default_catalog
from server.domain import ModelCall
from server.errors import ModelBusyError, RateLimitedError, RelayUnavailableError
from server.pipeline.limiter import Bucket, ConcurrencyCap, LimiterStage, Limits, RateBudget
from server.settings import LimitSettings

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


def limits_for(**limit_fields) -> Limits:
    return Limits(default_catalog().models, LimitSettings(**limit_fields))


async def test_limiter_stage_refuses_before_calling_the_relay():
    models = ScriptedModels({"gpt-4.1": ["ok"]})
    stage = LimiterStage(models, limits_for(relay_rpm=60, relay_burst=1))
    call = routed_call(model="gpt-4.1", deadline=time.monotonic() + 0.2)
    item = ModelCall(call, CATALOG.models["gpt-4.1"], 10)
    await stage.query(item)
    with pytest.raises(RateLimitedError):
        await stage.query(item)
    with pytest.raises(RateLimitedError):
        async for _ in stage.stream(item):
            pass
    assert models.tried == ["gpt-4.1"]


async def test_concurrency_cap_hands_slots_over_in_order_and_times_out_at_the_deadline():
    cap = ConcurrencyCap("model x", 1, max_waiters=5, max_wait=10.0)
    await cap.acquire(None)
    order: list[int] = []

    async def wait(n: int) -> None:
        await cap.acquire(None)
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert cap.waiters == 3
    for _ in range(3):
        cap.release()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2] and cap.in_use == 1
    started = time.monotonic()
    with pytest.raises(ModelBusyError, match="1 calls in flight"):
        await cap.acquire(time.monotonic() + 0.05)
    assert time.monotonic() - started < 1.0
    assert cap.waiters == 0
    cap.release()
    assert cap.in_use == 0


async def test_a_cancelled_waiter_passes_a_slot_on():
    cap = ConcurrencyCap("model x", 1, max_waiters=5, max_wait=10.0)
    await cap.acquire(None)
    first = asyncio.create_task(cap.acquire(None))
    second = asyncio.create_task(cap.acquire(None))
    await asyncio.sleep(0)
    cap.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # so the slot went on to `second`
    assert cap.in_use == 1


async def test_model_and_provider_caps_are_released_on_success_error_and_cancel():
    limits = limits_for()
    gpt = CATALOG.models["gpt-4.1"]
    gate = limits.of(gpt)
    models = ScriptedModels(
        {"gpt-4.1": ["a", "b"], "gemini-2.5-flash": RelayUnavailableError("down", 503)}
    )
    stage = LimiterStage(models, limits)
    await stage.query(ModelCall(routed_call(model="gpt-4.1"), gpt, 10))
    gemini = CATALOG.models["gemini-2.5-flash"]
    with pytest.raises(RelayUnavailableError):
        await stage.query(ModelCall(routed_call(model="gemini-2.5-flash"), gemini, 10))
    stream = stage.stream(ModelCall(routed_call(model="gpt-4.1"), gpt, 10))
    await anext(stream)
    assert (gate.model_cap.in_use, gate.provider_cap.in_use) == (1, 1)
    await stream.aclose()
    for cap in (gate.model_cap, gate.provider_cap, limits.of(gemini).model_cap):
        assert cap.in_use == 0


async def test_token_budget_reserves_input_plus_max_tokens_and_refunds_the_unused_part():
    models = dict(default_catalog().models)
    models["gpt-4.1"] = dataclasses.replace(models["gpt-4.1"], tpm=1000)
    limits = Limits(models, LimitSettings())
    gpt = models["gpt-4.1"]
    scripted = ScriptedModels({"gpt-4.1": ["x"] * 7})  # bills 1 input + 7 output tokens
    stage = LimiterStage(scripted, limits)
    call = routed_call(model="gpt-4.1")  # "hi": 5 estimated input tokens
    assert call.route is not None
    call.route = dataclasses.replace(call.route, model=gpt)
    tpm = limits.of(gpt).tpm
    assert tpm is not None
    await stage.query(ModelCall(call, gpt, 995))  # reserves 5 + 995 = 1000, the whole budget
    # the unused 1000 - 8 = 992 came back: 900 more fit at once
    assert tpm._bucket.wait_time(900) == 0.0
    with pytest.raises(ModelBusyError, match="at most 1000 tokens at once"):
        await stage.query(ModelCall(call, gpt, 2000))
