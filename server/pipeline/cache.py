"""The cache stage: answer exact repeats from the response cache, and ask once.

Placed after the router (the key names the model it chose) and before the
budget (an answer from the cache costs nothing, so it is served even to a
tenant whose budget is spent). For a cacheable call (temperature 0 or unset,
cache mode not BYPASS; see ``server/state/responses.py`` for the key and the
store):

* a stored answer is served at once: cost 0, `cached` set, and `saved_cost`
  what the answer cost when it was produced. A stream replays it in the
  usual shape: start, the text as one delta, end;
* otherwise, if an identical call is already in flight (single flight), the
  call waits for it and is served its answer the same way, so N identical
  concurrent calls make one relay call and are billed once. A waiting stream
  follows the leader live: when the leader is a stream it gets the leader's
  start and every text delta as the leader receives them (catching up on
  what came before it joined), then its own final message; behind a unary
  leader it is replayed when that call completes;
* otherwise, if the store is shared and another replica is asking the same
  (its flight marker, see ``state/redis/responses.py``), the call waits for
  that answer, at most half of its time left, and is served it as a hit;
  a stream waiting so is replayed when the answer is stored (text does not
  travel between replicas live). When that flight ends without an answer or
  takes too long, the call leads;
* otherwise the call goes on as the flight's leader (the store is told, so
  other replicas can wait for it), and its complete answer is stored (STOP
  only) and handed to the waiters.

When the leader fails, waiters share its error if the error is about the
request (the relay refused it, every model failed, the budget is spent). If
the leader's own circumstances ended it (its caller cancelled, its deadline
passed, its stream broke after text was sent, a capacity limit other than
the budget refused it for its deadline), the next waiter becomes the leader
and asks again; a following stream that had already passed text on cannot
start over, so it ends with UNAVAILABLE saying how many tokens it delivered,
as a stream of its own that broke part-way would.

CACHE_MODE_REFRESH skips the lookup and the flights and stores its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeAlias, assert_never

from server import telemetry as semconv
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import (
    NO_USAGE,
    CacheMode,
    CacheUse,
    Call,
    Completion,
    FinishReason,
    ModelSpec,
    ReasoningDelta,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from server.errors import (
    BudgetExceededError,
    CapacityError,
    DeadlineExceededError,
    RelayUnavailableError,
    StreamInterruptedError,
    SwitchyardError,
)
from server.pipeline.base import Handler, Stage
from server.state.responses import CachedAnswer, CacheKey, ResponseStore, cache_key, cacheable
from server.telemetry import Telemetry
from server.tokens import text_tokens

# What a flight ends with: the answer, an error every waiter shares, or None
# when the leader gave up for its own reasons.
FlightOutcome: TypeAlias = "CachedAnswer | SwitchyardError | None"
_FOLLOW_FOR = 30.0  # seconds a call without a deadline waits for another replica's answer


def _shared(error: SwitchyardError) -> bool:
    """Is the leader's error a verdict on the request, which every waiter would get too?

    Not when the leader's own circumstances caused it: its deadline, its stream
    breaking after text was sent, or a capacity limit measured against its
    deadline. A spent budget is shared: waiters have the same tenant and cost.
    """
    if isinstance(error, DeadlineExceededError | StreamInterruptedError):
        return False
    return not isinstance(error, CapacityError) or isinstance(error, BudgetExceededError)


class _Flight:
    """One leader's call in flight; identical calls wait for its outcome, and
    identical streams follow its text as it arrives."""

    __slots__ = ("_done", "_tick", "joined", "model", "parts")

    def __init__(self) -> None:
        self._done: asyncio.Future[FlightOutcome] | None = None  # made for the first waiter
        self._tick: asyncio.Future[None] | None = None  # made for the first follower
        self.model: ModelSpec | None = None  # set when the leader's stream starts
        self.parts: list[str] = []  # the leader's text deltas so far
        self.joined = 0  # calls that joined it (to wait for it or to follow it)

    def join(self) -> None:
        """Register interest: from now on the flight keeps its outcome for us."""
        self.joined += 1
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()

    async def wait(self) -> FlightOutcome:
        """The leader's outcome; cancelling a waiter never cancels the others."""
        self.join()
        assert self._done is not None
        return await asyncio.shield(self._done)

    @property
    def ended(self) -> bool:
        """Has the leader finished (answered, failed or given up)?"""
        return self._done is not None and self._done.done()

    @property
    def outcome(self) -> FlightOutcome:
        """The leader's outcome, once `ended`."""
        assert self._done is not None and self._done.done()
        return self._done.result()

    async def progress(self) -> None:
        """Return when the leader has sent more text or ended (the caller has joined)."""
        assert self._done is not None, "join first"
        if self._tick is None:
            self._tick = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._tick)

    def start(self, model: ModelSpec) -> None:
        """The leader's stream started on `model`; its first text comes next (followers
        wake for that text, not for the start)."""
        self.model = model

    def add(self, text: str) -> None:
        """The leader received one more text delta."""
        self.parts.append(text)
        self._wake()

    def finish(self, outcome: FlightOutcome) -> None:
        """Hand the outcome to every waiter."""
        if self._done is not None and not self._done.done():
            self._done.set_result(outcome)
        self._wake()

    def _wake(self) -> None:
        if self._tick is not None:
            self._tick.set_result(None)
            self._tick = None


