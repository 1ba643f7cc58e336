"""The response cache shared by every replica through Redis (contract: ``state/responses.py``).

An entry's Redis key is the SHA-256 of the cache key's canonical text (its
`repr`: strings, numbers and tuples only); the entry stores that text too and
`get` compares it, so two different calls can never share an answer even if
their digests collided. Entries expire after the TTL (judged by the gateway's clock, and PX lets
Redis drop them a little later), are refused above
the byte bound as in memory, and an LRU sorted set (last use) keeps at most
`max_entries`: a `put` beyond it evicts the least recently used in the same
script. Tenants stay apart because the tenant is part of the key.

A miss costs no round trip when the store's `KeyWatch` (``watch.py``) knows that
no replica stored the key: Redis tells every replica's watch of each entry
written, expired or evicted, so only keys it heard of are looked up in Redis.

Coalescing of identical calls in flight stays per replica (the cache stage's):
two replicas answering the same new question at once pay for it twice, as the
README says (a flight marker kept as a renewed lease would do it across
replicas without outliving a dead one; not built yet).

Failure policy: while Redis does not answer the cache is this replica's own
memory cache, so calls are still answered (from the relay on a miss).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import FinishReason, ModelSpec
from server.settings import CacheSettings
from server.state.memory.responses import MemoryResponseStore, entry_size
from server.state.redis.link import RedisDownError, RedisLink
from server.state.redis.watch import KeyWatch
from server.state.responses import CachedAnswer, CacheKey, CacheStats

# KEYS: entry, lru. ARGV: now_ms. The entry, with its last use moved to now.
GET = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1]) end
return v
"""

# KEYS: entry, lru. ARGV: value, ttl_ms, now_ms, max_entries. Stores, then evicts the
# least recently used (and the lru's members whose entries expired). Returns
# {entries, evicted}.
PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
local evicted = 0
if over > 0 then
  for _, key in ipairs(redis.call('ZPOPMIN', KEYS[2], over)) do
    if evicted % 2 == 0 then redis.call('DEL', key) end
    evicted = evicted + 1
  end
  evicted = evicted / 2
end
return {redis.call('ZCARD', KEYS[2]), evicted}
"""


# KEYS: entry, lru. An expired entry goes (by the gateway's clock). Returns the entries left.
DROP = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('ZCARD', KEYS[2])
"""


_NAMED_MAX = 4096  # missed keys remembered for their put (more in flight: computed again)


