"""gRPC failures -> the client's exception classes, with everything the gateway said."""

import grpc
import pytest
from google.rpc import error_details_pb2
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard_client import errors
from switchyard_client.errors import translate

from .fakes import Failure, packed, retry_info


class FailedCall:
    """The three methods translate() reads, as a failed call offers them."""

    def __init__(self, failure: Failure) -> None:
        self._failure = failure

    def code(self):
        return self._failure.code

    def details(self):
        return self._failure.message

    def trailing_metadata(self):
        return self._failure.trailers()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidRequestError),
        (grpc.StatusCode.OUT_OF_RANGE, errors.InvalidRequestError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RateLimitedError),
        (grpc.StatusCode.UNAVAILABLE, errors.UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceededError),
        (grpc.StatusCode.CANCELLED, errors.CancelledError),
        (grpc.StatusCode.UNAUTHENTICATED, errors.AuthenticationError),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDeniedError),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPreconditionError),
        (grpc.StatusCode.UNIMPLEMENTED, errors.UnimplementedError),
        (grpc.StatusCode.INTERNAL, errors.InternalError),
        (grpc.StatusCode.UNKNOWN, errors.InternalError),
        (grpc.StatusCode.NOT_FOUND, errors.NotFoundError),  # the admin API's
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExistsError),
        (grpc.StatusCode.ABORTED, errors.InternalError),  # not one Switchyard sends
    ],
)
def test_each_status_has_its_class_and_keeps_the_code(code, cls):
    error = translate(FailedCall(Failure(code, "why")))
    assert type(error) is cls
    assert isinstance(error, errors.SwitchyardError)
    assert (error.code, error.details, error.request_id, error.retry_after) == (
        code,
        "why",
        None,
        None,
    )


def test_request_id_retry_delay_quota_and_attempts_come_from_the_trailers():
    attempt = pb.Attempt(
        model="gpt-4.1",
        provider="openai",
        outcome=pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR,
        http_status=529,
        error="HTTP 529: overloaded",
        latency_ms=12,
    )
    attempt.cost.nanos = 1500
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(description="relay budget spent")]
    )
    failure = Failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "budget spent",
        request_id="00ff00ff00ff00ff",
        details=[retry_info(2.5), packed(quota), packed(attempt)],
    )
    error = translate(FailedCall(failure))
    assert isinstance(error, errors.RateLimitedError) and error.retryable
    assert error.request_id == "00ff00ff00ff00ff"
    assert error.retry_after == 2.5
    assert error.quota_violations == ("relay budget spent",)
    [seen] = error.attempts
    assert (seen.model, seen.outcome, seen.http_status, seen.latency_ms) == (
        "gpt-4.1",
        "RETRYABLE_ERROR",
        529,
        12,
    )
    assert str(seen.cost) == "0.0000015"
    assert str(error) == "RESOURCE_EXHAUSTED: budget spent (request id 00ff00ff00ff00ff)"


def test_translated_turns_a_real_rpc_error_into_the_client_error(fake):
    fake.gateway.failure = Failure(grpc.StatusCode.UNAVAILABLE, "down", request_id="abc")
    with grpc.insecure_channel(fake.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(errors.UnavailableError) as caught, errors.translated():
            stub.Query(pb.QueryRequest())
    assert caught.value.request_id == "abc"
    assert isinstance(caught.value.__cause__, grpc.RpcError)
