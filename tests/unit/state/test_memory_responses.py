"""The memory response store: LRU by entries and by estimated bytes."""

from server.settings import CacheSettings
from server.state.memory.responses import ENTRY_OVERHEAD, MemoryResponseStore
from tests.helpers import FakeClock

from .test_response_key import GEMINI, answer, key_of


async def test_lru_by_entries_keeps_the_recently_used():
    cache = MemoryResponseStore(CacheSettings(max_entries=2), FakeClock())
    a, b, c = (key_of(prompt=p) for p in ("a", "b", "c"))
    await cache.put(a, answer("A"))
    await cache.put(b, answer("B"))
    assert await cache.get(a) is not None  # a is now the most recently used
    await cache.put(c, answer("C"))
    assert await cache.peek(a) and await cache.peek(c) and not await cache.peek(b)
    assert cache.stats().evictions == 1


async def test_lru_by_bytes():
    key = key_of(prompt="p1")
    # the size estimate: overhead + caller + model name + (message + 16) + answer text
    one = ENTRY_OVERHEAD + len("svc") + len(GEMINI.name) + (2 + 16) + 1000
    cache = MemoryResponseStore(CacheSettings(max_bytes=2 * one), FakeClock())
    await cache.put(key, answer("x" * 1000))
    await cache.put(key_of(prompt="p2"), answer("y" * 1000))
    assert cache.stats().bytes == 2 * one and cache.stats().entries == 2
    await cache.put(key_of(prompt="p3"), answer("z" * 1000))
    assert not await cache.peek(key) and cache.stats().bytes == 2 * one
    # an answer larger than the whole cache is not kept, and evicts nothing
    assert not await cache.put(key_of(prompt="p4"), answer("w" * 3 * one))
    assert cache.stats().entries == 2


async def test_multibyte_text_counts_its_utf8_bytes():
    cache = MemoryResponseStore(CacheSettings(), FakeClock())
    await cache.put(key_of(prompt="안녕"), answer("서울"))  # 6 bytes each
    assert cache.stats().bytes == ENTRY_OVERHEAD + 3 + len(GEMINI.name) + (6 + 16) + 6
