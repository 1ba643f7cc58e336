"""What the Redis stores do that memory never has to: leases that expire, outages, an empty Redis.

Against the tests' own redis-server, which these tests freeze (SIGSTOP), kill
and bring back empty; the contract every backend shares is in the other
files of this folder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from server.catalog import default_catalog
from server.errors import (
    BudgetStoreUnavailableError,
    BudgetUnknownError,
    ModelBusyError,
    RateLimitedError,
)
from server.settings import BreakerSettings, BudgetLimits, BudgetSettings, RedisSettings
from server.state.redis import RedisBreakers, RedisBudgetStore, RedisGates, RedisLink
from tests.helpers import until
from tests.redis_server import TempRedis

USD = 1_000_000_000


@pytest.fixture
def redis(redis_server: TempRedis, redis_url: str) -> TempRedis:
    return redis_server


@pytest.fixture
async def links(redis: TempRedis) -> AsyncIterator[list[RedisLink]]:
    """Links to open with `link(...)`, closed after the test."""
    opened: list[RedisLink] = []
    yield opened
    for link in opened:
        await link.aclose()
    if redis.paused:
        redis.resume()


def link_to(redis: TempRedis, links: list[RedisLink], **settings: float) -> RedisLink:
    opened = RedisLink(RedisSettings(url=redis.url, **settings), retry_every=0.05)  # type: ignore[arg-type]
    links.append(opened)
    return opened


async def test_a_frozen_redis_costs_one_timeout_then_nothing_and_limits_fall_back(redis, links):
    link = link_to(redis, links, timeout=0.05)
    gates = RedisGates(link, 10, 5.0, replicas=2)
    relay = gates.rate("relay", 600, 4, error=RateLimitedError)  # 2 each, while apart
    await relay.acquire(1, None)
    redis.pause()
    started = time.monotonic()
    await relay.acquire(1, None)  # times out once, then the local share admits it
    first = time.monotonic() - started
    assert 0.04 <= first < 0.5 and not link.up
    started = time.monotonic()
    await relay.acquire(1, None)  # no Redis round trip at all now
    assert time.monotonic() - started < 0.01
    with pytest.raises(RateLimitedError):  # this replica's share, 4 / 2, is spent
        await relay.acquire(1, time.monotonic() + 0.01)
    redis.resume()
    await until(lambda: link.up, within=5)  # the probe found it again, with no restart


async def test_budgets_fail_closed_while_redis_is_down_and_catch_up_after(redis, links):
    link = link_to(redis, links)
    settings = BudgetSettings(BudgetLimits(day=10 * USD), {"free": BudgetLimits()})
    budgets = RedisBudgetStore(link, settings, track_all=True)
    await budgets.seed({}, time.time())
    held = await budgets.reserve("svc", USD)
    redis.pause()
    await budgets.settle(held, 2 * USD)  # queued: Redis does not answer
    with pytest.raises(BudgetStoreUnavailableError, match=r"budget store .* unreachable"):
        await budgets.reserve("svc", USD)
    unlimited = await budgets.reserve("free", USD)  # no budget to protect: admitted
    await budgets.settle(unlimited, USD)
    redis.resume()
    await until(lambda: link.up, within=5)
    await until(lambda: not budgets._pending, within=5)
    [day] = await budgets.status("svc")
    assert day.spent == 2 * USD  # the settlement queued during the outage was written


async def test_an_empty_redis_is_seeded_again_before_budgets_admit(redis, links):
    link = link_to(redis, links)
    budgets = RedisBudgetStore(link, BudgetSettings(BudgetLimits(day=10 * USD)))
    lost: list[bool] = []
    budgets.on_lost = lambda: lost.append(True)
    await budgets.seed({"svc": (3 * USD, 3 * USD)}, time.time())
    assert budgets.seeded
    redis.kill()
    redis.restart()  # empty: no spend, no marker
    with pytest.raises((BudgetUnknownError, BudgetStoreUnavailableError)):
        await budgets.reserve("svc", USD)
    await until(lambda: link.up, within=5)
    with pytest.raises(BudgetUnknownError):
        await budgets.reserve("svc", USD)  # refused until the ledger's spend is back
    assert lost and not budgets.seeded
    await budgets.seed({"svc": (3 * USD, 3 * USD)}, time.time())  # what Stores does on_lost
    await budgets.reserve("svc", USD)
    [day] = await budgets.status("svc")
    assert day.spent == 4 * USD


async def test_slots_and_holds_of_a_replica_that_stops_renewing_come_back(redis, links):
    dead = link_to(redis, links)
    alive = link_to(redis, links)
    ttl = 3.0
    dead_gates = RedisGates(dead, 10, 5.0, lease_ttl=ttl)
    alive_gates = RedisGates(alive, 10, 5.0, lease_ttl=ttl)
    dead_cap = dead_gates.concurrency("model m", 1)
    alive_cap = alive_gates.concurrency("model m", 1)
    await dead_cap.acquire(None)
    await dead_gates.aclose()  # the replica "dies": it renews nothing any more
    with pytest.raises(ModelBusyError):
        await alive_cap.acquire(time.monotonic() + 0.2)
    started = time.monotonic()
    lease = await alive_cap.acquire(time.monotonic() + 2 * ttl)
    assert time.monotonic() - started <= ttl + 0.5
    await alive_cap.release(lease)

    budgets = RedisBudgetStore(dead, BudgetSettings(BudgetLimits(day=USD)), lease_ttl=ttl)
    other = RedisBudgetStore(alive, BudgetSettings(BudgetLimits(day=USD)), lease_ttl=ttl)
    await budgets.seed({}, time.time())
    await budgets.reserve("svc", USD)  # holds the whole day's budget
    await budgets.aclose()
    with pytest.raises(Exception, match="daily budget"):
        await other.reserve("svc", USD)
    await asyncio.sleep(ttl + 0.2)
    await other.reserve("svc", USD)  # the dead replica's hold expired


async def test_a_held_lease_is_renewed_past_its_ttl(redis, links):
    link = link_to(redis, links)
    gates = RedisGates(link, 10, 5.0, lease_ttl=3.0)
    other = RedisGates(link_to(redis, links), 10, 5.0, lease_ttl=3.0)
    lease = await gates.concurrency("model r", 1).acquire(None)
    await asyncio.sleep(4.0)  # past the ttl: renewed every second, so still held
    with pytest.raises(ModelBusyError):
        await other.concurrency("model r", 1).acquire(time.monotonic() + 0.1)
    await gates.concurrency("model r", 1).release(lease)
    await gates.aclose()


async def test_a_circuit_opened_on_one_replica_opens_on_the_other_within_a_second(redis, links):
    models = tuple(default_catalog().models.values())[:2]
    settings = BreakerSettings(failures=2, cooldown=30.0)
    one = RedisBreakers(link_to(redis, links), models, settings, poll=0.2)
    two = RedisBreakers(link_to(redis, links), models, settings, poll=0.2)
    one.start()
    two.start()
    name = models[0].name
    await one.failed(name)
    await one.failed(name)  # opens here
    started = time.monotonic()
    await until(lambda: two.snapshot(name).state.name == "OPEN", within=2)
    assert time.monotonic() - started < 1.0
    assert two.snapshot(models[1].name).state.name == "CLOSED"
    await one.aclose()
    await two.aclose()


async def test_a_refused_password_is_an_outage_logged_without_the_password(
    redis, links, caplog: pytest.LogCaptureFixture
):
    url = redis.url.replace("redis://", "redis://svc:hunter2-not-the-password@")
    link = RedisLink(RedisSettings(url=url), retry_every=0.05)
    links.append(link)
    budgets = RedisBudgetStore(link, BudgetSettings(BudgetLimits(day=USD)))
    with (
        caplog.at_level("WARNING", logger="switchyard"),
        pytest.raises(BudgetStoreUnavailableError),
    ):
        await budgets.reserve("svc", 1)
    assert not link.up
    assert "DEGRADED" in caplog.text and "svc:***@" in caplog.text
    assert "hunter2" not in caplog.text
