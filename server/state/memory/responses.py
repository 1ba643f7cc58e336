"""The response store in this process's memory: an LRU bounded by entries, bytes and age.

Bytes are estimated (text sizes plus a fixed overhead per entry), which is
what bounding memory needs; the estimate is computed once, at insert. See
``server/state/responses.py`` for the key and the contract.
"""

from __future__ import annotations

from collections import OrderedDict

from server.clock import SYSTEM_CLOCK, Clock
from server.settings import CacheSettings
from server.state.responses import CachedAnswer, CacheKey, CacheStats

ENTRY_OVERHEAD = 512  # bytes of bookkeeping per entry: dict slot, tuples, objects


class _Entry:
    __slots__ = ("answer", "expires", "size")

    def __init__(self, answer: CachedAnswer, expires: float, size: int) -> None:
        self.answer = answer
        self.expires = expires
        self.size = size


class MemoryResponseStore:
    """An LRU map of CacheKey -> CachedAnswer, bounded by entries, bytes and age."""

    __slots__ = (
        "_bytes",
        "_clock",
        "_entries",
        "_evictions",
        "_hits",
        "_max_bytes",
        "_max_entries",
        "_misses",
        "_ttl",
    )

    shared = False  # one process's: identical calls in flight are the cache stage's

    def __init__(self, settings: CacheSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self._ttl = settings.ttl
        self._max_entries = settings.max_entries
        self._max_bytes = settings.max_bytes
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    async def get(self, key: CacheKey) -> CachedAnswer | None:
        """The live answer for `key` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > self._clock.monotonic():
                self._entries.move_to_end(key)
                self._hits += 1
                return entry.answer
            self._drop(key)
        self._misses += 1
        return None

    async def peek(self, key: CacheKey) -> bool:
        """Is a live answer stored for `key`? Changes no order and no counter."""
        entry = self._entries.get(key)
        return entry is not None and entry.expires > self._clock.monotonic()

    async def put(self, key: CacheKey, answer: CachedAnswer) -> bool:
        """Store (or replace) the answer for `key`; False when it is too large to keep."""
        size = entry_size(key, answer)
        if key in self._entries:
            self._drop(key)
        if size > self._max_bytes:
            return False
        self._entries[key] = _Entry(answer, self._clock.monotonic() + self._ttl, size)
        self._bytes += size
        entries = self._entries
        while len(entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(entries)))
            self._evictions += 1
        return True

    def stats(self) -> CacheStats:
        """Counters since start-up."""
        return CacheStats(
            len(self._entries), self._bytes, self._hits, self._misses, self._evictions
        )

    def lead(self, key: CacheKey) -> None:
        """Nothing to say: no other replica shares this store."""

    def landed(self, key: CacheKey, answer: CachedAnswer | None = None) -> None:
        """Nothing to say: no other replica shares this store."""

    async def elsewhere(self, key: CacheKey, within: float) -> CachedAnswer | None:
        """No other replica: identical calls of this process are the stage's flights."""
        return None

    def _drop(self, key: CacheKey) -> None:
        self._bytes -= self._entries.pop(key).size


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def entry_size(key: CacheKey, answer: CachedAnswer) -> int:
    tenant, model, _, _, _, stop, _, roles, messages = key
    size = ENTRY_OVERHEAD + _text_bytes(tenant) + len(model) + len(roles) * 16
    for text in (*stop, answer.content):
        size += _text_bytes(text)
    for message in messages:
        if isinstance(message, str):
            size += _text_bytes(message)
        else:
            size += sum(_text_bytes(part) for part in message)
    return size
