"""Accounting: every call's billed attempts, entered once in the ledger.

The stage records a call when it ends, however it ends (answer, error,
caller cancel), from the call's attempt records: each try's usage and exact
cost, so failed tries the relay billed and half-received streams are
counted, and nothing is counted twice. A call counts as an error when it
ends with an error status; a caller that cancels or stops reading a stream
is not an error (what it was billed for is still entered).

`Ledger.record` never waits (``server/state/ledger.py``): a ledger that
writes to a database queues the record and writes it from a task of its
own, so nothing here waits on I/O on the request path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import Call, Completion, StreamEvent
from server.pipeline.base import Handler, Stage
from server.state.ledger import CallRecord, Ledger


class AccountingStage(Stage[Call]):
    """Enters each call in the ledger when it ends."""

    __slots__ = ("_clock", "_ledger")

    def __init__(
        self, next_handler: Handler[Call], ledger: Ledger, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(next_handler)
        self._ledger = ledger
        self._clock = clock

    def _record(self, call: Call, failed: bool) -> None:
        identity = call.identity
        self._ledger.record(
            CallRecord(
                call.request_id,
                identity.tenant,
                self._clock.wall(),
                tuple(call.attempts),
                failed,
                call.cache,
                call.saved_cost,
                identity.key_id,
                identity.user,
            )
        )

    async def query(self, call: Call, /) -> Completion:
        """Answer, then account (also on failure or cancel)."""
        failed = False
        try:
            return await self.next.query(call)
        except Exception:  # an error status; CancelledError is not an Exception
            failed = True
            raise
        finally:
            self._record(call, failed)

    async def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream, then account (also on failure, cancel or early close)."""
        failed = False
        try:
            async with aclosing(self.next.stream(call)) as events:
                async for event in events:
                    yield event
        except Exception:
            failed = True
            raise
        finally:
            self._record(call, failed)
