"""Identical calls on two replicas: the second waits for the first's answer, and never for
a flight that ended or a replica that died (against the tests' real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from server.domain import FinishReason
from server.state.redis.responses import FLIGHT_TTL, RedisResponseStore
from server.state.responses import CachedAnswer, CacheKey
from tests.helpers import until

from .test_redis_watch import _close, _replicas, _synced
from .test_response_key import GEMINI, answer, key_of


def _marker(store: RedisResponseStore, key: object) -> str:
    return store._named_key(key)[0] + ":f"  # type: ignore[arg-type]


async def _leading(leader: RedisResponseStore, follower: RedisResponseStore, prompt: str):
    """`leader` misses and leads `prompt`; `follower`, synchronised, has heard of it."""
    await _synced(follower)
    key = key_of(prompt=prompt)
    assert await leader.get(key) is None
    leader.lead(key)
    assert await follower.get(key) is None
    await until(lambda: follower.watch.known(_marker(follower, key)), within=2)
    return key


@contextlib.asynccontextmanager
async def _waiting(
    redis_url: str, prompt: str
) -> AsyncIterator[tuple[RedisResponseStore, RedisResponseStore, CacheKey, asyncio.Task[Any]]]:
    """A leader asking `prompt`, and a follower on another replica waiting for it."""
    leader, follower = _replicas(redis_url)
    try:
        key = await _leading(leader, follower, prompt)
        waiting = asyncio.create_task(follower.elsewhere(key, 10.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # it waits: the leader is still asking
        yield leader, follower, key, waiting
    finally:
        await _close(leader, follower)


async def test_an_identical_call_on_another_replica_is_served_the_leaders_answer(
    redis_url: str,
):
    async with _waiting(redis_url, "asked on two replicas at once") as (
        leader,
        follower,
        key,
        waiting,
    ):
        await leader.put(key, answer("Paris."))
        leader.landed(key)
        found = await asyncio.wait_for(waiting, 2)
        assert found is not None and found.content == "Paris."
        # The start-up lookup missed; this call's miss became a hit when it was served.
        assert follower.stats().hits == 1 and follower.stats().misses == 1


async def test_an_answer_too_short_to_store_is_handed_to_the_waiters_all_the_same(
    redis_url: str,
):
    async with _waiting(redis_url, "asked with a small max_tokens") as (
        leader,
        follower,
        key,
        waiting,
    ):
        truncated = CachedAnswer("The capital of", GEMINI, FinishReason.LENGTH, 90_000)
        leader.landed(key, truncated)  # not stored (not complete), but the waiter's answer
        assert await asyncio.wait_for(waiting, 2) == truncated
        assert await follower.get(key) is None  # and not in the cache
        await asyncio.sleep(1.1)  # the hand-over lasts a second: later calls ask anew
        assert await follower.elsewhere(key, 10.0) is None


async def test_a_flight_that_ends_without_an_answer_lets_the_waiter_lead(redis_url: str):
    async with _waiting(redis_url, "a call that fails") as (leader, follower, key, waiting):
        started = time.monotonic()
        leader.landed(key)  # no answer stored: the relay refused it, say
        assert await asyncio.wait_for(waiting, 2) is None
        assert time.monotonic() - started < 0.9  # woken by the news, not by a poll
        assert await follower.elsewhere(key, 10.0) is None  # and nothing to wait for now


async def test_a_dead_leaders_flight_stops_holding_others_within_its_lease(redis_url: str):
    leader, follower = _replicas(redis_url)
    try:
        key = await _leading(leader, follower, "a replica that dies while asking")
        await leader._link.aclose()  # dead: no renewal, no landing
        started = time.monotonic()
        assert await follower.elsewhere(key, 30.0) is None
        assert time.monotonic() - started < FLIGHT_TTL + 1.5
    finally:
        await _close(follower)


async def test_a_leader_is_renewed_while_it_runs_and_a_waiter_gives_up_at_its_bound(
    redis_url: str,
):
    leader, follower = _replicas(redis_url)
    try:
        key = await _leading(leader, follower, "a long answer")
        started = time.monotonic()
        # The leader is alive past its first lease: the follower waits its whole bound.
        assert await follower.elsewhere(key, FLIGHT_TTL + 1.0) is None
        assert time.monotonic() - started >= FLIGHT_TTL + 0.9
        assert follower.watch.known(_marker(follower, key))  # still marked: still asking
        leader.landed(key)
    finally:
        await _close(leader, follower)
