"""The innermost stage: one try of one model on the relay, costed and recorded.

Every try appends exactly one Attempt to its call, on every path (answer,
relay error, caller cancel), carrying the usage the relay billed for it and
that usage's exact cost. Cost is computed here once, from usage; every
figure above (response, ledger, trace) sums these records. The same moment
ends the try's CLIENT span (`chat {model}`) and records its metrics, and the
relay request carries that span's `traceparent`.

Streams: the try emits StreamStart just before its first text. That is the
point of no return: a failure before it may be retried or fall back; a
failure after it becomes StreamInterruptedError, and the usage of what was
received is still billed.

Structured output: when the request asks for a JSON answer, the try checks
the answer's text against it (``structured.py``). With `validate_json`
"fallback" (the default), a unary answer that fails is an INVALID_OUTPUT
attempt, billed, and InvalidOutputError sends the call on to the next model;
"report" returns it marked invalid; "off" checks nothing. A stream's text has
reached the caller by then, so its end only says whether it validated.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

from server import telemetry as semconv
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import (
    Attempt,
    Completion,
    FinishReason,
    ModelCall,
    Outcome,
    Request,
    StreamEvent,
    StreamStart,
    Usage,
    Validation,
)
from server.errors import (
    DeadlineExceededError,
    InvalidOutputError,
    RelayError,
    RelayTimeoutError,
    StreamInterruptedError,
)
from server.pricing import cost_nanos
from server.relay.client import RelayClient, RelayStream
from server.structured import check
from server.telemetry import Telemetry

_DEADLINE_SLACK = 0.002  # a timeout this close to the deadline was the deadline's doing


class RelayAttempt:
    """Sends one ModelCall to the relay and records the Attempt."""

    __slots__ = ("_clock", "_default_limit", "_relay", "_server", "_telemetry", "_validate")

    def __init__(
        self,
        relay: RelayClient,
        default_limit: float,
        telemetry: Telemetry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        validate_json: str = "fallback",
    ) -> None:
        self._relay = relay
        self._validate = validate_json
        self._default_limit = default_limit
        self._telemetry = telemetry or Telemetry.disabled()
        self._clock = clock
        url = httpx.URL(relay.base_url)
        self._server = {
            semconv.SERVER_ADDRESS: url.host,
            semconv.SERVER_PORT: url.port or (443 if url.scheme == "https" else 80),
        }

    def _time_limit(self, item: ModelCall, now: float) -> float:
        """The try's time limit: ours, or less when the caller's deadline is nearer."""
        remaining = item.call.remaining(now)
        if remaining is None:
            return self._default_limit
        if remaining <= _DEADLINE_SLACK:
            raise DeadlineExceededError(item.model.name)
        return min(remaining, self._default_limit)

    def _span(self, item: ModelCall, stream: bool) -> Span:
        """The try's CLIENT span, under the call's SERVER span."""
        if not self._telemetry.tracing:
            return INVALID_SPAN
        request, model = item.call.request, item.model
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: "chat",
            semconv.GEN_AI_PROVIDER_NAME: model.provider,
            semconv.GEN_AI_REQUEST_MODEL: model.name,
            semconv.GEN_AI_REQUEST_MAX_TOKENS: item.max_tokens,
            semconv.GEN_AI_REQUEST_STREAM: stream,
            **self._server,
        }
        if request.temperature is not None:
            attributes[semconv.GEN_AI_REQUEST_TEMPERATURE] = request.temperature
        if request.top_p is not None:
            attributes[semconv.GEN_AI_REQUEST_TOP_P] = request.top_p
        span = self._telemetry.child(
            item.call.span, f"chat {model.name}", SpanKind.CLIENT, attributes
        )
        self._telemetry.capture(
            span,
            semconv.GEN_AI_INPUT_MESSAGES,
            lambda: [{"role": m.role.text, "content": m.text} for m in request.messages],
        )
        return span

    def _record(
        self,
        item: ModelCall,
        span: Span,
        attempt: Attempt,
        *,
        stream: bool,
        error: BaseException | None = None,
        first_chunk: float | None = None,
        finish: FinishReason | None = None,
    ) -> None:
        """Append the attempt, end its span and record its metrics: once per try."""
        item.call.attempts.append(attempt)
        self._telemetry.finish_attempt(
            span,
            attempt,
            error,
            first_chunk,
            None if finish is None else finish.text,
        )
        self._telemetry.record_attempt(attempt, item.call.identity.tenant, stream)

    def _validated(self, request: Request, completion: Completion, text: str) -> Completion:
        """`completion` with whether `text` has the requested JSON format (unchanged when
        none was asked for, when checking is off, or when the answer is tool calls)."""
        fmt = request.response_format
        if fmt is None or not fmt.json or self._validate == "off" or completion.tool_calls:
            return completion
        problem = check(fmt, text)
        if problem is None:
            return dataclasses.replace(completion, validation=Validation.VALID)
        return dataclasses.replace(
            completion, validation=Validation.INVALID, validation_error=problem
        )

    def _end(
        self,
        item: ModelCall,
        span: Span,
        end: Completion,
        relay_stream: RelayStream,
        *,
        first_chunk: float,
        started: float,
    ) -> Completion:
        """A structured stream's end: its text checked, the attempt recorded."""
        text = relay_stream.text
        end = self._validated(item.call.request, end, text)
        self._telemetry.capture(
            span, semconv.GEN_AI_OUTPUT_MESSAGES, lambda: [{"role": "assistant", "content": text}]
        )
        latency = self._clock.monotonic() - started
        answered = _attempt(item, Outcome.SUCCESS, latency, relay_stream.usage)
        self._record(
            item, span, answered, stream=True, first_chunk=first_chunk, finish=end.finish_reason
        )
        return end

    async def query(self, item: ModelCall, /) -> Completion:
        """One unary try."""
        call, model = item.call, item.model
        started = self._clock.monotonic()
        time_limit = self._time_limit(item, started)
        span = self._span(item, stream=False)
        try:
            completion = await self._relay.complete(
                model,
                call.request,
                item.max_tokens,
                time_limit,
                extra_headers=self._telemetry.trace_headers(span),
            )
        except RelayError as error:
            ended = self._clock.monotonic()
            failed = Attempt(
                model,
                _outcome(item, error, ended),
                ended - started,
                error.http_status,
                error.reason,
            )
            self._record(item, span, failed, stream=False, error=error)
            _raise_deadline_if_spent(item, error, ended)
            raise
        except asyncio.CancelledError as cancel:
            cancelled = Attempt(model, Outcome.CANCELLED, self._clock.monotonic() - started)
            self._record(item, span, cancelled, stream=False, error=cancel)
            raise
        if not call.request.plain:
            completion = self._validated(call.request, completion, completion.content)
            if completion.validation is Validation.INVALID and self._validate == "fallback":
                invalid = InvalidOutputError(model.name, completion.validation_error)
                latency = self._clock.monotonic() - started
                usage = completion.usage
                failed = Attempt(
                    model, Outcome.INVALID_OUTPUT, latency, 200, invalid.reason, usage,
                    cost_nanos(usage, model.price),
                )  # fmt: skip
                self._record(item, span, failed, stream=False, error=invalid)
                raise invalid
        answered = _attempt(
            item, Outcome.SUCCESS, self._clock.monotonic() - started, completion.usage
        )
        self._telemetry.capture(
            span,
            semconv.GEN_AI_OUTPUT_MESSAGES,
            lambda: [{"role": "assistant", "content": completion.content}],
        )
        self._record(item, span, answered, stream=False, finish=completion.finish_reason)
        return completion

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """One streamed try; see the module docstring for its point of no return."""
        call, model = item.call, item.model
        started = self._clock.monotonic()
        time_limit = self._time_limit(item, started)
        span = self._span(item, stream=True)
        relay_stream = self._relay.stream(
            model,
            call.request,
            item.max_tokens,
            time_limit,
            extra_headers=self._telemetry.trace_headers(span),
        )
        first_chunk: float | None = None
        recorded = False
        outcome: Outcome = Outcome.CANCELLED
        failure: BaseException | None = None
        try:
            async with aclosing(relay_stream.__aiter__()) as events:
                async for event in events:
                    if first_chunk is None:
                        call.first_token_at = self._clock.monotonic()
                        first_chunk = call.first_token_at - started
                        yield StreamStart(model)
                    if type(event) is Completion:
                        if not call.request.plain:
                            end = self._end(
                                item,
                                span,
                                event,
                                relay_stream,
                                first_chunk=first_chunk,
                                started=started,
                            )
                            recorded = True
                            yield end
                            continue
                        # Record before handing the end over: the caller builds
                        # its final message from the attempts.
                        recorded = True
                        self._telemetry.capture(
                            span,
                            semconv.GEN_AI_OUTPUT_MESSAGES,
                            lambda: [{"role": "assistant", "content": relay_stream.text}],
                        )
                        self._record(
                            item,
                            span,
                            _attempt(
                                item,
                                Outcome.SUCCESS,
                                self._clock.monotonic() - started,
                                relay_stream.usage,
                            ),
                            stream=True,
                            first_chunk=first_chunk,
                            finish=event.finish_reason,
                        )
                    yield event
        except RelayError as error:
            failure = error
            if first_chunk is not None:
                outcome = Outcome.INTERRUPTED
                delivered = relay_stream.usage.output_tokens
                raise StreamInterruptedError(error, delivered) from None
            ended = self._clock.monotonic()
            outcome = _outcome(item, error, ended)
            _raise_deadline_if_spent(item, error, ended)
            raise
        except BaseException as other:  # cancel, or the consumer closing the stream
            failure = other
            raise
        finally:
            if not recorded:
                self._record(
                    item,
                    span,
                    _attempt(
                        item,
                        outcome,
                        self._clock.monotonic() - started,
                        relay_stream.usage,
                        failure,
                    ),
                    stream=True,
                    error=failure,
                    first_chunk=first_chunk,
                )


