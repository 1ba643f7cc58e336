"""The gate contract: rate gates refuse at once or wait in line; concurrency gates lease slots FIFO."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from server.errors import ModelBusyError, RateLimitedError
from server.state.memory.gates import Bucket
from tests.helpers import FakeClock, until


async def at_once(backend, coro: Coroutine[Any, Any, Any]) -> Any:
    """`coro`'s result (or what it raised), given without waiting for capacity.

    In memory: run to its end without letting it wait at all. In Redis: its
    round trip is the only wait, so it must answer within a second of real time
    (every wait for capacity in these tests is longer, on the test's clock)."""
    if backend.name != "memory":
        async with asyncio.timeout(1.0):
            return await coro
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("it waited instead of answering at once")


def rate(backend, per_minute, burst, max_waiters=10, max_wait=float("inf"), clock=None):
    gates = backend.gates(max_waiters, max_wait, clock or FakeClock())
    return gates.rate("relay", per_minute, burst, error=RateLimitedError)


def cap(backend, limit=1, max_waiters=5, max_wait=10.0, clock=None):
    gates = backend.gates(max_waiters, max_wait, clock or FakeClock())
    return gates.concurrency("model x", limit)


async def test_bucket_predicts_the_wait_aiolimiter_will_impose():
    # The one real wait of this file: Bucket reads aiolimiter's private level, and only
    # aiolimiter's own sleep can show that the prediction matches what it imposes.
    bucket = Bucket(2, 1.0)  # 2 per second, bursts of 2
    await bucket.acquire(2)
    predicted = bucket.wait_time(1)
    assert predicted == pytest.approx(0.5, abs=0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bucket.acquire(1)
    assert loop.time() - started == pytest.approx(predicted, abs=0.05)
    assert Bucket(5, 1.0).wait_time(5) == 0.0


async def test_burst_is_free_then_the_deadline_decides_at_once(backend):
    clock = FakeClock()
    budget = rate(backend, per_minute=60, burst=2, clock=clock)  # 1 a second
    assert await at_once(backend, budget.acquire(1, None)) == 0.0
    assert await at_once(backend, budget.acquire(1, None)) == 0.0
    with pytest.raises(RateLimitedError) as caught:
        await at_once(
            backend, budget.acquire(1, deadline=clock.monotonic() + 0.3)
        )  # refused, not awaited
    assert caught.value.retry_after == pytest.approx(1.0, abs=0.11)
    assert "60 requests/min" in caught.value.message
    assert "deadline" in caught.value.message
    assert budget.waiters == 0


async def test_calls_without_deadline_wait_no_longer_than_max_wait(backend):
    budget = rate(backend, per_minute=60, burst=1, max_wait=0.5)
    await budget.acquire(1, None)
    with pytest.raises(RateLimitedError, match=r"exceed 0\.5 s"):
        await at_once(backend, budget.acquire(1, None))


async def test_waits_in_line_when_the_deadline_allows(backend):
    clock = FakeClock()
    budget = rate(backend, per_minute=6000, burst=1, clock=clock)  # 100 a second
    await budget.acquire(1, None)
    waiting = asyncio.create_task(budget.acquire(1, deadline=clock.monotonic() + 1.0))
    await until(lambda: budget.waiters == 1)  # queued, not refused
    await waiting  # and served once the bucket leaked
    assert budget.waiters == 0


async def test_queue_is_bounded(backend):
    budget = rate(backend, per_minute=60, burst=1, max_waiters=1)
    await budget.acquire(1, None)
    first = asyncio.create_task(budget.acquire(1, None))
    await until(lambda: budget.waiters == 1)
    with pytest.raises(RateLimitedError, match="too many calls are already waiting"):
        await at_once(backend, budget.acquire(1, None))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert budget.waiters == 0  # a cancelled waiter gives its place back


async def test_large_requests_are_not_starved_by_small_ones(backend):
    gates = backend.gates(10, float("inf"), FakeClock())
    budget = gates.rate("tokens", 6000, 10, unit="tokens", error=ModelBusyError)  # 100/s
    await budget.acquire(10, None)
    order: list[str] = []

    async def take(name: str, amount: int) -> None:
        await budget.acquire(amount, None)
        order.append(name)

    large = asyncio.create_task(take("large", 10))
    await until(lambda: budget.waiters == 1)
    smalls = [asyncio.create_task(take(f"small{i}", 1)) for i in range(3)]
    await asyncio.gather(large, *smalls)
    assert order[0] == "large"  # aiolimiter alone would serve the small ones first


async def test_an_amount_larger_than_the_burst_never_fits(backend):
    gates = backend.gates(10, float("inf"), FakeClock())
    budget = gates.rate("gpt's token budget", 1000, 1000, unit="tokens", error=ModelBusyError)
    with pytest.raises(ModelBusyError, match="at most 1000 tokens at once"):
        await at_once(backend, budget.acquire(2000, None))


async def test_refunds_make_room_again(backend):
    budget = rate(backend, per_minute=60, burst=10)
    await budget.acquire(10, None)
    with pytest.raises(RateLimitedError):
        await at_once(backend, budget.acquire(5, deadline=0.0))
    await budget.refund(5)
    assert await at_once(backend, budget.acquire(5, None)) == 0.0


async def test_concurrency_gate_hands_slots_over_in_order_and_times_out_at_the_deadline(backend):
    clock = FakeClock()
    gate = cap(backend, clock=clock)
    held = await gate.acquire(None)
    assert held.taken_at == clock.monotonic() and held.expires_at is None  # never, in memory
    order: list[int] = []
    leases = []

    async def wait(n: int) -> None:
        leases.append(await gate.acquire(None))
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await until(lambda: gate.waiters == 3)
    await gate.release(held)

    def served(count: int) -> Callable[[], bool]:
        return lambda: len(order) == count

    for count in (1, 2, 3):
        await until(served(count))
        if count < 3:
            await gate.release(leases[count - 1])
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2] and gate.in_use == 1
    with pytest.raises(ModelBusyError, match="1 calls in flight"):
        await gate.acquire(clock.monotonic() + 0.05)
    assert gate.waiters == 0
    await gate.release(leases[2])
    assert gate.in_use == 0


async def test_a_lease_gives_its_slot_back_once(backend):
    gate = cap(backend, limit=2)
    first = await gate.acquire(None)
    await gate.acquire(None)
    await gate.release(first)
    await gate.release(first)  # a second release of the same lease changes nothing
    assert gate.in_use == 1


async def test_a_cancelled_waiter_passes_a_slot_on(backend):
    gate = cap(backend)
    held = await gate.acquire(None)
    first = asyncio.create_task(gate.acquire(None))
    second = asyncio.create_task(gate.acquire(None))
    await until(lambda: gate.waiters == 2)
    await gate.release(held)  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # so the slot went on to `second`
    assert gate.in_use == 1


async def test_no_wait_at_all_once_the_deadline_passed(backend):
    clock = FakeClock()
    gate = cap(backend, clock=clock)
    await gate.acquire(None)
    with pytest.raises(ModelBusyError):
        await at_once(backend, gate.acquire(clock.monotonic() - 1))
    assert gate.waiters == 0
