"""A small Redis client: one pipelined connection, the hiredis parser, nothing else.

Chosen by CPU per call (``bench/redis_clients.py``): the gateway sends a few
EVALSHA per call and nothing else, and on that path redis-py's asyncio client
spends about 55 us of CPU per command (its connection pool, command
bookkeeping and RESP3 handling), valkey-glide 50 to 100 us at concurrency 1,
coredis more than redis-py; this client spends about 23 us at concurrency 1
and 12 us at 16, because every command of the process shares one connection
(Redis answers in order, so each reply resolves the oldest waiting future) and
hiredis parses the replies in C.

`RedisClient.call(*args)` sends one command and returns its reply (bytes,
int, list, None) or raises `ReplyError` for an error reply. Connecting is lazy
and happens again after the connection is lost; every command in flight when
it is lost fails with ConnectionError. `redis://` and `rediss://` (TLS) URLs,
with a user and password (AUTH) and a database number (SELECT), are accepted;
the Lua scripts the client is given are loaded on every new connection.

Each command has `timeout` seconds (TimeoutError after it). The timer is a
plain loop callback, one per connection armed for its oldest command (not one
per command, which cost a timer handle and its cancellation each), never a
cancellation of the caller:
asyncio runs a turn's I/O callbacks before its timers, so a reply that has
arrived is taken even when a busy process looks at it late; only a reply that
is really not there yet times out. (A task cancelled by `asyncio.timeout`
would lose such a reply to its timer, and a busy gateway would call a healthy
Redis down.) A command that timed out still has its reply read later, in
order, and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import hiredis

ReplyError = hiredis.ReplyError
log = logging.getLogger("switchyard")


class _Then:
    """A reply's handler for a command nobody awaits, in a future's place in the line.

    It has the three methods of a future the connection uses, and calls its handler
    at once with the reply, or with the error (TimeoutError, ConnectionError): no
    future, no done-callback and no extra loop turn for a fire-and-forget command.
    """

    __slots__ = ("_called", "_handler")

    def __init__(self, handler: Callable[[Any], None]) -> None:
        self._handler = handler
        self._called = False

    def done(self) -> bool:
        return self._called

    def set_result(self, reply: Any) -> None:
        self._called = True
        try:
            self._handler(reply)
        except Exception as error:  # a handler's bug must not break the connection's reads
            log.exception("redis: a reply handler failed (a bug): %s", type(error).__name__)

    set_exception = set_result

    def add_done_callback(self, _: Callable[[Any], None]) -> None:
        """Nothing to read later: the handler had the error."""


class _Connection(asyncio.Protocol):
    """One connection: commands written in order, each reply resolving the oldest future.

    The timeout is one timer per connection, not one per command: commands are
    answered in order and all have the same timeout, so the oldest unanswered one
    always expires first. The timer is armed for it; when it fires, the commands
    whose time is up fail with TimeoutError and it is armed again for the next.
    """

    __slots__ = (
        "_closed",
        "_corked",
        "_deadlines",
        "_loop",
        "_reader",
        "_timeout",
        "_timer",
        "_transport",
        "_unsent",
        "_waiting",
    )

    def __init__(self, timeout: float) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any] | _Then] = deque()
        self._deadlines: deque[float] = deque()  # each written command's, in `_waiting`'s order
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._corked: list[bytes] | None = None  # this turn's writes, sent at its end
        self._unsent = 0  # the replies they will have (the last of `_waiting`)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        deadlines = self._deadlines
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:  # not a Redis at the other end: drop the connection
                if self._transport is not None:
                    self._transport.close()  # connection_lost fails what is in flight
                return
            if reply is False:
                return
            future = waiting.popleft()
            deadlines.popleft()
            if not future.done():  # its caller may have timed out and gone
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError("the connection to Redis was lost"))
                future.add_done_callback(_consume)  # read, if its caller has gone

    @property
    def usable(self) -> bool:
        return not self._closed and self._transport is not None

    def send_then(self, payload: bytes, then: _Then) -> None:
        """Write one command whose reply (or failure) goes to `then`, not to a future."""
        self._expect(then)
        self._write(payload)

    def send_one(self, payload: bytes) -> asyncio.Future[Any]:
        """Write one command (see `send` below); its reply's future, failing after the timeout."""
        future = self._loop.create_future()
        self._expect(future)
        self._write(payload)
        return future

    def send(self, payload: bytes, replies: int) -> list[asyncio.Future[Any]]:
        """Write `payload` at the end of this loop turn, with every other command of the
        turn, in one system call (see `_write`)."""
        futures = [self._loop.create_future() for _ in range(replies)]
        for future in futures:
            self._expect(future)
        self._write(payload)
        return futures

    def _expect(self, future: asyncio.Future[Any] | _Then) -> None:
        """Line `future` up for the next reply after those already expected; its time
        starts when its command is written (`_flush`), not while it waits for the turn
        to end."""
        self._waiting.append(future)
        self._unsent += 1

    def _expire(self) -> None:
        """The timer: replies not there now time out (those that arrived were taken first)."""
        self._timer = None
        now = self._loop.time()
        # Commands not written yet have no deadline (`_deadlines` is the sent prefix).
        for future, deadline in zip(self._waiting, self._deadlines, strict=False):
            if deadline > now:  # the oldest still in time: the timer is for it
                self._timer = self._loop.call_at(deadline, self._expire)
                return
            if not future.done():
                future.set_exception(TimeoutError("Redis did not answer in time"))
                future.add_done_callback(_consume)  # read, if its caller has gone

    def _write(self, payload: bytes) -> None:
        """Queue `payload` for the end of this loop turn: a call's give-back and cache
        store, and the admissions of calls answered in the same turn, leave in one
        write. A write to a loopback socket runs the receiver's TCP processing (and
        wakes Redis) in the sender's system call: writing the first command of a turn
        at once made 3 writes and Redis wake-ups per call instead of 2 (counted; the
        gateway's CPU per call did not change measurably). The wait is the rest of
        the turn."""
        if self._corked is None:  # the first write of this turn
            self._corked = [payload]
            self._loop.call_soon(self._flush)
        else:
            self._corked.append(payload)

    def _flush(self) -> None:
        corked, self._corked = self._corked, None
        unsent, self._unsent = self._unsent, 0
        if not corked or self._transport is None or self._closed:
            return  # a lost connection has failed every command waiting
        self._transport.write(corked[0] if len(corked) == 1 else b"".join(corked))
        deadline = self._loop.time() + self._timeout
        self._deadlines.extend([deadline] * unsent)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def write_after(self, payload: bytes, futures: list[asyncio.Future[Any]]) -> None:
        """Queue commands whose futures already exist (the client's backlog)."""
        for future in futures:
            self._expect(future)
        self._write(payload)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Subscription(_Connection):
    """A connection whose replies to nobody's command (published messages) go to a
    handler; used by `RedisClient.watch`. Its own commands are answered in order,
    as on any connection, until it has subscribed."""

    __slots__ = ("_on_lost", "_on_message")

    def __init__(
        self, timeout: float, on_message: Callable[[Any], None], on_lost: Callable[[], None]
    ) -> None:
        super().__init__(timeout)
        self._on_message = on_message
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:
                if self._transport is not None:
                    self._transport.close()
                return
            if reply is False:
                return
            if not self._waiting:
                try:
                    self._on_message(reply)
                except Exception as error:  # a handler's bug must not stop the reads
                    log.exception(
                        "redis: a message handler failed (a bug): %s", type(error).__name__
                    )
                continue
            future = self._waiting.popleft()
            self._deadlines.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._on_lost()