class RedisResponseStore:
    """Finished answers in Redis, for every replica (see the module)."""

    __slots__ = (
        "_clock",
        "_drop",
        "_entries",
        "_evictions",
        "_get",
        "_hits",
        "_link",
        "_local",
        "_lru",
        "_max_bytes",
        "_max_entries",
        "_misses",
        "_models",
        "_named",
        "_prefix",
        "_put",
        "_ttl_ms",
        "_watch",
    )

    def __init__(
        self,
        link: RedisLink,
        settings: CacheSettings,
        models: Mapping[str, ModelSpec],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._link = link
        self._local = MemoryResponseStore(settings, clock)
        self._models = models
        self._clock = clock
        self._ttl_ms = max(int(settings.ttl * 1000), 1)
        self._max_entries = settings.max_entries
        self._max_bytes = settings.max_bytes
        self._prefix = f"{link.prefix}cache:"
        self._lru = f"{link.prefix}cache-lru"
        self._get = link.script(GET)
        self._put = link.script(PUT)
        self._drop = link.script(DROP)
        self._hits = self._misses = self._evictions = self._entries = 0
        # A missed key's name and text, kept for its `put` (the same key object comes back
        # when the answer is stored): one repr and digest per call, not two. Calls that
        # fail store nothing, so the map is cleared when it grows past a bound.
        self._named: dict[int, tuple[CacheKey, str, str]] = {}
        # The names that may be in Redis: a lookup of any other is a miss with no round
        # trip (``watch.py``). An entry lives its TTL plus PX's second of slack.
        self._watch = KeyWatch(
            link,
            self._prefix,
            horizon=settings.ttl + 2.0,
            bound=2 * settings.max_entries,
            clock=clock,
        )

    @property
    def watch(self) -> KeyWatch:
        """What this replica knows of the names in Redis (read by tests and gauges)."""
        return self._watch

    def _key(self, key: CacheKey) -> tuple[str, str]:
        text = repr(key)
        return self._prefix + hashlib.sha256(text.encode()).hexdigest(), text

    def _remember(self, key: CacheKey, name: str, text: str) -> None:
        if len(self._named) >= _NAMED_MAX:
            self._named.clear()
        self._named[id(key)] = (key, name, text)

    def _recall(self, key: CacheKey) -> tuple[str, str]:
        named = self._named.pop(id(key), None)
        if named is not None and named[0] is key:
            return named[1], named[2]
        return self._key(key)

    async def get(self, key: CacheKey) -> CachedAnswer | None:
        """The live answer for `key` (its last use now), or None."""
        if not self._link.up:
            return await self._local.get(key)
        name, text = self._key(key)
        watch = self._watch
        if watch.absent(name):  # no replica stored it: a miss without asking
            self._misses += 1
            self._remember(key, name, text)
            return None
        watch.start()  # at the first lookup (a no-op after it)
        try:
            raw = await self._link.run(self._get, [name, self._lru], [self._clock.wall() * 1000])
        except RedisDownError:
            return await self._local.get(key)
        answer = self._decode(raw, text, self._clock.wall())
        if answer is None:
            self._misses += 1
            self._remember(key, name, text)
            if raw is None:
                watch.forget(name)
            else:  # expired (or another call's): drop it
                with contextlib.suppress(RedisDownError):
                    self._entries = int(await self._link.run(self._drop, [name, self._lru], []))
        else:
            self._hits += 1
            watch.heard(name)  # in use: kept among the names longest
        return answer

    def _decode(self, raw: object, text: str, now: float) -> CachedAnswer | None:
        if not isinstance(raw, bytes):
            return None
        entry = orjson.loads(raw)
        model = self._models.get(entry["m"])
        if entry["k"] != text or model is None or entry["x"] <= now:
            return None  # another call's entry, a model gone, or expired (by this clock)
        return CachedAnswer(entry["c"], model, FinishReason(entry["f"]), entry["$"])

    async def peek(self, key: CacheKey) -> bool:
        """Is a live answer stored for `key`? (No counter and no order changes.)"""
        if not self._link.up:
            return await self._local.peek(key)
        name, text = self._key(key)
        if self._watch.absent(name):
            return False
        try:
            raw = await self._link.get(name)
        except RedisDownError:
            return await self._local.peek(key)
        return self._decode(raw, text, self._clock.wall()) is not None

    async def put(self, key: CacheKey, answer: CachedAnswer) -> bool:
        """Store the answer for every replica; False when it is too large to keep."""
        if entry_size(key, answer) > self._max_bytes:
            return False
        if not self._link.up:
            return await self._local.put(key, answer)
        name, text = self._recall(key)
        self._watch.heard(name)  # at once: this replica's next lookup must not skip it
        value = orjson.dumps(
            {
                "k": text,
                "c": answer.content,
                "m": answer.model.name,
                "f": answer.finish_reason.value,
                "$": answer.cost,
                "x": self._clock.wall() + self._ttl_ms / 1000,  # expiry, on the gateway's clock
            }
        )
        # Written, not waited for: the caller has its answer already.
        self._link.fire(
            self._put,
            [name, self._lru],
            [value, self._ttl_ms + 1000, self._clock.wall() * 1000, self._max_entries],
            on_reply=self._stored,
        )
        return True

    def _stored(self, reply: Any) -> None:
        entries, evicted = reply
        self._entries = int(entries)
        self._evictions += int(evicted)

    def stats(self) -> CacheStats:
        """This replica's counters; entries as Redis last reported them (no I/O here)."""
        local = self._local.stats()
        return CacheStats(
            self._entries + local.entries,
            local.bytes,
            self._hits + local.hits,
            self._misses + local.misses,
            self._evictions + local.evictions,
        )
