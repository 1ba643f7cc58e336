"""The time limits of relay requests in flight, kept by one timer.

A try has two limits: the relay's silence (`read_timeout`) and, for a unary
try, its time in all (the caller's deadline, or the relay timeout). Kept the
usual way they cost a loop timer each, aiohttp's `sock_read` for the first
(cancelled and set again as each chunk arrives) and `asyncio.timeout` for the
second, and a timer is dear in asyncio: each push and pop of the loop's heap
compares handles in Python, and a cancelled one stays in the heap until it is
swept. Measured under callgrind: 39k and 38k instructions of a unary call's
1.84M, more for a stream (one re-armed timer per chunk).

So one `RequestWatch` per relay client holds the requests in flight in a dict
and looks at them every `TICK` seconds, from a single timer that runs only
while requests are in flight (at concurrency 1 about one timer per ten calls).
An overdue request's task is cancelled; its `Watched.expired` says the watch
did it, so the request raises a RelayTimeoutError in place of the cancel, and
a cancel from elsewhere (the caller hung up) stays a cancel, as with
`asyncio.timeout`. A limit fires up to `TICK` late.

The relay's silence counts from the start of the request to its status and
headers, then from each part of the body to the next: the transport says when
a unary body's chunk arrives (the `HEARD` request extension), the stream
reader when a stream's does; while an event of a stream is with the caller,
the relay's silence is not counted (a slow caller is not a stalled relay).
"""

from __future__ import annotations

import asyncio
import math
import time

TICK = 0.02  # seconds between two looks at the requests in flight

EXPIRED_TOTAL = "total"
EXPIRED_SILENT = "silent"


class Watched:
    """One request under watch."""

    __slots__ = ("cancelling", "expired", "silence", "silent_at", "task", "until")

    def __init__(
        self, task: asyncio.Task[object], silence: float, now: float, limit: float
    ) -> None:
        self.task = task
        self.silence = silence  # the relay's longest silence allowed, in seconds
        self.silent_at = now + silence  # monotonic: the relay has been silent too long
        self.until = now + limit  # monotonic: the request's time is up
        self.cancelling = task.cancelling()  # cancels pending before the watch began
        self.expired: str | None = None  # EXPIRED_TOTAL or EXPIRED_SILENT, once cancelled

    def heard(self) -> None:
        """The relay sent something (headers, a chunk): its silence counts from now."""
        self.silent_at = time.monotonic() + self.silence

    def away(self) -> None:
        """An event is with the caller: its time is not the relay's silence (`heard`
        when the caller asks for the next)."""
        self.silent_at = math.inf

    def timed_out(self) -> bool:
        """Was a CancelledError just caught this watch's doing, and the only cancel?

        True takes the watch's cancel back (`Task.uncancel`), so the request may
        raise its timeout instead; False: re-raise the cancel.
        """
        return self.expired is not None and self.task.uncancel() <= self.cancelling


class RequestWatch:
    """Cancels the tasks of requests past their limits; see the module docstring."""

    __slots__ = ("_inflight", "_loop", "_timer")

    def __init__(self) -> None:
        self._inflight: dict[int, Watched] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def watch(self, silence: float, limit: float) -> Watched:
        """Watch the current task's request: silent at most `silence` s, `limit` s in all."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a relay request runs in a task")  # pragma: no cover
        watched = Watched(task, silence, time.monotonic(), limit)
        self._inflight[id(watched)] = watched
        loop = asyncio.get_running_loop()
        if self._timer is None or self._loop is not loop:  # none yet, or another loop's
            self._loop = loop
            self._timer = loop.call_later(TICK, self._look)
        return watched

    def done(self, watched: Watched) -> None:
        """The request ended, however it did: stop watching it."""
        self._inflight.pop(id(watched), None)

    def close(self) -> None:
        """Stop the timer (the client closes); requests still watched are not cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def watching(self) -> int:
        """Requests under watch now."""
        return len(self._inflight)

    @property
    def ticking(self) -> bool:
        """Is the timer set? (It stops one tick after the last request ends.)"""
        return self._timer is not None

    def _look(self) -> None:
        self._timer = None
        inflight = self._inflight
        if not inflight:
            return  # idle: the next request starts the timer again
        now = time.monotonic()
        for key, watched in list(inflight.items()):
            if now >= watched.until:
                watched.expired = EXPIRED_TOTAL
            elif now >= watched.silent_at:
                watched.expired = EXPIRED_SILENT
            else:
                continue
            del inflight[key]
            watched.task.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(TICK, self._look)
