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


# ---- fair shares across callers ------------------------------------------------------


async def queue_up(gate, caller: str, count: int, weight: float = 1.0) -> list[asyncio.Task]:
    """`count` waiting tries of `caller`, each seen queued before the next comes (FIFO)."""
    tasks = []
    for _ in range(count):
        wanted = gate.waiters + 1
        tasks.append(asyncio.create_task(gate.acquire(None, caller, weight)))
        await until(lambda: gate.waiters == wanted)  # noqa: B023 (awaited within the turn)
    return tasks


async def test_a_freed_slot_goes_to_the_caller_holding_the_least_of_its_share(backend):
    gate = cap(backend, limit=2, max_waiters=10)
    held = [await gate.acquire(None, "greedy"), await gate.acquire(None, "greedy")]
    greedy = await queue_up(gate, "greedy", 3)  # in line first ...
    other = asyncio.create_task(gate.acquire(None, "other"))  # ... then another caller
    await until(lambda: gate.waiters == 4)
    await gate.release(held[0])
    lease = await asyncio.wait_for(other, 2)  # served before greedy's earlier waiters
    assert lease.caller == "other"
    assert not any(task.done() for task in greedy)  # greedy holds its share: it waits
    await gate.release(held[1])
    first = await asyncio.wait_for(greedy[0], 2)  # FIFO within greedy
    assert not any(task.done() for task in greedy[1:])
    for task in greedy[1:]:
        task.cancel()
    await asyncio.gather(*greedy[1:], return_exceptions=True)
    for done in (lease, first):
        await gate.release(done)
    assert (gate.in_use, gate.waiters) == (0, 0)


async def test_weights_divide_a_full_cap_between_callers(backend):
    gate = cap(backend, limit=4, max_waiters=50)
    holding = [await gate.acquire(None, "heavy", 3.0) for _ in range(4)]
    waiting = await queue_up(gate, "heavy", 12, 3.0) + await queue_up(gate, "light", 12)
    for _ in range(12):  # the oldest holder finishes; its slot is handed on
        await gate.release(holding.pop(0))
        await until(lambda: any(task.done() for task in waiting))
        served = next(task for task in waiting if task.done())
        waiting.remove(served)
        holding.append(served.result())
        # 3 : 1, though every heavy waiter came first (FIFO would serve heavy only)
        assert sorted(lease.caller for lease in holding) == ["heavy"] * 3 + ["light"]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for lease in holding:
        await gate.release(lease)
    assert (gate.in_use, gate.waiters) == (0, 0)


async def test_a_full_queue_refuses_the_caller_that_fills_it_not_the_others(backend):
    gate = cap(backend, limit=2, max_waiters=3)
    held = [await gate.acquire(None, "greedy"), await gate.acquire(None, "greedy")]
    greedy: list[asyncio.Task] = []
    while True:  # greedy queues until its next try is refused at once
        before = gate.waiters
        task = asyncio.create_task(gate.acquire(None, "greedy"))
        await until(lambda: gate.waiters > before or task.done())  # noqa: B023
        if task.done():
            break
        greedy.append(task)
    with pytest.raises(ModelBusyError, match="2 of them by caller 'greedy'"):
        await task
    other = asyncio.create_task(gate.acquire(None, "other"))  # the queue is full ...
    newest = greedy.pop()  # ... so greedy's newest waiter makes room for it
    with pytest.raises(ModelBusyError, match="2 calls in flight"):
        await asyncio.wait_for(newest, 2)
    assert not other.done()
    await gate.release(held[0])
    lease = await asyncio.wait_for(other, 2)
    assert lease.caller == "other"
    for waiting in greedy:
        waiting.cancel()
    await asyncio.gather(*greedy, return_exceptions=True)
    for done in (held[1], lease):
        await gate.release(done)
    assert (gate.in_use, gate.waiters) == (0, 0)


