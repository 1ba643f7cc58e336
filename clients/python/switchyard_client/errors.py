"""The errors a Switchyard call raises, one class per kind of gRPC status.

The hierarchy::

    SwitchyardError                 any failed call: code, details, request_id, retry_after,
                                    attempts, quota_violations
    ├── InvalidRequestError         INVALID_ARGUMENT, OUT_OF_RANGE: fix the request
    ├── RateLimitedError            RESOURCE_EXHAUSTED: retry after `retry_after`       (retryable)
    ├── UnavailableError            UNAVAILABLE: the gateway or every model failed       (retryable)
    ├── DeadlineExceededError       DEADLINE_EXCEEDED: allow more time
    ├── CancelledError              CANCELLED: the call was cancelled
    ├── AuthenticationError         UNAUTHENTICATED: credentials were refused
    ├── PermissionDeniedError       PERMISSION_DENIED: the credentials may not do this
    ├── NotFoundError               NOT_FOUND: no such tenant or key (admin API)
    ├── AlreadyExistsError          ALREADY_EXISTS: the tenant exists already (admin API)
    ├── FailedPreconditionError     FAILED_PRECONDITION: an operator must act (spend limit)
    ├── UnimplementedError          UNIMPLEMENTED: this gateway does not serve the RPC yet
    └── InternalError               INTERNAL, UNKNOWN and anything else: quote the request id

gRPC errors become these at exactly one point, :func:`translate`, which
reads the status, the gateway's request id (trailing metadata
``x-switchyard-request-id``) and the ``google.rpc.Status`` details:
``RetryInfo`` (the delay before a retry may succeed), ``QuotaFailure`` and
the ``switchyard.v1.Attempt`` records of every model tried.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar, Protocol

import grpc
from google.rpc import error_details_pb2, status_pb2
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.results import Attempt

REQUEST_ID_HEADER = "x-switchyard-request-id"
_DETAILS_HEADER = "grpc-status-details-bin"


class SwitchyardError(Exception):
    """A call to Switchyard failed; carries everything the gateway said about why."""

    codes: ClassVar[tuple[grpc.StatusCode, ...]] = ()
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
        attempts: tuple[Attempt, ...] = (),
        quota_violations: tuple[str, ...] = (),
    ) -> None:
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{code.name}: {details}{suffix}")
        self.code = code
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = attempts
        self.quota_violations = quota_violations


class InvalidRequestError(SwitchyardError):
    """The request cannot be served as written; the details name the field."""

    codes = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)


class RateLimitedError(SwitchyardError):
    """A budget or limit is spent for now; `retry_after` says when to try again."""

    codes = (grpc.StatusCode.RESOURCE_EXHAUSTED,)
    retryable = True


class UnavailableError(SwitchyardError):
    """The gateway, the relay or every model tried failed; trying again may work."""

    codes = (grpc.StatusCode.UNAVAILABLE,)
    retryable = True


class DeadlineExceededError(SwitchyardError):
    """The deadline passed before the answer was complete."""

    codes = (grpc.StatusCode.DEADLINE_EXCEEDED,)


class CancelledError(SwitchyardError):
    """The call was cancelled before it completed."""

    codes = (grpc.StatusCode.CANCELLED,)


class AuthenticationError(SwitchyardError):
    """Credentials were missing or refused."""

    codes = (grpc.StatusCode.UNAUTHENTICATED,)


class PermissionDeniedError(SwitchyardError):
    """The credentials are valid but may not do this."""

    codes = (grpc.StatusCode.PERMISSION_DENIED,)


class NotFoundError(SwitchyardError):
    """The tenant or key named does not exist (admin API)."""

    codes = (grpc.StatusCode.NOT_FOUND,)


class AlreadyExistsError(SwitchyardError):
    """What was to be created exists already (admin API)."""

    codes = (grpc.StatusCode.ALREADY_EXISTS,)


class FailedPreconditionError(SwitchyardError):
    """The system is not in a state to serve the call (for example a spend limit)."""

    codes = (grpc.StatusCode.FAILED_PRECONDITION,)


class UnimplementedError(SwitchyardError):
    """This gateway does not serve the RPC (an older build)."""

    codes = (grpc.StatusCode.UNIMPLEMENTED,)


class InternalError(SwitchyardError):
    """Anything else: a bug on the way; the request id finds it in the gateway's log."""

    codes = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS)


_BY_CODE: dict[grpc.StatusCode, type[SwitchyardError]] = {
    code: cls
    for cls in (
        InvalidRequestError,
        RateLimitedError,
        UnavailableError,
        DeadlineExceededError,
        CancelledError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        UnimplementedError,
        InternalError,
    )
    for code in cls.codes
}


class FailedCall(Protocol):
    """What sync and asyncio gRPC errors both offer."""

    def code(self) -> grpc.StatusCode:
        """The status code."""
        ...

    def details(self) -> str | None:
        """The status message."""
        ...

    def trailing_metadata(self) -> Iterable[tuple[str, str | bytes]] | None:
        """Trailing metadata, details included."""
        ...


def error_class(code: grpc.StatusCode) -> type[SwitchyardError]:
    """The exception class raised for a status code."""
    return _BY_CODE.get(code, InternalError)


def translate(error: FailedCall) -> SwitchyardError:
    """The Switchyard error for a failed gRPC call: status, request id and details."""
    code = error.code()
    request_id = None
    status = None
    for key, value in error.trailing_metadata() or ():
        if key == REQUEST_ID_HEADER:
            request_id = value if isinstance(value, str) else value.decode("utf-8", "replace")
        elif key == _DETAILS_HEADER and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
    retry_after, attempts, violations = _read_details(status)
    return error_class(code)(
        code,
        error.details() or "",
        request_id=request_id,
        retry_after=retry_after,
        attempts=attempts,
        quota_violations=violations,
    )


@contextmanager
def translated() -> Iterator[None]:
    """Raise every gRPC error inside the block as a SwitchyardError."""
    try:
        yield
    except grpc.RpcError as error:
        if not isinstance(error, grpc.Call | grpc.aio.AioRpcError):
            raise  # an RpcError without a status (never seen in practice): leave it as is
        raise translate(error) from error


def _read_details(
    status: status_pb2.Status | None,
) -> tuple[float | None, tuple[Attempt, ...], tuple[str, ...]]:
    retry_after = None
    attempts: list[Attempt] = []
    violations: list[str] = []
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        failure = error_details_pb2.QuotaFailure()
        attempt = pb.Attempt()
        # Unpack fills the message and answers True only when the type matches.
        if detail.Unpack(info):
            retry_after = info.retry_delay.ToNanoseconds() / 1e9
        elif detail.Unpack(failure):
            violations.extend(v.description for v in failure.violations)
        elif detail.Unpack(attempt):
            attempts.append(Attempt.from_proto(attempt))
    return retry_after, tuple(attempts), tuple(violations)