class CacheStage(Stage[Call]):
    """Serves repeats from the cache and coalesces identical calls in flight."""

    __slots__ = ("_clock", "_flights", "_shared", "_store", "_telemetry")

    def __init__(
        self,
        next_handler: Handler[Call],
        store: ResponseStore,
        telemetry: Telemetry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(next_handler)
        self._store = store
        self._shared = store.shared  # other replicas' identical calls to wait for, or lead
        self._flights: dict[CacheKey, _Flight] = {}
        self._telemetry = telemetry or Telemetry.disabled()
        self._clock = clock

    @property
    def joined(self) -> int:
        """Calls that joined an identical call still in flight, to wait for it or follow it."""
        return sum(flight.joined for flight in self._flights.values())

    async def query(self, call: Call, /) -> Completion:
        """Answer from the cache, from an identical call in flight, or by asking."""
        if not cacheable(call.request):
            return await self.next.query(call)
        key, found, flight = await self._open(call)
        if found is not None:
            assert isinstance(found, CachedAnswer), "only streams follow a flight"
            return _serve(call, found)
        outcome: FlightOutcome = None
        try:
            completion = await self.next.query(call)
        except SwitchyardError as error:
            if _shared(error):
                outcome = error
            raise
        else:
            outcome = await self._keep(
                key, call, completion.content, completion.model, completion.finish_reason
            )
            return completion
        finally:
            if flight is not None:
                self._land(key, flight, outcome)

    def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream from the cache or a flight, or lead; non-cacheable calls pass straight on."""
        if not cacheable(call.request):
            return self.next.stream(call)
        return self._stream(call)

    async def _stream(self, call: Call) -> AsyncGenerator[StreamEvent, None]:
        while True:
            key, found, flight = await self._open(call, follow=True)
            if isinstance(found, _Flight):
                ended = False
                async with aclosing(self._follow(call, found)) as events:
                    async for event in events:
                        ended = isinstance(event, Completion)
                        yield event
                if ended:
                    return
                continue  # the leader gave up before anything was passed on: look again
            if found is not None:
                for event in _replay(call, found, self._clock.monotonic()):
                    yield event
                return
            break
        parts: list[str] = flight.parts if flight is not None else []
        outcome: FlightOutcome = None
        try:
            async with aclosing(self.next.stream(call)) as events:
                async for event in events:
                    match event:
                        case TextDelta(text=text):
                            if flight is not None:
                                flight.add(text)
                            else:
                                parts.append(text)
                        case Completion(model=model, finish_reason=finish):
                            # Complete: store it and release the waiters before passing it on.
                            outcome = await self._keep(key, call, "".join(parts), model, finish)
                            if flight is not None:
                                self._land(key, flight, outcome)
                                flight = None
                        case StreamStart(model=model):
                            if flight is not None:
                                flight.start(model)
                        case ToolCallStart() | ToolCallDelta() | ToolCallEnd() | ReasoningDelta():
                            # Only plain requests are cacheable, and their answers are text.
                            raise AssertionError("a cacheable stream carried more than text")
                        case _:
                            assert_never(event)
                    yield event
        except SwitchyardError as error:
            if _shared(error):
                outcome = error
            raise
        finally:
            if flight is not None:
                self._land(key, flight, outcome)

    async def _follow(self, call: Call, flight: _Flight) -> AsyncGenerator[StreamEvent, None]:
        """Pass a leader's stream on to an identical stream call, live.

        Ends with this call's own final message (served like a cache hit); raises
        the leader's error when it is about the request; returns without a final
        message when the leader gave up for its own reasons before anything was
        passed on, so the caller can look again.
        """
        sent = 0
        started = False  # the start goes out with the first text, as the leader's does
        while True:
            if sent < len(flight.parts):
                if not started:
                    assert flight.model is not None, "a stream starts before its text"
                    started = True
                    call.first_token_at = self._clock.monotonic()
                    yield StreamStart(flight.model)
                while sent < len(flight.parts):
                    sent += 1
                    yield TextDelta(flight.parts[sent - 1])
            if flight.ended:
                break
            await flight.progress()
        outcome = flight.outcome
        if isinstance(outcome, CachedAnswer):
            # Behind a unary leader (or an empty answer) nothing was passed on yet.
            for event in _replay(call, outcome, self._clock.monotonic(), started):
                yield event
            return
        if outcome is not None:
            call.cache = CacheUse.MISS
            raise outcome
        if started:
            delivered = text_tokens("".join(flight.parts[:sent]))
            raise StreamInterruptedError(
                RelayUnavailableError("the identical call this stream shared ended early"),
                delivered,
            )

    async def _open(
        self, call: Call, follow: bool = False
    ) -> tuple[CacheKey, CachedAnswer | _Flight | None, _Flight | None]:
        """The call's key; a stored or coalesced answer (or with `follow`, the flight
        of an identical call to follow), or else the flight it now leads (no flight
        for REFRESH, which neither reads nor coalesces)."""
        assert call.route is not None, "the router runs before the cache"
        key = cache_key(call.identity.tenant, call.route, call.request)
        if call.request.cache_mode is CacheMode.REFRESH:
            call.cache = CacheUse.REFRESH
            return key, None, None
        found = await self._traced_lookup(key, call, follow)
        if found is not None:
            return key, found, None
        flight = self._flights[key] = _Flight()
        if self._shared:
            self._store.lead(key)
        return key, None, flight

    async def _traced_lookup(
        self, key: CacheKey, call: Call, follow: bool
    ) -> CachedAnswer | _Flight | None:
        """`_lookup`, its time on the SERVER span (`switchyard.cache.lookup_ms`: no span
        of its own; the SERVER span's `switchyard.cache.hit` says whether it hit)."""
        if not self._telemetry.tracing:
            return await self._lookup(key, call, follow)
        started = self._clock.monotonic()
        found = None
        try:
            found = await self._lookup(key, call, follow)
            return found
        finally:
            span = call.span
            if span.is_recording():
                lookup_ms = round((self._clock.monotonic() - started) * 1000, 3)
                span.set_attribute(semconv.SWITCHYARD_CACHE_LOOKUP_MS, lookup_ms)
            result = "hit" if found is not None else "miss"
            self._telemetry.instruments.cache_lookups.add(1, result)

    async def _lookup(
        self, key: CacheKey, call: Call, follow: bool
    ) -> CachedAnswer | _Flight | None:
        """A stored or coalesced answer, or with `follow` the flight to follow; None
        when this call must lead (raises a shared error)."""
        while True:
            found = await self._store.get(key)
            if found is not None:
                return found
            flight = self._flights.get(key)
            if flight is None and self._shared:
                # Another replica may be asking already: wait for its answer, for at most
                # half of this call's time.
                left = call.remaining(self._clock.monotonic())
                found = await self._store.elsewhere(key, _FOLLOW_FOR if left is None else left / 2)
                if found is not None:
                    return found
                flight = self._flights.get(key)  # one may have started meanwhile, here
            if flight is None:
                call.cache = CacheUse.MISS
                return None
            if follow:
                flight.join()
                return flight
            outcome = await flight.wait()
            if isinstance(outcome, CachedAnswer):
                return outcome
            if outcome is not None:
                call.cache = CacheUse.MISS
                raise outcome
            # The leader gave up for its own reasons: look again, and lead if nobody does.

    async def _keep(
        self, key: CacheKey, call: Call, content: str, model: ModelSpec, finish: FinishReason
    ) -> CachedAnswer:
        """The answer as waiters get it; stored only when complete."""
        answer = CachedAnswer(content, model, finish, call.cost)
        if finish is FinishReason.STOP:
            await self._store.put(key, answer)
        return answer

    def _land(self, key: CacheKey, flight: _Flight, outcome: FlightOutcome) -> None:
        """End the flight: later calls find the cache (or lead anew); waiters get the outcome."""
        del self._flights[key]
        if self._shared:
            self._store.landed(key, outcome if isinstance(outcome, CachedAnswer) else None)
        flight.finish(outcome)


def _serve(call: Call, answer: CachedAnswer) -> Completion:
    """A cached answer for this call: nothing billed, the original cost saved."""
    call.cache = CacheUse.HIT
    call.saved_cost = answer.cost
    return Completion(answer.model, answer.content, NO_USAGE, answer.finish_reason)


def _replay(
    call: Call, answer: CachedAnswer, now: float, started: bool = False
) -> list[StreamEvent]:
    """A served answer as this call's stream: start and the text as one delta (unless
    `started`: already passed on live), then the end."""
    completion = _serve(call, answer)
    if started:
        return [completion]
    call.first_token_at = now
    events: list[StreamEvent] = [StreamStart(answer.model)]
    if answer.content:
        events.append(TextDelta(answer.content))
    events.append(completion)
    return events
