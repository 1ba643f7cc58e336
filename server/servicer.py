"""The four RPCs of switchyard.v1.GatewayService.

Each handler is thin: proto -> domain (convert.py), the pipeline, domain ->
proto. Every failure leaves as a gRPC status with an actionable message; a
SwitchyardError carries its own status, anything else is a bug and leaves as
INTERNAL with only the request id, never a traceback.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import aclosing
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server import convert
from server.domain import Attempt, Call, Completion, StreamStart
from server.errors import (
    CapacityError,
    InvalidRequestError,
    RelayError,
    ShuttingDownError,
    SwitchyardError,
)
from server.pipeline import Pipeline
from server.telemetry import Telemetry

log = logging.getLogger("switchyard")

CALLER_HEADER = "x-switchyard-caller"
REQUEST_ID_HEADER = "x-switchyard-request-id"
ANONYMOUS = "anonymous"
MAX_CALLER_LENGTH = 128
_MAX_DETAIL_ATTEMPTS = 16
_CALLER_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)

Context = grpc.aio.ServicerContext[Any, Any]


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Serves Route, Query and StreamQuery through the pipeline, and GetUsage from the ledger."""

    def __init__(self, pipeline: Pipeline, telemetry: Telemetry | None = None) -> None:
        self._pipeline = pipeline
        self._telemetry = telemetry or Telemetry.disabled()
        self.draining = False  # set when shutdown begins: new calls are refused

    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:
        """Decide where the query would go and whether its budget admits it; call nothing."""
        span = self._telemetry.server_span("Route", context.invocation_metadata())
        code = grpc.StatusCode.CANCELLED  # until the call ends another way
        failure: BaseException | None = None
        try:
            self._admit()
            query = convert.request_from_proto(request.query)
            caller = _caller(context.invocation_metadata() or ())
            route, admission = self._pipeline.preview(query, caller)
            decision = convert.route_to_proto(route, admission)
            breakers = self._pipeline.breakers
            decision.model_states.extend(
                convert.model_state(model, *breakers.state(model)) for model in route.chain
            )
            code = grpc.StatusCode.OK
            return pb.RouteResponse(route=decision)
        except SwitchyardError as error:
            code, failure = error.code, error
            await _abort(context, error, "")
        finally:
            self._telemetry.finish_rpc(span, code, failure)

    async def Query(self, request: pb.QueryRequest, context: Context) -> pb.QueryResponse:
        """Answer the query in one response."""
        call = await self._new_call(request.query, context, "Query")
        code = grpc.StatusCode.CANCELLED  # until the call ends another way
        failure: BaseException | None = None
        try:
            completion = await self._pipeline.handler.query(call)
            response = convert.query_response(call, completion, time.monotonic())
            code = grpc.StatusCode.OK
            return response
        except SwitchyardError as error:
            code, failure = error.code, error
            await _abort(context, error, call.request_id, call.attempts)
        except Exception as exc:  # a bug: keep its details in our log only
            code, failure = grpc.StatusCode.INTERNAL, exc
            await _internal(context, exc, call.request_id)
        finally:
            self._telemetry.finish_call(call, code, failure)

    async def StreamQuery(
        self,
        request: pb.StreamQueryRequest,
        context: Context,
    ) -> AsyncIterator[pb.StreamQueryResponse]:
        """Answer the query as a stream: start, deltas, end."""
        call = await self._new_call(request.query, context, "StreamQuery")
        code = grpc.StatusCode.CANCELLED  # until the call ends another way
        failure: BaseException | None = None
        try:
            async with aclosing(self._pipeline.handler.stream(call)) as events:
                async for event in events:
                    if type(event) is str:
                        yield pb.StreamQueryResponse(delta=pb.TextDelta(text=event))
                    elif isinstance(event, StreamStart):
                        yield convert.stream_start(call, event.model)
                    elif isinstance(event, Completion):
                        yield convert.stream_end(call, event, time.monotonic())
            code = grpc.StatusCode.OK
        except SwitchyardError as error:
            code, failure = error.code, error
            await _abort(context, error, call.request_id, call.attempts)
        except Exception as exc:
            code, failure = grpc.StatusCode.INTERNAL, exc
            await _internal(context, exc, call.request_id)
        finally:
            self._telemetry.finish_call(call, code, failure)

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:
        """The calling caller's spend, tokens, cache savings and budgets over a window."""
        span = self._telemetry.server_span("GetUsage", context.invocation_metadata())
        code = grpc.StatusCode.CANCELLED  # until the call ends another way
        failure: BaseException | None = None
        try:
            self._admit()
            caller = _caller(context.invocation_metadata() or ())
            start, end = convert.usage_window(request, time.time())
            pipeline = self._pipeline
            response = convert.usage_response(
                pipeline.ledger.summary(caller, start, end),
                pipeline.budgets.status(caller),
                pipeline.limits.provider_load(),
            )
            code = grpc.StatusCode.OK
            return response
        except SwitchyardError as error:
            code, failure = error.code, error
            await _abort(context, error, "")
        finally:
            self._telemetry.finish_rpc(span, code, failure)

    def _admit(self) -> None:
        if self.draining:
            raise ShuttingDownError(
                "this Switchyard instance is shutting down; retry, and the call will go"
                " to another instance"
            )

    async def _new_call(self, spec: pb.QuerySpec, context: Context, method: str) -> Call:
        """Validate the request and open its Call (and SERVER span); refuse a bad one at once."""
        now = time.monotonic()
        metadata = context.invocation_metadata() or ()
        span = self._telemetry.server_span(method, metadata)
        try:
            self._admit()
            request = convert.request_from_proto(spec)
            caller = _caller(metadata)
        except SwitchyardError as error:
            self._telemetry.finish_rpc(span, error.code, error)
            await _abort(context, error, "")
        remaining = context.time_remaining()
        return Call(
            request=request,
            request_id=secrets.token_hex(8),
            caller=caller,
            started=now,
            deadline=None if remaining is None else now + remaining,
            span=span,
        )


def _caller(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    for key, value in metadata:
        if key == CALLER_HEADER:
            caller = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if not caller or len(caller) > MAX_CALLER_LENGTH or not caller.isprintable():
                raise InvalidRequestError(
                    f"metadata {CALLER_HEADER} must be 1 to {MAX_CALLER_LENGTH} printable"
                    " characters naming the calling service"
                )
            return caller
    return ANONYMOUS


async def _abort(
    context: Context,
    error: SwitchyardError,
    request_id: str,
    attempts: Sequence[Attempt] = (),
) -> NoReturn:
    """End the RPC with the error's status, message, retry hints and attempts."""
    if error.code in _CALLER_ERRORS:
        log.info("call %s refused: %s", request_id or "-", error.code.name)
    else:
        why = error.reason if isinstance(error, RelayError) else type(error).__name__
        log.warning("call %s failed: %s (%s)", request_id or "-", error.code.name, why)
    metadata: list[tuple[str, str | bytes]] = []
    if request_id:
        metadata.append((REQUEST_ID_HEADER, request_id))
    details = _details(error, attempts)
    if details:
        status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
        metadata.append(("grpc-status-details-bin", status.SerializeToString()))
    await context.abort(error.code, error.message, tuple(metadata))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


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
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error in Switchyard (request id {request_id}); the operator can find it"
        " in the gateway's log",
        ((REQUEST_ID_HEADER, request_id),),
    )
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