def _deadline_spent(item: ModelCall, error: RelayError, now: float) -> bool:
    """Did this timeout run into the caller's deadline (rather than ours)?"""
    remaining = item.call.remaining(now)
    return (
        isinstance(error, RelayTimeoutError)
        and remaining is not None
        and remaining <= _DEADLINE_SLACK
    )


def _outcome(item: ModelCall, error: RelayError, now: float) -> Outcome:
    if _deadline_spent(item, error, now):
        return Outcome.CANCELLED
    return Outcome.RETRYABLE_ERROR if error.retryable else Outcome.FINAL_ERROR


def _raise_deadline_if_spent(item: ModelCall, error: RelayError, now: float) -> None:
    """A timeout that ran into the caller's deadline is the deadline's error."""
    if _deadline_spent(item, error, now):
        raise DeadlineExceededError(item.model.name) from None


def _attempt(
    item: ModelCall,
    outcome: Outcome,
    latency: float,
    usage: Usage,
    failure: BaseException | None = None,
) -> Attempt:
    relay_failure = failure if isinstance(failure, RelayError) else None
    return Attempt(
        item.model,
        outcome,
        latency,
        relay_failure.http_status if relay_failure else 200 if outcome is Outcome.SUCCESS else 0,
        relay_failure.reason if relay_failure else "",
        usage,
        cost_nanos(usage, item.model.price),
    )