async def test_a_caller_past_its_share_is_told_so_when_its_wait_ends(backend):
    clock = FakeClock()
    gate = cap(backend, limit=1, max_wait=0.05, clock=clock)
    held = await gate.acquire(None, "greedy")
    with pytest.raises(ModelBusyError) as caught:
        await gate.acquire(None, "greedy")  # waits max_wait (real time, 50 ms), then refused
    assert "1 of them by caller 'greedy'" in caught.value.message
    with pytest.raises(ModelBusyError) as plain:
        await gate.acquire(clock.monotonic() - 1, "other")
    assert "of them" not in plain.value.message  # a caller holding nothing is told only busy
    await gate.release(held)


async def test_the_fair_queue_keeps_nothing_per_caller_once_its_calls_end(backend):
    gate = cap(backend, limit=2, max_waiters=10)
    for n in range(500 if backend.name == "memory" else 20):  # callers come and go, some wait
        first = await gate.acquire(None, f"caller-{n}")
        second = await gate.acquire(None, f"caller-{n}")
        third = asyncio.create_task(gate.acquire(None, f"other-{n}"))
        await until(lambda: gate.waiters == 1)
        await gate.release(first)
        await gate.release(await asyncio.wait_for(third, 2))
        await gate.release(second)
    queue = gate.line if backend.name == "redis" else gate._queue
    assert (queue.held, queue._lines) == ({}, {})
    assert (gate.in_use, gate.waiters) == (0, 0)


async def test_admit_now_takes_every_slot_and_amount_or_nothing(backend):
    # The limiter's fast path: in memory, a try whose gates are all free is admitted with
    # no await; one that would wait anywhere gets None and finds every gate as it was.
    gates = backend.gates(5, 10.0, FakeClock())
    model, provider = gates.concurrency("model x", 1), gates.concurrency("provider p", 2)
    relay = gates.rate("relay", per_minute=60, burst=2, error=RateLimitedError)
    tpm = gates.rate("tpm", per_minute=600, burst=100, unit="tokens", error=RateLimitedError)
    ticket = gates.admit_now((model, provider), ((relay, 1), (tpm, 60)), "a")
    if backend.name != "memory":
        assert ticket is None  # shared state: decided by Redis, through `admit`
        assert not gates.give_back_now(await gates.admit((model,), (), None, "a"))
        return
    assert ticket is not None
    assert ticket.waited == 0.0
    assert (model.in_use, provider.in_use, model.holding("a")) == (1, 1, 1)

    # The model's only slot is held: nothing else is taken.
    assert gates.admit_now((provider, model), ((relay, 1),), "b") is None
    assert (model.in_use, provider.in_use, provider.holding("b")) == (1, 1, 0)

    # Given back at once, with the unused tokens refunded.
    assert gates.give_back_now(ticket, ((tpm, 50),))
    assert (model.in_use, provider.in_use, model.holding("a")) == (0, 0, 0)
    # 10 of the 100 tokens stay taken: 90 fit now, 91 do not, and 91 leaves both caps free.
    assert gates.admit_now((model, provider), ((tpm, 91),), "c") is None
    assert (model.in_use, provider.in_use) == (0, 0)
    now = gates.admit_now((model,), ((tpm, 90),), "c")
    assert now is not None
    assert gates.give_back_now(now, ((tpm, 90),))  # none of it used: back to 10 taken

    # The relay's burst of 2 has one left: the second try gets None, and what it took first
    # (a slot, then the last relay unit) is given back.
    assert gates.admit_now((), ((relay, 1),), "d") is not None
    assert gates.admit_now((model,), ((tpm, 1), (relay, 1)), "d") is None
    assert model.in_use == 0
    # Its token was refunded: 90 fit again beside the 10 (they would not beside 11).
    assert gates.admit_now((model,), ((tpm, 90),), "d") is not None


async def test_admit_now_never_overtakes_a_waiter(backend):
    if backend.name != "memory":
        pytest.skip("only memory gates admit at once")
    gates = backend.gates(5, 10.0, FakeClock())
    model = gates.concurrency("model x", 1)
    first = await gates.admit((model,), (), None, "a")
    waiting = asyncio.create_task(gates.admit((model,), (), None, "b"))
    await until(lambda: model.waiters == 1)
    await gates.give_back(first)  # the slot goes to the waiter, not to a newcomer
    assert gates.admit_now((model,), (), "c") is None
    await waiting
    assert model.holding("b") == 1
