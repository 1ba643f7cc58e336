"""What the simulator saw and said, exact and awaitable.

Gateway tests assert two things against the relay: the cost the gateway
accounted equals the usage the relay *reported* (priced), and no request or
connection was left behind. So the book counts usage at the moment a body or
frame carrying it is handed to the socket (and takes it back if that write
fails), and every change wakes anyone waiting in :meth:`StatsBook.wait_until`,
so tests synchronise on events, never on sleeps.

Reported usage per response follows the wires' own semantics: the latest
value of each field wins (Anthropic's ``message_delta`` output supersedes
``message_start``'s ``output_tokens: 1``); the stats hold the sum, over all
responses, of each response's latest values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

from server.simulator.wire import UsageReport


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One model's counters at the moment of the snapshot."""

    requests: int = 0  # completion requests naming this model, answered or refused
    in_flight: int = 0  # accepted and not yet finished
    input_tokens: int = 0  # reported to clients
    output_tokens: int = 0  # reported to clients
    tokens_sent: int = 0  # answer tokens written, whether or not usage was reported
    max_in_flight: int = 0  # the most requests served at once, since start
    cache_read_tokens: int = 0  # prompt-cache reads reported (not in input_tokens on Anthropic)
    cache_write_tokens: int = 0  # prompt-cache writes reported (Anthropic only)


@dataclass(frozen=True, slots=True)
class SimulatorStats:
    """A snapshot. Connections are per server: one keep-alive connection serves any model."""

    models: Mapping[str, ModelStats] = field(default_factory=lambda: MappingProxyType({}))
    requests: int = 0  # every request to a completion endpoint, even one without a model
    open_connections: int = 0

    def model(self, name: str) -> ModelStats:
        """The counters of ``name`` (zeros if it was never asked for)."""
        return self.models.get(name, ModelStats())

    @property
    def in_flight(self) -> int:
        """Requests being served now, over all models."""
        return sum(stats.in_flight for stats in self.models.values())

    @property
    def input_tokens(self) -> int:
        """Input tokens reported, over all models."""
        return sum(stats.input_tokens for stats in self.models.values())

    @property
    def output_tokens(self) -> int:
        """Output tokens reported, over all models."""
        return sum(stats.output_tokens for stats in self.models.values())


class _Counters:
    __slots__ = (
        "cache_read_tokens",
        "cache_write_tokens",
        "in_flight",
        "input_tokens",
        "max_in_flight",
        "output_tokens",
        "requests",
        "tokens_sent",
    )

    def __init__(self) -> None:
        self.requests = self.in_flight = self.input_tokens = self.output_tokens = 0
        self.tokens_sent = self.max_in_flight = 0
        self.cache_read_tokens = self.cache_write_tokens = 0


class ResponseTally:
    """The usage one response has reported so far, kept in step with the model's totals."""

    __slots__ = (
        "_book",
        "_counters",
        "cache_read_tokens",
        "cache_write_tokens",
        "input_tokens",
        "output_tokens",
        "tokens_sent",
    )

    def __init__(self, book: StatsBook, counters: _Counters) -> None:
        self._book = book
        self._counters = counters
        self.input_tokens = 0
        self.output_tokens = 0
        self.tokens_sent = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0

    def record(self, report: UsageReport | None, tokens: int) -> None:
        """Account a frame about to be written: its usage (latest wins) and its tokens."""
        if report is not None and (
            report.cache_read_tokens is not None or report.cache_write_tokens is not None
        ):
            self._set_cache(report.cache_read_tokens or 0, report.cache_write_tokens or 0)
        self._set(
            self.input_tokens
            if report is None or report.input_tokens is None
            else report.input_tokens,
            self.output_tokens
            if report is None or report.output_tokens is None
            else report.output_tokens,
            self.tokens_sent + tokens,
        )

    def checkpoint(self) -> tuple[int, int, int, int, int]:
        """State to return to if the next write fails."""
        return (
            self.input_tokens,
            self.output_tokens,
            self.tokens_sent,
            self.cache_read_tokens,
            self.cache_write_tokens,
        )

    def restore(self, state: tuple[int, int, int, int, int]) -> None:
        """Undo what was recorded since ``checkpoint``: the client never got it."""
        self._set_cache(state[3], state[4])
        self._set(state[0], state[1], state[2])

    def _set_cache(self, read: int, write: int) -> None:
        counters = self._counters
        counters.cache_read_tokens += read - self.cache_read_tokens
        counters.cache_write_tokens += write - self.cache_write_tokens
        self.cache_read_tokens, self.cache_write_tokens = read, write

    def _set(self, input_tokens: int, output_tokens: int, tokens_sent: int) -> None:
        counters = self._counters
        counters.input_tokens += input_tokens - self.input_tokens
        counters.output_tokens += output_tokens - self.output_tokens
        counters.tokens_sent += tokens_sent - self.tokens_sent
        self.input_tokens, self.output_tokens, self.tokens_sent = (
            input_tokens,
            output_tokens,
            tokens_sent,
        )
        self._book.changed()


class StatsBook:
    """The simulator's mutable counters; hands out immutable snapshots."""

    __slots__ = ("_changed", "_connections", "_models", "_requests")

    def __init__(self, models: Iterable[str]) -> None:
        self._models = {name: _Counters() for name in models}
        self._requests = 0
        self._connections = 0
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Wake every waiter; each re-checks its own condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    def received(self, model: str | None) -> None:
        """Count one completion request (``model`` None when the body named none)."""
        self._requests += 1
        if model is not None:
            self._models.setdefault(model, _Counters()).requests += 1
        self.changed()

    def connection_opened(self) -> None:
        """A client connected."""
        self._connections += 1
        self.changed()

    def connection_closed(self) -> None:
        """A connection closed, whichever side closed it."""
        self._connections -= 1
        self.changed()

    def in_flight(self, model: str) -> int:
        """Requests to ``model`` being served now."""
        counters = self._models.get(model)
        return 0 if counters is None else counters.in_flight

    @contextmanager
    def serving(self, model: str) -> Iterator[ResponseTally]:
        """Hold one in-flight slot of ``model`` while the response is produced."""
        counters = self._models.setdefault(model, _Counters())
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        self.changed()
        try:
            yield ResponseTally(self, counters)
        finally:
            counters.in_flight -= 1
            self.changed()

    def snapshot(self) -> SimulatorStats:
        """An immutable copy of every counter."""
        models = {
            name: ModelStats(
                c.requests,
                c.in_flight,
                c.input_tokens,
                c.output_tokens,
                c.tokens_sent,
                c.max_in_flight,
                c.cache_read_tokens,
                c.cache_write_tokens,
            )
            for name, c in self._models.items()
        }
        return SimulatorStats(MappingProxyType(models), self._requests, self._connections)

    async def wait_until(
        self,
        predicate: Callable[[SimulatorStats], bool],
        timeout: float,  # noqa: ASYNC109 (see RelaySimulator.wait_until)
    ) -> SimulatorStats:
        """Wait until ``predicate(snapshot)`` holds; raise TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while not predicate(snapshot := self.snapshot()):
                await self._changed.wait()
        return snapshot
