"""The response store contract: TTL, replacing, and peeks that change nothing."""

import time

from server.settings import CacheSettings
from tests.helpers import FakeClock, until

from .test_response_key import answer, key_of


async def test_ttl_with_an_injected_clock(backend):
    clock = FakeClock()
    cache = backend.responses(CacheSettings(ttl=60), clock)
    key = key_of(prompt="hi")
    await cache.put(key, answer())
    clock.advance(59.999)
    assert await cache.get(key) == answer()
    clock.advance(0.001)
    assert await cache.get(key) is None and not await cache.peek(key)
    assert cache.stats().entries == 0 and cache.stats().bytes == 0


async def test_put_replaces_and_peek_changes_nothing(backend):
    cache = backend.responses(CacheSettings(), FakeClock())
    key = key_of(prompt="hi")
    await cache.put(key, answer("old"))
    await cache.put(key, answer("new"))
    # Redis reports its count when the write is answered (a put does not wait for it).
    await until(lambda: cache.stats().entries == 1, within=2)
    assert await cache.peek(key) and cache.stats().hits == 0
    found = await cache.get(key)
    assert found is not None and found.content == "new"
    assert cache.stats().hits == 1


async def test_a_flight_that_landed_leaves_nothing_to_wait_for(backend):
    cache = backend.responses(CacheSettings(), FakeClock())
    assert cache.shared is (backend.name == "redis")  # only a shared store has other replicas
    key = key_of(prompt="led and landed")
    assert await cache.get(key) is None
    if cache.shared:
        await until(lambda: cache.watch.synced)
    cache.lead(key)
    if cache.shared:  # its own mark reaches its watch too, as another replica's would
        marker = cache._named_key(key)[0] + ":f"
        await until(lambda: cache.watch.known(marker), within=2)
    cache.landed(key)  # no answer to hand over
    started = time.monotonic()
    assert await cache.elsewhere(key, 5.0) is None  # nobody asks it now: lead, at once
    assert time.monotonic() - started < 1.0
    assert cache.stats().hits == 0
