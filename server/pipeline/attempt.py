"""The innermost stage: one try of one model on the relay, costed and recorded.

Every try appends exactly one Attempt to its call, on every path (answer,
relay error, caller cancel), carrying the usage the relay billed for it and
that usage's exact cost. Cost is computed here once, from usage; every
figure above (response, ledger, trace) sums these records.

Streams: the try emits StreamStart just before its first text. That is the
point of no return: a failure before it may be retried or fall back; a
failure after it becomes StreamInterruptedError, and the usage of what was
received is still billed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from server.domain import (
    Attempt,
    Completion,
    ModelCall,
    Outcome,
    StreamEvent,
    StreamStart,
    Usage,
)
from server.errors import (
    DeadlineExceededError,
    RelayError,
    RelayTimeoutError,
    StreamInterruptedError,
)
from server.pricing import cost_nanos
from server.relay.client import RelayClient

_DEADLINE_SLACK = 0.002  # a timeout this close to the deadline was the deadline's doing


class RelayAttempt:
    """Sends one ModelCall to the relay and records the Attempt."""

    __slots__ = ("_default_limit", "_relay")

    def __init__(self, relay: RelayClient, default_limit: float) -> None:
        self._relay = relay
        self._default_limit = default_limit

    def _time_limit(self, item: ModelCall, now: float) -> float:
        """The try's time limit: ours, or less when the caller's deadline is nearer."""
        remaining = item.call.remaining(now)
        if remaining is None:
            return self._default_limit
        if remaining <= _DEADLINE_SLACK:
            raise DeadlineExceededError(item.model.name)
        return min(remaining, self._default_limit)

    async def query(self, item: ModelCall, /) -> Completion:
        """One unary try."""
        call, model = item.call, item.model
        started = time.monotonic()
        time_limit = self._time_limit(item, started)
        try:
            completion = await self._relay.complete(
                model, call.request, item.max_tokens, time_limit
            )
        except RelayError as error:
            call.attempts.append(
                Attempt(
                    model,
                    _outcome(item, error),
                    time.monotonic() - started,
                    error.http_status,
                    error.reason,
                )
            )
            _raise_deadline_if_spent(item, error)
            raise
        except asyncio.CancelledError:
            call.attempts.append(Attempt(model, Outcome.CANCELLED, time.monotonic() - started))
            raise
        call.attempts.append(
            Attempt(
                model,
                Outcome.SUCCESS,
                time.monotonic() - started,
                http_status=200,
                usage=completion.usage,
                cost=cost_nanos(completion.usage, model.price),
            )
        )
        return completion

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """One streamed try; see the module docstring for its point of no return."""
        call, model = item.call, item.model
        started = time.monotonic()
        relay_stream = self._relay.stream(
            model, call.request, item.max_tokens, self._time_limit(item, started)
        )
        committed = recorded = False
        outcome, failure = Outcome.CANCELLED, None
        try:
            async with aclosing(relay_stream.__aiter__()) as events:
                async for event in events:
                    if not committed:
                        committed = True
                        call.first_token_at = time.monotonic()
                        yield StreamStart(model)
                    if isinstance(event, Completion):
                        # Record before handing the end over: the caller builds
                        # its final message from the attempts.
                        recorded = True
                        call.attempts.append(
                            _record(item, Outcome.SUCCESS, started, relay_stream.usage)
                        )
                    yield event
        except RelayError as error:
            failure = error
            if committed:
                outcome = Outcome.INTERRUPTED
                delivered = relay_stream.usage.output_tokens
                raise StreamInterruptedError(error, delivered) from None
            outcome = _outcome(item, error)
            _raise_deadline_if_spent(item, error)
            raise
        finally:
            if not recorded:
                call.attempts.append(_record(item, outcome, started, relay_stream.usage, failure))


def _deadline_spent(item: ModelCall, error: RelayError) -> bool:
    """Did this timeout run into the caller's deadline (rather than ours)?"""
    remaining = item.call.remaining(time.monotonic())
    return (
        isinstance(error, RelayTimeoutError)
        and remaining is not None
        and remaining <= _DEADLINE_SLACK
    )


def _outcome(item: ModelCall, error: RelayError) -> Outcome:
    if _deadline_spent(item, error):
        return Outcome.CANCELLED
    return Outcome.RETRYABLE_ERROR if error.retryable else Outcome.FINAL_ERROR


def _raise_deadline_if_spent(item: ModelCall, error: RelayError) -> None:
    """A timeout that ran into the caller's deadline is the deadline's error."""
    if _deadline_spent(item, error):
        raise DeadlineExceededError(item.model.name) from None


def _record(
    item: ModelCall,
    outcome: Outcome,
    started: float,
    usage: Usage,
    failure: RelayError | None = None,
) -> Attempt:
    return Attempt(
        item.model,
        outcome,
        time.monotonic() - started,
        failure.http_status if failure else 200 if outcome is Outcome.SUCCESS else 0,
        failure.reason if failure else "",
        usage,
        cost_nanos(usage, item.model.price),
    )
