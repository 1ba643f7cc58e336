"""The response cache: complete answers kept for exact repeats of a call.

An answer may be reused only for a call that would have been sent to the
relay exactly as the first one was, by the same caller. The key is therefore
everything that shapes the relay request, compared by value (never by a
digest, so two different calls can never collide):

* the caller (two callers never share an entry, even for the same prompt);
* the model the router chose (the entry records the model that actually
  answered, which differs after a fallback) and whether fallback was allowed;
* the conversation, canonicalised: the `prompt` shorthand and an explicit
  last user message are the same conversation, as ``convert.py`` builds
  one list of (role, content) from either;
* every generation setting: the effective max_tokens, temperature, top_p
  and stop sequences. Labels only annotate traces and are not part of it.

Only calls with temperature 0 or unset are cacheable (others ask for
variety); only complete answers (finish reason STOP) are stored, never
errors, truncated or filtered ones. Entries live `ttl` seconds and the cache
is bounded by entry count and by bytes, evicting the least recently used::

    cache = ResponseCache(CacheSettings(ttl=3600, max_entries=10_000))
    key = cache_key(call.caller, route, request)
    cache.put(key, CachedAnswer("Paris.", model, FinishReason.STOP, cost=120_000))
    cache.get(key)  # the answer, until it expires or is evicted

Bytes are estimated (text sizes plus a fixed overhead per entry), which is
what bounding memory needs; the estimate is computed once, at insert.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from server.domain import CacheMode, FinishReason, Request, Role, RouteDecision

if TYPE_CHECKING:
    from server.catalog import ModelSpec
    from server.settings import CacheSettings

# (caller, model, max_tokens, temperature, top_p, stop, fallback, roles, contents):
# only strings, numbers and tuples of strings, so hashing runs in C over the
# strings' cached hashes (the key is hashed once per dict operation).
CacheKey: TypeAlias = tuple[
    str, str, int, float | None, float | None, tuple[str, ...], bool, str, tuple[str, ...]
]
_ROLE_CODES = {Role.SYSTEM: "s", Role.USER: "u", Role.ASSISTANT: "a"}
ENTRY_OVERHEAD = 512  # bytes of bookkeeping per entry: dict slot, tuples, objects


def cacheable(request: Request) -> bool:
    """May this request use the cache at all? (temperature 0 or unset, not bypassed)"""
    return request.cache_mode is not CacheMode.BYPASS and not request.temperature


def cache_key(caller: str, route: RouteDecision, request: Request) -> CacheKey:
    """The key of a call: see the module docstring for what it covers and why."""
    messages = request.messages
    return (
        caller,
        route.model.name,
        route.max_tokens,
        request.temperature,
        request.top_p,
        request.stop,
        request.fallback,
        "".join([_ROLE_CODES[m.role] for m in messages]),
        tuple([m.content for m in messages]),
    )


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete answer and what producing it cost."""

    content: str
    model: ModelSpec  # the model that answered
    finish_reason: FinishReason
    cost: int  # nano-dollars, every billed attempt of the call that produced it


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the cache holds and did since start-up, over all callers."""

    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int


class _Entry:
    __slots__ = ("answer", "expires", "size")

    def __init__(self, answer: CachedAnswer, expires: float, size: int) -> None:
        self.answer = answer
        self.expires = expires
        self.size = size


class ResponseCache:
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

    def __init__(
        self, settings: CacheSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = settings.ttl
        self._max_entries = settings.max_entries
        self._max_bytes = settings.max_bytes
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def get(self, key: CacheKey) -> CachedAnswer | None:
        """The live answer for `key` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires > self._clock():
                self._entries.move_to_end(key)
                self._hits += 1
                return entry.answer
            self._drop(key)
        self._misses += 1
        return None

    def peek(self, key: CacheKey) -> bool:
        """Is a live answer stored for `key`? Changes no order and no counter."""
        entry = self._entries.get(key)
        return entry is not None and entry.expires > self._clock()

    def put(self, key: CacheKey, answer: CachedAnswer) -> bool:
        """Store (or replace) the answer for `key`; False when it is too large to keep."""
        size = _size(key, answer)
        if key in self._entries:
            self._drop(key)
        if size > self._max_bytes:
            return False
        self._entries[key] = _Entry(answer, self._clock() + self._ttl, size)
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

    def _drop(self, key: CacheKey) -> None:
        self._bytes -= self._entries.pop(key).size


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _size(key: CacheKey, answer: CachedAnswer) -> int:
    caller, model, _, _, _, stop, _, roles, contents = key
    size = ENTRY_OVERHEAD + _text_bytes(caller) + len(model) + len(roles) * 16
    for text in (*stop, *contents, answer.content):
        size += _text_bytes(text)
    return size
