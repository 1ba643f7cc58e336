"""What unit and end-to-end tests share: a clock that moves only when told, and `until`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

EPOCH = 1_800_000_000.0  # the wall-clock instant a FakeClock starts at (2027-01-15 08:00 UTC)


class FakeClock:
    """A `server.clock.Clock` whose time moves only by `advance` and `sleep`.

    `sleep` records what was asked, moves the time on, and yields the event
    loop once (as a real sleep would), so backoff is tested by what it asked
    for, never by real elapsed time.
    """

    def __init__(self, wall: float = EPOCH) -> None:
        self.now = 100.0  # monotonic seconds
        self._wall_offset = wall - self.now
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set_wall(self, wall: float) -> None:
        self._wall_offset = wall - self.now

    async def sleep(self, seconds: float, /) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    """Wait until `predicate()` holds, checking after each turn of the event loop.

    For state that changes inside code under test with no event to wait on (a
    task reaching a queue, a cancelled call still unwinding on the server):
    this yields the loop (no fixed sleep) and checks again, bounded by `within`
    seconds, so a test states what it waits for instead of how many turns. The
    predicate may be a coroutine function (to read an async store).
    """
    async with asyncio.timeout(within):
        while True:
            held = predicate()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return
            await asyncio.sleep(0)


def wire_field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field as the wire has it: a flood is built from
    these as bytes, without a Python object per message."""
    size, length = len(payload), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            return bytes([number << 3 | 2]) + bytes(length) + payload


def flood(count: int, message: Any) -> bytes:
    """A request holding a QuerySpec (field 1 of Route's, Query's and StreamQuery's
    requests) of `count` copies of the Message `message`, built as bytes."""
    return wire_field(1, wire_field(2, message.SerializeToString()) * count)
