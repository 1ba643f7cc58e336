"""Accounting: every call's billed attempts, entered once in the ledger.

The stage records a call when it ends, however it ends (answer, error,
caller cancel), from the call's attempt records: each try's usage and exact
cost, so failed tries the relay billed and half-received streams are
counted, and nothing is counted twice. The record carries the call's gRPC
status (a caller that cancels or stops reading a stream is CANCELLED, not an
error), the route, the model that answered, its latency and time to first
token, and its labels.

The record is entered before the answer leaves: a unary call's before it
returns, a stream's before its final message is passed on. `Ledger.record`
never waits on the database (``server/state/ledger.py``): a durable ledger
appends the record to its local journal and writes it to the database from
a task of its own. When even the journal cannot take it, `record` raises
SpendNotRecordedError and the call fails with UNAVAILABLE rather than go
unbilled.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import Call, Completion, StreamEvent
from server.errors import SwitchyardError
from server.pipeline.base import Handler, Stage
from server.state.ledger import CANCELLED, OK, CallRecord, Ledger

INTERNAL = "INTERNAL"


def status_of(error: BaseException | None) -> str:
    """The gRPC status name a call that ended with `error` leaves with."""
    if error is None:
        return OK
    if isinstance(error, SwitchyardError):
        return error.code.name
    if isinstance(error, Exception):
        return INTERNAL
    return CANCELLED  # CancelledError, GeneratorExit: the caller went away


class AccountingStage(Stage[Call]):
    """Enters each call in the ledger when it ends."""

    __slots__ = ("_clock", "_ledger")

    def __init__(
        self, next_handler: Handler[Call], ledger: Ledger, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(next_handler)
        self._ledger = ledger
        self._clock = clock

    def _record(self, call: Call, status: str, answered: str) -> None:
        identity = call.identity
        route = call.route
        first = call.first_token_at
        self._ledger.record(
            CallRecord(
                call.request_id,
                identity.tenant,
                self._clock.wall(),
                tuple(call.attempts),
                status,
                call.cache,
                call.saved_cost,
                identity.key_id,
                identity.user,
                route.model.name if route is not None else "",
                route.reason if route is not None else "",
                answered,
                self._clock.monotonic() - call.started,
                None if first is None else first - call.started,
                call.request.labels,
            )
        )

    async def query(self, call: Call, /) -> Completion:
        """Answer, then account (also on failure or cancel), before the answer leaves."""
        try:
            completion = await self.next.query(call)
        except BaseException as error:
            self._record(call, status_of(error), "")
            raise
        self._record(call, OK, completion.model.name)
        return completion

    async def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream, accounting before the final message (or on failure, cancel, early close)."""
        recorded = False
        ended: BaseException | None = None
        try:
            # Closed before the record below is made: the inner stages append their
            # attempts as they unwind.
            async with aclosing(self.next.stream(call)) as events:
                async for event in events:
                    if type(event) is Completion:
                        recorded = True
                        self._record(call, OK, event.model.name)
                    yield event
        except BaseException as error:
            ended = error
            raise
        finally:
            if not recorded:  # failed, cancelled, or the consumer closed the stream early
                self._record(call, CANCELLED if ended is None else status_of(ended), "")
