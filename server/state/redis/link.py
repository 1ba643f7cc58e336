"""The one connection to Redis every shared store uses: short timeouts and a breaker.

Every operation gets `timeout` seconds (50 ms by default). When one fails
(timeout, connection refused, reset), the link goes DOWN: from then on every
store asks `link.up` (no I/O) and takes its fallback at once, so a dead or
paused Redis costs one timeout, then nothing. A background probe PINGs every
`retry_every` seconds; the first answer brings the link UP again and tells
the stores (`on_up` callbacks: replay what was queued, re-check seeding).
Degradation is logged once when it starts and once when it ends, and read by
the `switchyard.redis.degraded` gauge.

Scripts run by SHA (EVALSHA); when Redis lost them (a restart), they are
loaded again and the command is sent once more. The client is ``client.py``:
one pipelined connection with the hiredis parser, chosen by CPU per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from server.clock import SYSTEM_CLOCK, Clock
from server.settings import RedisSettings
from server.settings.database import redact
from server.state.redis.client import RedisClient, ReplyError

log = logging.getLogger("switchyard")
T = TypeVar("T")


class Closable(Protocol):
    """A connection its owner can close."""

    def close(self) -> None: ...


class RedisDownError(Exception):
    """Redis did not answer (in time): the caller takes its fallback."""


# Error replies that say Redis cannot serve now (not that a command was wrong).
_UNAVAILABLE = ("LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "NOAUTH", "WRONGPASS")


def _no_script(reply: object) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


class Script:
    """A Lua script, run by its SHA-1 (EVALSHA)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class RedisLink:
    """The Redis client (client.py) plus the timeout, the breaker and the probe around it."""

    __slots__ = (
        "_client",
        "_clock",
        "_down_since",
        "_fired",
        "_on_close",
        "_on_up",
        "_probe",
        "_retry_every",
        "_scripts",
        "_shown",
        "_timeout",
        "failures",
        "prefix",
    )

    def __init__(
        self,
        settings: RedisSettings,
        clock: Clock = SYSTEM_CLOCK,
        *,
        retry_every: float = 0.5,
    ) -> None:
        self._client = RedisClient(settings.url, settings.timeout, self._sources)
        self._timeout = settings.timeout
        self._clock = clock
        self._retry_every = retry_every
        self._down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._on_up: list[Callable[[], Awaitable[None]]] = []
        self._on_close: list[Callable[[], Awaitable[None]]] = []
        self._scripts: dict[str, Script] = {}
        self._fired: set[asyncio.Task[None]] = set()
        self._shown = redact(settings.url)
        self.prefix = settings.prefix
        self.failures = 0  # operations that failed since start-up

    @property
    def up(self) -> bool:
        """Is Redis answering, as far as the last operation showed? (No I/O.)"""
        return self._down_since is None

    @property
    def shown(self) -> str:
        """The URL without its password, for logs."""
        return self._shown

    def on_up(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call `callback` each time Redis answers again after being down."""
        self._on_up.append(callback)

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call `callback` when the link closes (before its connection does)."""
        self._on_close.append(callback)

    def _sources(self) -> list[str]:
        return [script.source for script in self._scripts.values()]

    def script(self, source: str) -> Script:
        """A Lua script known to this link (loaded again whenever Redis lost it)."""
        script = Script(source)
        self._scripts[script.sha] = script
        return script

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA `script` within the timeout; RedisDownError when Redis does not answer.

        `call` inlined: this is the path of every admission and cache lookup.
        """
        if self._down_since is not None:
            raise RedisDownError("redis is down")
        try:
            try:
                return await self._client.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except ReplyError as error:
                if not _no_script(error):
                    raise
            await self._load_scripts()  # Redis lost its scripts (a restart): once more
            return await self._client.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError as error:
            if not str(error).startswith(_UNAVAILABLE):
                raise  # a script's own error: a bug, not an outage
            self._went_down(error)
            raise RedisDownError(str(error).split(" ", 1)[0]) from None
        except (TimeoutError, ConnectionError, OSError) as error:
            self._went_down(error)
            raise RedisDownError(str(error) or type(error).__name__) from None

    def fire(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        on_failure: Callable[[], None] | None = None,
        on_reply: Callable[[Any], None] | None = None,
    ) -> None:
        """EVALSHA `script` without waiting for its answer (a give-back, a cache write).

        The command is written at once, so anything sent after it by this process
        reaches Redis after it (one connection, in order). A failure marks the link
        down like any other and calls `on_failure`; a script Redis lost is loaded and
        sent again.
        """
        if self._down_since is not None:
            if on_failure is not None:
                on_failure()
            return

        def done(reply: Any) -> None:
            if not isinstance(reply, BaseException):
                if on_reply is not None:
                    on_reply(reply)
                return
            if isinstance(reply, ReplyError) and not str(reply).startswith(_UNAVAILABLE):
                if _no_script(reply):
                    task = asyncio.get_running_loop().create_task(
                        self._fire_later(script, keys, args)
                    )
                    self._fired.add(task)
                    task.add_done_callback(self._fired.discard)
                else:
                    log.error("redis: a script failed: %s", reply)
                return
            self._went_down(reply)
            if on_failure is not None:
                on_failure()

        self._client.send_then(done, "EVALSHA", script.sha, len(keys), *keys, *args)

    async def _fire_later(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> None:
        with contextlib.suppress(RedisDownError):
            await self.run(script, keys, args)

    async def batch(
        self, calls: Sequence[tuple[Script, Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Several scripts in one round trip (one write, replies in order), within the timeout."""
        commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args in calls]

        async def execute() -> list[Any]:
            results = await self._client.pipeline(commands)
            if any(_no_script(result) for result in results):
                await self._load_scripts()
                results = await self._client.pipeline(commands)
            for result in results:
                if isinstance(result, ReplyError):
                    raise result
            return results

        return await self.call(execute)

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            await self._client.call("SCRIPT", "LOAD", script.source)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation within the timeout, or mark the link down."""
        if self._down_since is not None:
            raise RedisDownError("redis is down")
        try:
            return await operation()  # each command has the timeout (see client.py)
        except ReplyError as error:
            if not str(error).startswith(_UNAVAILABLE):
                raise  # a script's own error: a bug, not an outage
            self._went_down(error)
            raise RedisDownError(str(error).split(" ", 1)[0]) from None
        except (TimeoutError, ConnectionError, OSError) as error:
            self._went_down(error)
            raise RedisDownError(str(error) or type(error).__name__) from None

    def _went_down(self, error: BaseException) -> None:
        self.failures += 1
        if self._down_since is not None:
            return
        self._down_since = self._clock.monotonic()
        kind = "did not answer within" if isinstance(error, TimeoutError) else "failed within"
        if isinstance(error, TimeoutError):
            # A frozen Redis: drop the connection, whose replies would come late and in bulk.
            self._client.drop()
        log.warning(
            "redis: %s %s %g ms (%s); DEGRADED until it answers: budgets refuse tenants with"
            " a budget, limits and slots are this replica's share, the cache and circuit"
            " breakers are local",
            self._shown,
            kind,
            self._timeout * 1000,
            type(error).__name__,
        )
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self._retry_every)  # real time
            try:
                await self._client.call("PING")
            except (TimeoutError, ReplyError, OSError):
                self._client.drop()  # a fresh connection for the next try
                continue
            break
        down_for = self._clock.monotonic() - (self._down_since or 0.0)
        self._down_since = None
        log.warning(
            "redis: %s answers again after %.1f s; shared state resumed", self._shown, down_for
        )
        for callback in self._on_up:
            try:
                await callback()
            except RedisDownError:
                continue  # down again; the next recovery calls it again
            except Exception:  # one store's recovery must not stop the others'
                log.exception("redis: a store failed to resume")

    async def exists(self, key: str) -> bool:
        """Does `key` exist? (RedisDownError when Redis does not answer.)"""
        return bool(await self.call(lambda: self._client.call("EXISTS", key)))

    async def get(self, key: str) -> bytes | None:
        """GET `key`."""
        value = await self.call(lambda: self._client.call("GET", key))
        assert value is None or isinstance(value, bytes)
        return value

    async def delete(self, key: str) -> None:
        """DEL `key`."""
        await self.call(lambda: self._client.call("DEL", key))

    async def set_for(self, key: str, value: float | str, seconds: float) -> None:
        """SET `key` to `value`, expiring after `seconds`."""
        milliseconds = max(int(seconds * 1000), 1)
        await self.call(lambda: self._client.call("SET", key, value, "PX", milliseconds))

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET `keys`."""
        return list(await self.call(lambda: self._client.call("MGET", *keys)))

    async def scan(self, pattern: str, count: int = 1000) -> AsyncIterator[list[bytes]]:
        """The keys matching `pattern`, a batch per SCAN round trip (each within the timeout)."""
        cursor: bytes | int = 0
        while True:
            command = ("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            cursor, keys = await self.call(functools.partial(self._client.call, *command))
            yield keys
            if cursor in (b"0", 0):
                return

    async def watch(
        self, prefix: str, on_message: Callable[[Any], None], on_lost: Callable[[], None]
    ) -> Closable:
        """A connection of its own hearing of each change under `prefix` (see
        `RedisClient.watch`); RedisDownError when Redis does not answer, ReplyError when
        it refuses key tracking. Not the link's breaker: the caller retries."""
        try:
            return await self._client.watch(prefix, on_message, on_lost)
        except (TimeoutError, ConnectionError, OSError) as error:
            raise RedisDownError(str(error) or type(error).__name__) from None

    async def ping(self) -> None:
        """Raise RedisDownError unless Redis answers now."""
        await self.call(lambda: self._client.call("PING"))

    async def check(self) -> None:
        """At start-up: does Redis answer? (It need not; the stores degrade if not.)"""
        try:
            await self.ping()
        except RedisDownError:
            return
        log.info("redis: shared state in %s", self._shown)

    async def aclose(self) -> None:
        """Stop the probe and close the connections."""
        for callback in self._on_close:
            await callback()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._client.aclose()
