"""Which keys under a prefix may exist in Redis, known without asking it.

The response cache's common case is a miss (a question nobody asked yet), and
asking Redis about it cost every cacheable call one awaited round trip before
its admission. A `KeyWatch` answers "certainly absent" locally instead, from
Redis's client-side caching in broadcast mode (``CLIENT TRACKING ... BCAST
PREFIX``): a connection of its own hears of every key written, expired,
evicted or deleted under the prefix, by any replica, and the watch keeps the
names it heard of. A name it never heard of since it synchronised is not in
Redis; a name it did hear of may be, and the store asks Redis as before (and
`forget`s the name when Redis has nothing).

* Synchronised means: the connection is subscribed, and a SCAN of the prefix
  made after subscribing has added the keys that existed already. Until then
  (start, reconnect, a flushed database, Redis answering again after an
  outage) `absent` is False for every name, so the store asks Redis: the
  watch only ever saves round trips, it never hides an entry.
* A change reaches the watch one loopback hop after Redis made it (Redis
  sends a turn's invalidations together, before it sleeps). A call that looks
  in that instant misses an answer another replica has just stored, exactly
  as if it had asked a moment before that store: it goes to the relay.
* Names are dropped `horizon` seconds after they were last heard of or found
  (an entry lives at most its TTL, plus the slack of its PX), and the oldest
  go first beyond `bound` names. A dropped name whose entry is still in Redis
  (stored long ago, kept by hits on other replicas) costs one relay call,
  whose answer is stored again and heard of again; it is never a wrong answer.
* A Redis that refuses tracking (before 6, or an ACL without CLIENT) leaves the
  watch unsynchronised for good, logged once: every lookup asks Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from server.clock import SYSTEM_CLOCK, Clock
from server.state.redis.client import ReplyError
from server.state.redis.link import Closable, RedisDownError, RedisLink

log = logging.getLogger("switchyard")

_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0  # seconds between tries to watch again
_GLOB = re.compile(r"([*?\[\]\\])")


class KeyWatch:
    """The names under `prefix` that may exist in Redis (see the module)."""

    __slots__ = (
        "_bound",
        "_clock",
        "_connection",
        "_horizon",
        "_link",
        "_lost",
        "_names",
        "_news",
        "_prefix",
        "_task",
        "synced",
    )

    def __init__(
        self,
        link: RedisLink,
        prefix: str,
        *,
        horizon: float,
        bound: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._link = link
        self._prefix = prefix
        self._horizon = horizon
        self._bound = max(bound, 1)
        self._clock = clock
        self._names: dict[str, float] = {}  # name -> when last heard of (oldest first)
        self._news: dict[str, list[asyncio.Future[None]]] = {}  # name -> who waits for news
        self._task: asyncio.Task[None] | None = None
        self._connection: Closable | None = None
        self._lost: asyncio.Event | None = None
        self.synced = False
        link.on_up(self._resync)
        link.on_close(self.aclose)

    def start(self) -> None:
        """Begin watching (from a running loop; again is a no-op)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._keep(), name="redis-key-watch"
            )

    def absent(self, name: str) -> bool:
        """Is `name` certainly not in Redis? (False whenever the watch cannot tell.)"""
        return self.synced and name not in self._names

    def known(self, name: str) -> bool:
        """Has the watch, synchronised, heard of `name`? (False whenever it cannot tell.)"""
        return self.synced and name in self._names

    def news(self, names: tuple[str, ...]) -> asyncio.Future[None]:
        """A future set when Redis next tells of a change to one of `names` (or the
        watch starts over); `drop_news` it when done waiting."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for name in names:
            self._news.setdefault(name, []).append(future)
        return future

    def drop_news(self, names: tuple[str, ...], future: asyncio.Future[None]) -> None:
        """Stop waiting for `news` of `names`."""
        for name in names:
            waiting = self._news.get(name)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(future)
                if not waiting:
                    del self._news[name]

    def _tell(self, waiting: list[asyncio.Future[None]]) -> None:
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def heard(self, name: str) -> None:
        """`name` may exist from now on (written, or found, by this replica or another)."""
        if self._news:
            waiting = self._news.pop(name, None)
            if waiting is not None:
                self._tell(waiting)
        names = self._names
        now = self._clock.wall()
        names.pop(name, None)
        names[name] = now
        # The oldest goes when it is past the horizon or over the bound: one per name
        # heard, which keeps the bound and lets stale names drain as new ones come.
        first = next(iter(names))
        if len(names) > self._bound or names[first] < now - self._horizon:
            del names[first]

    def forget(self, name: str) -> None:
        """Redis was asked about `name` and had nothing."""
        self._names.pop(name, None)

    @property
    def size(self) -> int:
        """Names held."""
        return len(self._names)

    def _message(self, reply: Any) -> None:
        # [b"message", b"__redis__:invalidate", [key, ...] or None (a database flushed)]
        if not isinstance(reply, list) or len(reply) != 3 or reply[0] != b"message":
            return  # a subscription's own confirmation, or nothing of ours
        keys = reply[2]
        if keys is None:  # FLUSHALL or FLUSHDB, of this database or another: look again
            self._drop_sync()
            return
        for key in keys:
            self.heard(key.decode(errors="replace"))

    def _unsync(self) -> None:
        """Stop answering `absent`; whoever waits for news looks again (it may have
        happened unheard)."""
        self.synced = False
        news, self._news = self._news, {}
        for waiting in news.values():
            self._tell(waiting)

    def _drop_sync(self) -> None:
        """Stop answering `absent` and watch again from the start (a new connection)."""
        self._unsync()
        if self._connection is not None:
            self._connection.close()  # its on_lost wakes `_keep`

    async def _resync(self) -> None:
        """Redis answers again after an outage: what changed meanwhile is unknown."""
        self._drop_sync()

    async def _keep(self) -> None:
        retry = _RETRY_FIRST
        refused = False
        while True:
            self.synced = False
            self._names.clear()
            lost = asyncio.Event()
            try:
                self._connection = await self._link.watch(self._prefix, self._message, lost.set)
                pattern = _GLOB.sub(r"\\\1", self._prefix) + "*"
                async for keys in self._link.scan(pattern):
                    for key in keys:
                        self.heard(key.decode(errors="replace"))
                self.synced = not lost.is_set()
            except ReplyError as error:
                if not refused:
                    log.info(
                        "redis: key tracking refused (%s); every cache lookup asks Redis",
                        str(error).split(" ", 1)[0],
                    )
                refused = True
                if self._connection is not None:
                    self._connection.close()
                return
            except RedisDownError:
                pass  # not now: the link's probe sees to the outage; try again below
            if self.synced:
                await lost.wait()  # watching, until the connection ends: then at once again
                self._unsync()
                retry = _RETRY_FIRST
            else:
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX)
            self.synced = False
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def aclose(self) -> None:
        """Stop watching and close the connection."""
        self.synced = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