_C = TypeVar("_C", bound=_Connection)


def encode(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings (str, bytes, int, float; floats in
    their shortest exact form, which Lua's tonumber reads). hiredis does it in C, at half
    the CPU of the same loop in Python."""
    return hiredis.pack_command(args)  # type: ignore[no-any-return]


def _consume(future: asyncio.Future[Any]) -> None:
    """Read a failed reply nobody waits for any more (so asyncio does not report it)."""
    if not future.cancelled():
        future.exception()


def _expire_backlog(futures: list[asyncio.Future[Any]]) -> None:
    """A command sent before the connection was up: its reply is not there in time."""
    for future in futures:
        if not future.done():
            future.set_exception(TimeoutError("Redis did not answer in time"))


async def _replies(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """The replies of `futures`, in order (each fails on its own after the timeout)."""
    return [await future for future in futures]


class RedisClient:
    """One pipelined connection to the Redis of `url` (see the module)."""

    __slots__ = (
        "_backlog",
        "_connecting",
        "_connection",
        "_connector",
        "_db",
        "_host",
        "_password",
        "_port",
        "_scripts",
        "_ssl",
        "_timeout",
        "_user",
    )

    def __init__(
        self, url: str, timeout: float = 1.0, scripts: Callable[[], list[str]] = list
    ) -> None:
        self._timeout = timeout
        self._scripts = scripts  # Lua sources loaded on every new connection
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._user = urllib.parse.unquote(parts.username) if parts.username else None
        self._password = urllib.parse.unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self._db = int(path) if path.isdigit() else 0
        self._ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._connector: asyncio.Task[None] | None = None
        self._backlog: list[tuple[bytes, asyncio.Future[Any]]] = []

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            connection = self._connection
            if connection is not None and connection.usable:
                return connection
            # The scripts, on every new connection: a Redis that restarted has none, and a
            # command sent without waiting could not be sent again in its place.
            protocol = await self._open(
                lambda: _Connection(self._timeout),
                [("SCRIPT", "LOAD", source) for source in self._scripts()],
            )
            if self._backlog:  # commands sent while connecting go first, in order
                backlog, self._backlog = self._backlog, []
                protocol.write_after(b"".join(p for p, _ in backlog), [f for _, f in backlog])
            self._connection = protocol
            return protocol

    async def _open(self, factory: Callable[[], _C], then: Sequence[tuple[Any, ...]] = ()) -> _C:
        """A new connection to this client's Redis, authenticated, on its database, after
        the commands `then` (ConnectionError when Redis refuses one of them)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(max(self._timeout, 0.2)):
            _, protocol = await loop.create_connection(
                factory, self._host, self._port, ssl=self._ssl
            )
        hello: list[tuple[Any, ...]] = []
        if self._password is not None:
            hello.append(
                ("AUTH", self._user, self._password) if self._user else ("AUTH", self._password)
            )
        if self._db:
            hello.append(("SELECT", self._db))
        hello += then
        if hello:
            try:
                replies = await _replies(
                    protocol.send(b"".join(encode(c) for c in hello), len(hello))
                )
            except BaseException:
                protocol.close()
                raise
            for reply in replies:
                if isinstance(reply, ReplyError):  # a wrong password or database: no link
                    protocol.close()
                    raise ConnectionError(f"Redis refused the connection: {reply}")
        return protocol

    async def watch(
        self, prefix: str, on_message: Callable[[Any], None], on_lost: Callable[[], None]
    ) -> _Subscription:
        """A connection of its own that hears of every change to a key under `prefix`.

        Redis's client-side caching in broadcast mode: the connection turns key
        tracking on for the prefix with itself as the receiver (REDIRECT to its own
        id, which RESP2 allows once it has subscribed) and subscribes to
        `__redis__:invalidate`. From then on each message Redis publishes there goes
        to `on_message` as hiredis reads it (`[b"message", channel, [key, ...]]`, or
        None for the keys when a database was flushed), and `on_lost` is called once
        when the connection ends. Raises ReplyError when Redis refuses tracking (a
        Redis before 6, or an ACL without CLIENT).
        """
        connection = await self._open(lambda: _Subscription(self._timeout, on_message, on_lost))
        try:
            (client_id,) = await _replies(connection.send(encode(("CLIENT", "ID")), 1))
            if isinstance(client_id, ReplyError):
                raise client_id
            tracking = ("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX")
            replies = await _replies(
                connection.send(
                    encode((*tracking, prefix)) + encode(("SUBSCRIBE", "__redis__:invalidate")),
                    2,
                )
            )
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise reply
        except BaseException:
            connection.close()
            raise
        return connection

    async def call(self, *args: Any) -> Any:
        """Send one command; its reply, or ReplyError (TimeoutError past the timeout)."""
        connection = self._connection
        if connection is None or not connection.usable:
            connection = await self._connected()
        reply = await connection.send_one(encode(args))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def send_then(self, handler: Callable[[Any], None], *args: Any) -> None:
        """Send one command now without waiting; `handler` gets its reply (a ReplyError
        value for an error reply) or the exception that failed it (TimeoutError after the
        timeout, ConnectionError), called as the reply is read."""
        connection = self._connection
        if connection is not None and connection.usable:
            connection.send_then(encode(args), _Then(handler))
            return

        def hand_on(future: asyncio.Future[Any]) -> None:
            handler(future.exception() or future.result())

        self._send(*args).add_done_callback(hand_on)

    def _send(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command now without waiting: its reply's future (with the timeout).

        Not connected yet: the command waits in a backlog that is written first, in
        order, as soon as the connection is up, so it still goes before anything sent
        after it.
        """
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is not None and connection.usable:
            return connection.send_one(encode(args))
        future = loop.create_future()
        self._backlog.append((encode(args), future))
        if self._connector is None or self._connector.done():
            self._connector = loop.create_task(self._connect_quietly())
        timer = loop.call_later(self._timeout, _expire_backlog, [future])
        future.add_done_callback(lambda _: timer.cancel())
        return future

    async def _connect_quietly(self) -> None:
        try:
            await self._connected()
        except (OSError, TimeoutError, ConnectionError) as error:
            backlog, self._backlog = self._backlog, []
            for _, future in backlog:
                if not future.done():
                    future.set_exception(ConnectionError(f"cannot connect to Redis: {error}"))

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send several commands in one write; their replies (errors as ReplyError values)."""
        connection = self._connection
        if connection is None or not connection.usable:
            connection = await self._connected()
        payload = b"".join(encode(command) for command in commands)
        return await _replies(connection.send(payload, len(commands)))

    def drop(self) -> None:
        """Close the connection now (commands in flight fail); the next call reconnects."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def aclose(self) -> None:
        """Close the connection (commands in flight fail)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
