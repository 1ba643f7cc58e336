"""The cache's key watch: a miss nobody could answer costs no round trip, and the
watch never hides an entry another replica stored (against the tests' real Redis)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable

import redis

from server.catalog import default_catalog
from server.settings import CacheSettings, RedisSettings
from server.state.redis.link import RedisLink
from server.state.redis.responses import RedisResponseStore
from server.state.redis.watch import KeyWatch
from server.state.responses import CacheKey
from tests.helpers import FakeClock, until
from tests.redis_server import TempRedis

from .test_response_key import answer, key_of

_prefixes = itertools.count()
MODELS = {model.name: model for model in default_catalog().models.values()}


def _replicas(url: str, n: int = 2) -> list[RedisResponseStore]:
    """`n` replicas' cache stores on one Redis and one prefix, each with its own link."""
    prefix = f"w{next(_prefixes)}:"
    return [
        RedisResponseStore(
            RedisLink(RedisSettings(url=url, prefix=prefix)), CacheSettings(), MODELS
        )
        for _ in range(n)
    ]


async def _close(*stores: RedisResponseStore) -> None:
    for store in stores:
        await store._link.aclose()


def _lookups(url: str) -> int:
    """EVALSHA commands Redis has run so far (every cache lookup is one)."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _finds(store: RedisResponseStore, key: CacheKey) -> Callable[[], Awaitable[bool]]:
    """A predicate for `until`: does `store` serve an answer for `key`?"""

    async def found() -> bool:
        return await store.get(key) is not None

    return found


async def _synced(store: RedisResponseStore) -> None:
    await store.get(key_of(prompt="start the watch"))
    await until(lambda: store.watch.synced)


async def test_misses_nobody_stored_ask_nothing_and_an_entry_from_another_replica_is_found(
    redis_url: str,
):
    writer, reader = _replicas(redis_url)
    try:
        await _synced(reader)
        before = _lookups(redis_url)
        for i in range(50):
            assert await reader.get(key_of(prompt=f"never asked {i}")) is None
        assert _lookups(redis_url) == before  # 50 misses, no round trip
        assert reader.stats().misses == 51

        key = key_of(prompt="What is the capital of France?")
        assert await writer.put(key, answer("Paris."))
        await until(_finds(reader, key), within=2)  # heard of within a loopback hop
        found = await reader.get(key)
        assert found is not None and found.content == "Paris."
        assert _lookups(redis_url) > before  # a name heard of is looked up in Redis
    finally:
        await _close(writer, reader)


async def test_entries_stored_before_the_watch_started_are_found(redis_url: str):
    writer, reader = _replicas(redis_url)
    try:
        key = key_of(prompt="stored first")
        await writer.put(key, answer("early"))
        await until(lambda: writer.stats().entries == 1, within=2)
        await _synced(reader)  # its SCAN found the entry
        assert not reader.watch.absent(writer._recall(key)[0])
        found = await reader.get(key)
        assert found is not None and found.content == "early"
    finally:
        await _close(writer, reader)


async def test_a_lost_watch_or_a_flush_watches_again_and_hides_nothing(
    redis_server: TempRedis, redis_url: str
):
    writer, reader = _replicas(redis_url)
    try:
        await _synced(reader)
        with redis.Redis.from_url(redis_url) as client:
            assert client.client_kill_filter(_type="pubsub") >= 1
        await until(lambda: not reader.watch.synced, within=2)
        key = key_of(prompt="written while the watch reconnects")
        await writer.put(key, answer("kept"))
        await until(lambda: reader.watch.synced, within=5)
        found = await reader.get(key)
        assert found is not None and found.content == "kept"

        redis_server.flushall()  # every entry gone: the watch starts over
        assert await reader.get(key) is None
        again = key_of(prompt="written after the flush")
        await writer.put(again, answer("fresh"))
        await until(_finds(reader, again), within=5)
        assert await reader.get(key) is None
    finally:
        await _close(writer, reader)


async def test_a_redis_that_refuses_tracking_leaves_every_lookup_to_redis(redis_url: str, caplog):
    with redis.Redis.from_url(redis_url) as client:
        client.acl_setuser(
            "no-client",
            enabled=True,
            passwords=["+watch-test-password"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-client"],
        )
    host_port = redis_url.split("//", 1)[1]
    url = f"redis://no-client:watch-test-password@{host_port}"
    writer, reader = _replicas(url)
    try:
        with caplog.at_level(logging.INFO, logger="switchyard"):
            await reader.get(key_of(prompt="start the watch"))
            await until(lambda: "key tracking refused" in caplog.text, within=5)
        assert "watch-test-password" not in caplog.text
        key = key_of(prompt="shared without a watch")
        await writer.put(key, answer("still shared"))
        await until(_finds(reader, key), within=2)
        assert not reader.watch.synced
    finally:
        await _close(writer, reader)
        with redis.Redis.from_url(redis_url) as client:
            client.acl_deluser("no-client")


class _Link:
    """What a KeyWatch asks of its link before it watches (nothing here watches)."""

    def on_up(self, _callback: object) -> None: ...

    def on_close(self, _callback: object) -> None: ...


def test_names_are_bounded_and_age_out():
    clock = FakeClock()
    watch = KeyWatch(_Link(), "p:", horizon=10.0, bound=3, clock=clock)  # type: ignore[arg-type]
    watch.synced = True  # as after its SCAN
    for name in "abcd":
        watch.heard(name)
    assert watch.size == 3 and watch.absent("a") and not watch.absent("d")
    watch.heard("b")  # found again: kept longest
    clock.advance(10.5)
    watch.heard("e")  # the oldest ("c", past the horizon) goes
    assert watch.absent("c") and not watch.absent("b")
    watch.forget("e")
    assert watch.absent("e")
    watch.synced = False
    assert not watch.absent("zzz")  # unsynchronised: it cannot tell, so it never says absent
