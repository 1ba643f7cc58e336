"""Circuit breakers whose openings every replica sees (contract: ``server/state/breakers.py``).

Each replica keeps the state machine of every model's breaker in memory, as
the memory backend does, and judges each try locally, so `admit` costs no
round trip. What is shared is the decision: when a circuit opens on one
replica it writes ``open:<model>`` to Redis with the cooldown as its expiry,
and every replica reads all of those keys every `poll` seconds (0.5 s: one
MGET) and opens the same circuit for the rest of the cooldown. So a model
that fails on one replica is avoided by all within one poll (under 1 s).
After the cooldown each replica sends its own probe (at most one per
replica at a time); a probe that answers closes the circuit on its replica
and deletes the key.

Failure policy: while Redis does not answer, breakers are each replica's own
(the memory behaviour); the poll resumes when Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import CircuitState, CircuitStatus, ModelSpec
from server.settings import BreakerSettings
from server.state.memory.breakers import MemoryBreakers
from server.state.redis.link import RedisDownError, RedisLink


class RedisBreakers:
    """Local breakers, with openings shared through Redis (see the module)."""

    __slots__ = ("_clock", "_keys", "_link", "_local", "_models", "_poll", "_poller", "_tasks")

    def __init__(
        self,
        link: RedisLink,
        models: Iterable[ModelSpec],
        settings: BreakerSettings,
        clock: Clock = SYSTEM_CLOCK,
        *,
        poll: float = 0.5,
    ) -> None:
        models = tuple(models)
        self._link = link
        self._models = [model.name for model in models]
        self._local = MemoryBreakers(models, settings, clock)
        self._clock = clock
        self._poll = poll
        self._keys = [f"{link.prefix}open:{name}" for name in self._models]
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin reading the other replicas' openings."""
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll_forever(), name="redis-breakers"
            )

    async def admit(self, model: str) -> None:
        """Let a try through, or raise CircuitOpenError (no I/O)."""
        await self._local.admit(model)

    async def succeeded(self, model: str) -> None:
        """The try answered; a circuit that was open here closes, and everywhere's key goes."""
        breaker = self._local.of(model)
        was_open = breaker.status(self._clock.monotonic()).state is not CircuitState.CLOSED
        breaker.succeeded()
        if was_open:
            self._send(self._link.delete(f"{self._link.prefix}open:{model}"))

    async def failed(self, model: str) -> None:
        """The try failed; if that opens the circuit here, tell the other replicas."""
        breaker = self._local.of(model)
        now = self._clock.monotonic()
        before = breaker.status(now).state
        breaker.failed(now)
        if before is not CircuitState.OPEN and breaker.status(now).state is CircuitState.OPEN:
            key = f"{self._link.prefix}open:{model}"
            self._send(self._link.set_for(key, self._clock.wall(), breaker.cooldown))

    async def neutral(self, model: str) -> None:
        """The try said nothing about the model."""
        await self._local.neutral(model)

    async def status(self, model: str) -> CircuitStatus:
        """The breaker of `model` as this replica holds it (openings polled in)."""
        return await self._local.status(model)

    def snapshot(self, model: str) -> CircuitStatus:
        """The same, without I/O."""
        return self._local.snapshot(model)

    def _send(self, write: object) -> None:
        """Write in the background: a try never waits for the breaker's news to spread."""
        assert asyncio.iscoroutine(write)

        async def quietly() -> None:
            with contextlib.suppress(RedisDownError):
                await write

        task = asyncio.get_running_loop().create_task(quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll)  # housekeeping runs on real time
            if not self._link.up or not self._keys:
                continue
            try:
                values = await self._link.mget(self._keys)
            except RedisDownError:
                continue
            now, wall = self._clock.monotonic(), self._clock.wall()
            for name, value in zip(self._models, values, strict=True):
                if value is None:
                    continue
                breaker = self._local.of(name)
                opened_at = float(value)
                breaker.opened_elsewhere(now, breaker.cooldown - (wall - opened_at))

    async def aclose(self) -> None:
        """Stop polling."""
        for task in (self._poller, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
