import email.utils

import grpc
import pytest

from server.errors import (
    AllModelsFailedError,
    ContextLengthError,
    RelayAuthError,
    RelayPermissionError,
    RelayRejectedError,
    RelayUnavailableError,
    SpendLimitError,
    StreamInterruptedError,
    UnknownModelError,
    classify,
    retry_after_seconds,
)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529, 599])
def test_retryable_statuses(status):
    error = classify(status, {}, b"{}")
    assert isinstance(error, RelayUnavailableError)
    assert error.retryable
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.http_status == status


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, RelayRejectedError, grpc.StatusCode.INVALID_ARGUMENT),
        (401, RelayAuthError, grpc.StatusCode.UNAUTHENTICATED),
        (403, RelayPermissionError, grpc.StatusCode.PERMISSION_DENIED),
        (404, RelayRejectedError, grpc.StatusCode.INVALID_ARGUMENT),
        (413, RelayRejectedError, grpc.StatusCode.INVALID_ARGUMENT),
        (422, RelayRejectedError, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_final_statuses(status, kind, code):
    error = classify(status, {}, b'{"error": {"message": "nope"}}')
    assert type(error) is kind
    assert not error.retryable
    assert error.code is code


def test_auth_errors_tell_the_operator_what_to_check():
    error = classify(401, {}, b'{"error": {"message": "Incorrect API key provided: sk-abc"}}')
    assert "SWITCHYARD_RELAY_API_KEY" in error.message
    assert "sk-abc" not in error.message  # the relay's text (which may echo keys) is not used


def test_context_length_is_recognised_in_both_wires():
    openai = classify(400, {}, b'{"error": {"code": "context_length_exceeded"}}')
    anthropic = classify(400, {}, b'{"type": "error", "error": {"message": "prompt is too long"}}')
    assert isinstance(openai, ContextLengthError)
    assert isinstance(anthropic, ContextLengthError)
    assert not openai.retryable


def test_spend_limit_429_is_final_but_plain_429_is_retryable():
    spend = classify(429, {}, b'{"error": {"code": "insufficient_quota"}}')
    assert isinstance(spend, SpendLimitError)
    assert not spend.retryable
    assert spend.code is grpc.StatusCode.FAILED_PRECONDITION
    assert classify(429, {}, b'{"error": {"code": "rate_limit_exceeded"}}').retryable


def test_rejected_request_shows_the_relay_message_to_the_caller_but_not_in_reason():
    error = classify(400, {}, b'{"error": {"message": "max_tokens too large"}}')
    assert "max_tokens too large" in error.message
    assert "max_tokens too large" not in error.reason
    assert error.reason.startswith("HTTP 400")


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    when = email.utils.formatdate(1_000_010, usegmt=True)
    assert retry_after_seconds({"retry-after": when}, now=1_000_000) == pytest.approx(10)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert classify(429, {"retry-after": "2"}, b"").retry_after == 2.0


def test_all_models_failed_takes_the_final_errors_status_and_names_every_model():
    overloaded = classify(503, {}, b"")
    auth = classify(401, {}, b"")
    error = AllModelsFailedError([("gpt-4.1", overloaded), ("claude", auth)])
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert "gpt-4.1: HTTP 503" in error.message and "claude: HTTP 401" in error.message
    only_overloads = AllModelsFailedError(
        [
            ("a", classify(503, {"retry-after": "4"}, b"")),
            ("b", classify(429, {"retry-after": "2"}, b"")),
        ]
    )
    assert only_overloads.code is grpc.StatusCode.UNAVAILABLE
    assert only_overloads.retry_after == 2.0


def test_unknown_model_lists_served_models():
    error = UnknownModelError("gpt-5", ["a", "b"])
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "a, b" in error.message


def test_stream_interrupted_says_how_many_tokens_were_delivered():
    error = StreamInterruptedError(classify(502, {}, b""), 17)
    assert "17 tokens" in error.message
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert not error.retryable
