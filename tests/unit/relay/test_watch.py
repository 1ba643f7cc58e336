"""The watch that keeps unary relay requests' time limits with one timer."""

import asyncio
import time

import pytest

from server.relay.watch import EXPIRED_SILENT, EXPIRED_TOTAL, TICK, RequestWatch


async def _watched(watch: RequestWatch, silence: float, limit: float, heard_every: float = 0):
    """Wait (hearing from the relay every `heard_every` s, if set) until cancelled;
    what the watch says of it, and how long it took."""
    started = time.monotonic()
    watched = watch.watch(silence, limit)
    try:
        while True:
            await asyncio.sleep(heard_every or 60)
            watched.heard()
    except asyncio.CancelledError:
        if not watched.timed_out():
            raise
        return watched.expired, time.monotonic() - started
    finally:
        watch.done(watched)


async def test_silence_and_the_limit_in_all_cancel_the_request_soon_after():
    watch = RequestWatch()
    silent = asyncio.create_task(_watched(watch, 0.1, 5.0))
    talkative = asyncio.create_task(_watched(watch, 0.1, 0.3, heard_every=0.02))
    (why_silent, silent_after), (why_total, total_after) = await asyncio.gather(silent, talkative)
    assert why_silent == EXPIRED_SILENT
    assert 0.1 <= silent_after < 0.1 + 5 * TICK
    assert why_total == EXPIRED_TOTAL  # heard from all along, still over its 0.3 s
    assert 0.3 <= total_after < 0.3 + 5 * TICK
    assert watch.watching == 0


async def test_the_timer_runs_only_while_requests_are_in_flight():
    watch = RequestWatch()
    assert not watch.ticking
    watched = watch.watch(1.0, 1.0)
    assert watch.ticking
    watch.done(watched)
    await asyncio.sleep(3 * TICK)
    assert not watch.ticking  # one look found nothing to watch: no timer left behind
    await asyncio.sleep(0)


async def test_a_request_that_ends_in_time_is_never_cancelled():
    watch = RequestWatch()
    task = asyncio.current_task()
    assert task is not None
    for _ in range(3):
        watched = watch.watch(0.05, 0.05)
        await asyncio.sleep(0.01)
        watch.done(watched)
    await asyncio.sleep(0.1)  # past every limit: nothing watched, nothing cancelled
    assert task.cancelling() == 0


async def test_a_cancel_from_elsewhere_stays_a_cancel():
    watch = RequestWatch()
    hung_up = asyncio.create_task(_watched(watch, 60, 60))
    await asyncio.sleep(0.01)
    hung_up.cancel()  # the caller went away: not a timeout
    with pytest.raises(asyncio.CancelledError):
        await hung_up
    # Both at once: the caller cancels, and the watch finds the request past its limit
    # before the task runs again; the caller's cancel wins.
    both = asyncio.create_task(_watched(watch, 60, 60))
    await asyncio.sleep(0.01)
    both.cancel()
    (watched,) = watch._inflight.values()
    watched.silent_at = 0.0
    watch._look()
    assert watched.expired == EXPIRED_SILENT
    assert both.cancelling() == 2
    with pytest.raises(asyncio.CancelledError):
        await both
    assert watch.watching == 0
