"""The response store: complete answers kept for exact repeats of a call.

An answer may be reused only for a call that would have been sent to the
relay exactly as the first one was, by the same tenant. The key is therefore
everything that shapes the relay request, compared by value (never by a
digest, so two different calls can never collide):

* the tenant (two tenants never share an entry, even for the same prompt);
* the model the router chose (the entry records the model that actually
  answered, which differs after a fallback) and whether fallback was allowed;
* the conversation, canonicalised: the `prompt` shorthand and an explicit
  last user message are the same conversation, as ``convert.py`` builds
  one list of messages from either; each message contributes its role and
  every one of its parts;
* every generation setting: the effective max_tokens, temperature, top_p
  and stop sequences. Labels only annotate traces and are not part of it.

Only calls with temperature 0 or unset are cacheable (others ask for
variety), and only plain ones (`Request.plain`: text parts, no tools, JSON
format or reasoning, whose answers are more than a text); only complete
answers (finish reason STOP) are stored, never errors, truncated or filtered
ones. A store bounds what it keeps (entries,
bytes, age) and evicts on its own::

    store = MemoryResponseStore(CacheSettings(ttl=3600, max_entries=10_000))
    key = cache_key(call.identity.tenant, route, request)
    await store.put(key, CachedAnswer("Paris.", model, FinishReason.STOP, cost=120_000))
    await store.get(key)  # the answer, until it expires or is evicted

Coalescing identical calls in flight is the cache stage's business
(``server/pipeline/cache.py``) within a process; across replicas a store that
is shared says which calls lead (`lead`, `landed`) and lets an identical call
wait for another replica's answer (`elsewhere`). The memory store has no other
replicas: its `elsewhere` is always None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias, assert_never

from server.domain import (
    CacheMode,
    FinishReason,
    ImagePart,
    Message,
    ModelSpec,
    Part,
    ReasoningPart,
    RedactedReasoningPart,
    Request,
    Role,
    RouteDecision,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from server.fastinit import fast_init

# A message's share of the key: the text of a one-part text message (the common
# case), else one string per part.
MessageKey: TypeAlias = "str | tuple[str, ...]"
# (tenant, model, max_tokens, temperature, top_p, stop, fallback, roles, messages):
# only strings, numbers and tuples of strings, so hashing runs in C over the
# strings' cached hashes (the key is hashed once per dict operation).
CacheKey: TypeAlias = tuple[
    str, str, int, float | None, float | None, tuple[str, ...], bool, str, tuple[MessageKey, ...]
]
_ROLE_CODES = {Role.SYSTEM: "s", Role.USER: "u", Role.ASSISTANT: "a", Role.TOOL: "t"}


def cacheable(request: Request) -> bool:
    """May this request use the cache at all? (plain, temperature 0 or unset, not bypassed)"""
    return request.cache_mode is not CacheMode.BYPASS and not request.temperature and request.plain


def cache_key(tenant: str, route: RouteDecision, request: Request) -> CacheKey:
    """The key of a call: see the module docstring for what it covers and why."""
    messages = request.messages
    return (
        tenant,
        route.model.name,
        route.max_tokens,
        request.temperature,
        request.top_p,
        request.stop,
        request.fallback,
        "".join([_ROLE_CODES[m.role] for m in messages]),
        tuple([_message_key(m) for m in messages]),
    )


def _message_key(message: Message) -> MessageKey:
    parts = message.parts
    if len(parts) == 1 and type(parts[0]) is TextPart:
        return parts[0].text
    return tuple([_part_key(part) for part in parts])


def _part_key(part: Part) -> str:
    match part:
        case TextPart(text=text):
            return text
        case ImagePart() | ToolCallPart() | ToolResultPart():
            raise AssertionError("`cacheable` admits plain requests only: text parts")
        case ReasoningPart() | RedactedReasoningPart():
            raise AssertionError("`cacheable` admits plain requests only: text parts")
        case _:
            assert_never(part)


@fast_init
@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete answer and what producing it cost."""

    content: str
    model: ModelSpec  # the model that answered
    finish_reason: FinishReason
    cost: int  # nano-dollars, every billed attempt of the call that produced it


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the store holds and did since start-up, over all tenants."""

    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int


class ResponseStore(Protocol):
    """Where finished answers are kept for repeats."""

    # Do other replicas use this store? Only then do `lead`, `landed` and `elsewhere`
    # mean anything (the cache stage does not call them otherwise).
    shared: bool

    async def get(self, key: CacheKey) -> CachedAnswer | None:
        """The live answer for `key`, or None (counts a hit or a miss)."""
        ...

    async def peek(self, key: CacheKey) -> bool:
        """Is a live answer stored for `key`? Changes no order and no counter."""
        ...

    async def put(self, key: CacheKey, answer: CachedAnswer) -> bool:
        """Store (or replace) the answer for `key`; False when it is too large to keep."""
        ...

    def stats(self) -> CacheStats:
        """Counters since start-up, as this process saw them (read by metrics, so no I/O)."""
        ...

    def lead(self, key: CacheKey) -> None:
        """This process asks the relay for `key` now (after a miss): identical calls on
        other replicas may wait for its answer (`elsewhere`). No I/O waited for."""
        ...

    def landed(self, key: CacheKey, answer: CachedAnswer | None = None) -> None:
        """This process's call for `key` ended (after its `put`, if it had an answer to
        store); `answer`: the one it had, when it was not stored (truncated), for the
        identical calls waiting on other replicas."""
        ...

    async def elsewhere(self, key: CacheKey, within: float) -> CachedAnswer | None:
        """After a miss: the answer of an identical call in flight on another replica, once
        it stores one (within `within` seconds; a hit). None at once when no such call is
        known, or when it ended without an answer or took longer: this call leads."""
        ...
