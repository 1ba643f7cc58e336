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

Identical calls in flight are coalesced across replicas without a lock that
could outlive a dead one: a replica whose call misses and leads marks its
flight (`<entry>:f`, SET NX with a 5 s expiry that it renews every 1.7 s
while the call runs; sent, not waited for). The marker is under the watched
prefix, so every replica's watch hears of it; an identical call on another
replica that misses then waits for news of the entry or the marker (or polls
each second) and is served the answer the leader stores, as a hit. The
leader's PUT takes the marker away in the same script; a flight whose answer
is not stored (truncated) hands it over in the marker, for a second; one that
ends without an answer deletes it (only if still its own); a replica that dies
stops renewing, and its marker expires within 5 s. A waiting call gives up
after half its time left (30 s at most) and leads itself; two replicas that
miss in the same instant, before either marker is heard of, both ask the
relay. Without a synchronised watch (a Redis that refuses tracking, or the
moment after a reconnect) calls do not wait for other replicas.

Failure policy: while Redis does not answer the cache is this replica's own
memory cache, so calls are still answered (from the relay on a miss).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
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

# KEYS: entry, lru[, the flight's marker]. ARGV: value, ttl_ms, now_ms, max_entries[, this
# replica's id]. Ends this replica's flight (its marker, if still its own), stores, then
# evicts the least recently used (and the lru's members whose entries expired). Returns
# {entries, evicted}.
PUT = """
if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
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


# KEYS: entry, marker, lru. ARGV: now_ms. {the entry or '', the marker or ''}: a marker is
# its leader's id while it asks, or '=' and an answer handed over (one not stored).
LOOK = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[3], ARGV[1], KEYS[1]) end
return {v or '', redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: marker. ARGV: replica id, '=' and the answer, ttl_ms. The flight ended with an
# answer that is not stored (truncated): its waiters get it, for a moment.
HAND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 0
"""

# KEYS: marker. ARGV: replica id, ttl_ms. A flight's marker, unless another replica leads.
CLAIM = """
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
"""

# KEYS: markers. ARGV: replica id, ttl_ms (renew) or nothing (release). Only our own.
FLIGHTS = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    if ARGV[2] then redis.call('PEXPIRE', KEYS[i], ARGV[2]) else redis.call('DEL', KEYS[i]) end
  end
