"""TempRedis itself (tests/redis_server.py): it serves, freezes, thaws, dies and comes back
empty on the same port, as the tests of Redis-backed stores will rely on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.redis_server import TempRedis, redis_server_bin

pytestmark = pytest.mark.skipif(
    redis_server_bin() is None, reason="redis-server is not installed: run `make redis-deps`"
)


@pytest.fixture
def own_redis() -> Iterator[TempRedis]:
    """A server of this test's own: it is paused, killed and restarted."""
    with TempRedis() as server:
        yield server


async def test_set_get_pause_resume_restart(own_redis: TempRedis) -> None:
    assert own_redis.url == f"redis://127.0.0.1:{own_redis.port}/0"
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=0.05)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"

        own_redis.pause()
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.get("k")
        assert time.monotonic() - started < 1.0  # the 50 ms timeout, not a hang

        own_redis.resume()
        assert await client.get("k") == b"v"

        port = own_redis.port
        own_redis.restart()
        assert own_redis.port == port
        with contextlib.suppress(RedisConnectionError):
            await client.get("k")  # the pooled connection died with the old server
        assert await client.get("k") is None  # a fresh connection: back, and empty
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def test_kill_is_an_outage_until_restart(own_redis: TempRedis) -> None:
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=0.5)
    try:
        await client.set("k", "v")
        own_redis.kill()
        assert not own_redis.running
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        own_redis.restart()
        assert await client.get("k") is None
    finally:
        await client.aclose()


async def test_stop_while_paused_does_not_hang() -> None:
    server = TempRedis()
    server.start()
    server.pause()
    server.stop()
    assert not server.running
    assert not server.root.exists()


async def test_redis_url_fixture_is_flushed(redis_url: str, redis_server: TempRedis) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
        await client.set("left-behind", "1")
        redis_server.flushall()
        assert await client.dbsize() == 0
    finally:
        await client.aclose()
