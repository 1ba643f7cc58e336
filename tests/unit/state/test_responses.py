"""The response store contract: TTL, replacing, and peeks that change nothing."""

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