end
return 0
"""

FLIGHT_TTL = 5.0  # seconds a dead replica's flight keeps identical calls waiting, at most
_RENEW_EVERY = FLIGHT_TTL / 3
_FOLLOW_POLL = 1.0  # seconds between looks while following, with no news heard
_FOLLOW_MAX = 30.0  # seconds a call waits for another replica's answer, at most
_HANDED_MS = 1000  # how long a handed-over answer waits for its waiters to take it


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
        "_claim",
        "_clock",
        "_drop",
        "_entries",
        "_evictions",
        "_flights",
        "_get",
        "_hand",
        "_hits",
        "_id",
        "_leading",
        "_link",
        "_local",
        "_look",
        "_lru",
        "_max_bytes",
        "_max_entries",
        "_misses",
        "_models",
        "_named",
        "_prefix",
        "_put",
        "_renewer",
        "_ttl_ms",
        "_watch",
    )

    shared = True  # every replica's: identical calls wait for each other (see the module)

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
        self._look = link.script(LOOK)
        self._claim = link.script(CLAIM)
        self._flights = link.script(FLIGHTS)
        self._hand = link.script(HAND)
        self._id = f"{os.getpid()}-{os.urandom(4).hex()}"  # this replica, in flight markers
        self._leading: dict[CacheKey, str] = {}  # this replica's flights: key -> marker
        self._renewer: asyncio.Task[None] | None = None
        link.on_close(self._stop_renewing)
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
            bound=4 * settings.max_entries,  # entries and flight marks, with room
            clock=clock,
        )

    def start(self) -> None:
        """Start watching the names in Redis (at start-up; else at the first lookup)."""
        self._watch.start()

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

    def _named_key(self, key: CacheKey) -> tuple[str, str]:
        """The key's Redis name and text, as remembered by the miss of `get` (kept)."""
        named = self._named.get(id(key))
        if named is not None and named[0] is key:
            return named[1], named[2]
        return self._key(key)

    def _recall(self, key: CacheKey) -> tuple[str, str]:
        """`_named_key`, forgotten: the answer is being stored."""
        found = self._named_key(key)
        self._named.pop(id(key), None)
        return found

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
        value = self._value(text, answer)
        keys = [name, self._lru]
        now_ms = self._clock.wall() * 1000
        args: list[object] = [value, self._ttl_ms + 1000, now_ms, self._max_entries]
        marker = self._leading.pop(key, None)
        if marker is not None:  # this replica's flight ends with the answer, in one script
            keys.append(marker)
            args.append(self._id)
        # Written, not waited for: the caller has its answer already.
        self._link.fire(self._put, keys, args, on_reply=self._stored)
        return True

    # ---- identical calls across replicas ----------------------------------------------

    def lead(self, key: CacheKey) -> None:
        """Mark this replica's flight for `key` (a lease, renewed while it runs), so
        identical calls on other replicas wait for its answer. Sent, not waited for."""
        if not self._link.up:
            return
        marker = self._named_key(key)[0] + ":f"
        self._leading[key] = marker
        self._link.fire(self._claim, [marker], [self._id, int(FLIGHT_TTL * 1000)])
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="redis-cache-flights"
            )

    def landed(self, key: CacheKey, answer: CachedAnswer | None = None) -> None:
        """The flight ended; its marker goes unless `put` took it along already. An
        `answer` that was not stored is handed to the waiters instead, for a moment."""
        marker = self._leading.pop(key, None)
        if marker is None:
            return
        if answer is None or entry_size(key, answer) > self._max_bytes:
            self._link.fire(self._flights, [marker], [self._id])
            return
        value = b"=" + self._value(self._named_key(key)[1], answer)
        self._link.fire(self._hand, [marker], [self._id, value, _HANDED_MS])

    async def elsewhere(self, key: CacheKey, within: float) -> CachedAnswer | None:
        """Wait for another replica's identical call, when the watch heard of its marker
        (see the module); None at once otherwise."""
        name, text = self._named_key(key)
        marker = name + ":f"
        watch = self._watch
        if not watch.known(marker) or not self._link.up:
            return None
        loop = asyncio.get_running_loop()
        ends = loop.time() + min(within, _FOLLOW_MAX)
        names = (name, marker)
        while True:
            news = watch.news(names)
            try:
                raw, flight = await self._link.run(
                    self._look, [name, marker, self._lru], [self._clock.wall() * 1000]
                )
                now = self._clock.wall()
                answer = self._decode(raw or None, text, now)
                if answer is None and flight[:1] == b"=":
                    answer = self._decode(flight[1:], text, now)
                if answer is not None:
                    self._misses -= 1  # counted by `get`; the wait made it a hit
                    self._hits += 1
                    return answer
                left = ends - loop.time()
                if not flight:
                    watch.forget(marker)
                if not flight or left <= 0:
                    return None  # it ended without an answer, or takes too long: lead
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, _FOLLOW_POLL)):
                        await news
            except RedisDownError:
                return None
            finally:
                watch.drop_news(names, news)

    async def _renew_forever(self) -> None:
        """Every third of the flight lease, renew this replica's markers in one script."""
        while True:
            await asyncio.sleep(_RENEW_EVERY)  # real time, as the lease's expiry
            if not self._leading:
                continue
            if self._link.up:
                markers = list(self._leading.values())
                self._link.fire(self._flights, markers, [self._id, int(FLIGHT_TTL * 1000)])

    async def _stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    def _value(self, text: str, answer: CachedAnswer) -> bytes:
        """An entry as stored: the key's text, the answer, its expiry (the gateway's clock)."""
        return orjson.dumps(
            {
                "k": text,
                "c": answer.content,
                "m": answer.model.name,
                "f": answer.finish_reason.text,
                "$": answer.cost,
                "x": self._clock.wall() + self._ttl_ms / 1000,
            }
        )

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
