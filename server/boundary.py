"""The RPC boundary: how every call of GatewayService enters and leaves.

Route, Query, StreamQuery and GetUsage each run inside one `RpcScope`::

    async with self._boundary.enter("Query", context) as rpc:
        call = rpc.open_call(convert.request_from_proto(request.query))
        ...

Entering opens the RPC's SERVER span (continuing the caller's W3C trace),
gives it a request id, refuses new calls while the instance drains, and
resolves who is calling into an `Identity` (``server/identity.py``), once,
before any handler code runs. Leaving ends the span with the RPC's status
and maps whatever ended the call to that status:

* a `SwitchyardError` leaves with its own status and message, plus
  google.rpc details (RetryInfo, QuotaFailure, the call's attempts) and the
  request id in the `x-switchyard-request-id` trailer;
* any other exception is a bug: INTERNAL, whose message carries only the
  request id; its type goes to the log at ERROR, its traceback (which may
  hold request data) only at DEBUG;
* a cancel (the caller went away) or a closed stream ends the span as
  CANCELLED and propagates untouched; so does a status that can no longer
  be sent because the call's deadline passed meanwhile (`send_status`).

Nothing else in the server catches exceptions to turn them into statuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

# What context.abort raises when the status cannot be sent any more (no public name, no stubs).
from grpc._cython.cygrpc import ExecuteBatchError  # type: ignore[import-not-found]
from opentelemetry.trace import INVALID_SPAN, Span

from server import convert
from server import telemetry as semconv
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import Attempt, Call, Identity, Request
from server.errors import (
    AllModelsFailedError,
    CapacityError,
    RelayError,
    ShuttingDownError,
    SwitchyardError,
)
from server.identity import IdentityResolver
from server.telemetry import Telemetry

log = logging.getLogger("switchyard")

REQUEST_ID_HEADER = "x-switchyard-request-id"
_MAX_DETAIL_ATTEMPTS = 16
_CALLER_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
# Also the caller's to fix when Switchyard says them (a bad key, another tenant's usage, an
# admin API name that does not exist); said by the relay, they are the operator's.
_CALLER_REFUSALS = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)

Context = grpc.aio.ServicerContext[Any, Any]


class RpcBoundary:
    """Where every RPC enters and leaves; `draining` refuses new ones during shutdown."""

    __slots__ = ("_clock", "_resolver", "_service", "_telemetry", "draining")

    def __init__(
        self,
        resolver: IdentityResolver,
        telemetry: Telemetry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        service: str = semconv.SERVICE,
    ) -> None:
        self._resolver = resolver
        self._telemetry = telemetry or Telemetry.disabled()
        self._clock = clock
        self._service = service
        self.draining = False  # set when shutdown begins: new calls are refused

    def enter(self, method: str, context: Context) -> RpcScope:
        """The scope of one RPC: use it as `async with`."""
        return RpcScope(self, method, context)


class RpcScope:
    """One RPC between entering and leaving the boundary."""

    __slots__ = ("_boundary", "_context", "_identity", "call", "method", "request_id", "span")

    def __init__(self, boundary: RpcBoundary, method: str, context: Context) -> None:
        self._boundary = boundary
        self._context = context
        self.method = method
        self.request_id = ""
        self._identity: Identity | None = None  # resolved on entering
        self.call: Call | None = None
        self.span: Span = INVALID_SPAN

    @property
    def identity(self) -> Identity:
        """Who is calling (resolved when the scope was entered)."""
        assert self._identity is not None, "use the identity inside the scope"
        return self._identity

    async def __aenter__(self) -> RpcScope:
        boundary = self._boundary
        context = self._context
        self.span = boundary._telemetry.server_span(
            self.method, context.invocation_metadata(), boundary._service
        )
        self.request_id = os.urandom(8).hex()  # secrets.token_hex(8), without its two calls
        try:
            if boundary.draining:
                raise ShuttingDownError(
                    "this Switchyard instance is shutting down; retry, and the call will go"
                    " to another instance"
                )
            self._identity = await boundary._resolver.resolve(context)
        except BaseException as exc:
            await self._leave(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._leave(exc)

    def open_call(self, request: Request) -> Call:
        """The Call that carries `request` through the pipeline, under this RPC's span.

        The tenant's own labels are added to the request's (they win: they are
        the operator's, for billing).
        """
        policy = self.identity.policy
        labels = None if policy is None else policy.labels
        if labels:
            request = dataclasses.replace(request, labels={**request.labels, **labels})
        now = self._boundary._clock.monotonic()
        remaining = self._context.time_remaining()
        self.call = Call(
            request=request,
            request_id=self.request_id,
            identity=self.identity,
            started=now,
            deadline=None if remaining is None else now + remaining,
            span=self.span,
        )
        return self.call

    async def _leave(self, exc: BaseException | None) -> None:
        """End the span with the RPC's status; abort with the status `exc` maps to."""
        if exc is None:
            self._finish(grpc.StatusCode.OK, None)
        elif isinstance(exc, SwitchyardError):
            self._finish(exc.code, exc)
            await _abort(self._context, exc, self.request_id, self.call, self.method)
        elif isinstance(exc, grpc.aio.AbortError):
            self._finish(self._context.code() or grpc.StatusCode.UNKNOWN, exc)
        elif isinstance(exc, Exception):  # a bug: keep its details in our log only
            self._finish(grpc.StatusCode.INTERNAL, exc)
            await _internal(self._context, exc, self.request_id)
        else:  # CancelledError, GeneratorExit: the caller went away
            self._finish(grpc.StatusCode.CANCELLED, exc)

    def _finish(self, code: grpc.StatusCode, failure: BaseException | None) -> None:
        telemetry = self._boundary._telemetry
        if self.call is not None:
            telemetry.finish_call(self.call, code, failure)
            return
        span = self.span
        if span.is_recording():
            span.set_attribute(semconv.SWITCHYARD_REQUEST_ID, self.request_id)
        telemetry.finish_rpc(span, code, failure)


async def _abort(
    context: Context, error: SwitchyardError, request_id: str, call: Call | None, method: str
) -> NoReturn:
    """End the RPC with the error's status, message, retry hints and attempts."""
    if error.code in _CALLER_ERRORS or (
        error.code in _CALLER_REFUSALS and not isinstance(error, RelayError | AllModelsFailedError)
    ):
        # One line an operator can act on: which call, which method, why (the message,
        # which never holds the prompt, a key or a traceback).
        log.info("call %s %s refused: %s (%s)", request_id, method, error.code.name, error.message)
    else:
        why = error.reason if isinstance(error, RelayError) else type(error).__name__
        log.warning("call %s %s failed: %s (%s)", request_id, method, error.code.name, why)
    metadata: list[tuple[str, str | bytes]] = [(REQUEST_ID_HEADER, request_id)]
    details = _details(error, call.attempts if call is not None else ())
    if details:
        status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
        metadata.append(("grpc-status-details-bin", status.SerializeToString()))
    await send_status(context, error.code, error.message, tuple(metadata))


async def send_status(
    context: Context,
    code: grpc.StatusCode,
    message: str,
    metadata: Sequence[tuple[str, str | bytes]],
) -> NoReturn:
    """End the RPC with `code` and `message` (`context.abort`), or, when the call ended
    meanwhile, let it go: its deadline passed or its caller left, so nobody is listening.

    grpc writes a failed status send to its log with a traceback at ERROR unless it
    noticed the call's end first, and that notice races with the send (a deadline of a
    millisecond meets the refusal of a bad request). The end is the caller's doing:
    the call is cancelled instead, which grpc logs at DEBUG.
    """
    try:
        await context.abort(code, message, tuple(metadata))
    except ExecuteBatchError:
        raise asyncio.CancelledError from None
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def send_messages(context: Context, messages: AsyncGenerator[Any, None]) -> None:
    """Write each of a stream's `messages` (`context.write`), or, when the call ended
    meanwhile, let it go, as `send_status` does: a write that meets a deadline grpc has
    not yet noticed fails in its core, and grpc would log that with a traceback at ERROR
    (the fuzzer's reflection stream, once in a few thousand calls). `messages` is
    closed when the writing stops, however it stops, so what it holds is given back
    at once rather than when the collector finds it.

    grpc writes a handler's async generator through the same `context.write`; a
    handler that writes for itself costs one async generator layer less per message.
    """
    async with aclosing(messages):
        try:
            async for message in messages:
                await context.write(message)
        except ExecuteBatchError:
            raise asyncio.CancelledError from None


def _details(error: SwitchyardError, attempts: Sequence[Attempt]) -> list[any_pb2.Any]:
    """google.rpc details: RetryInfo, QuotaFailure for our limits, and the attempts.

    RetryInfo goes when a retry delay is known; a switchyard.v1.Attempt for each
    try made (the last few of a long chain, well inside gRPC's metadata limit).
    """
    details = []
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(packed)
    if isinstance(error, CapacityError):
        packed = any_pb2.Any()
        packed.Pack(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject="switchyard", description=error.message
                    )
                ]
            )
        )
        details.append(packed)
    for attempt in attempts[-_MAX_DETAIL_ATTEMPTS:]:
        packed = any_pb2.Any()
        packed.Pack(convert.attempt_to_proto(attempt))
        details.append(packed)
    return details


async def _internal(context: Context, exc: Exception, request_id: str) -> NoReturn:
    # The traceback can hold request data, so it is logged only at DEBUG.
    log.error("call %s hit an internal error: %s", request_id, type(exc).__name__)
    log.debug("call %s internal error details", request_id, exc_info=exc)
    await send_status(
        context,
        grpc.StatusCode.INTERNAL,
        f"internal error in Switchyard (request id {request_id}); the operator can find it"
        " in the gateway's log",
        ((REQUEST_ID_HEADER, request_id),),
    )
