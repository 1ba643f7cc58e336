"""Every failure Switchyard reports, each knowing its gRPC status.

The hierarchy::

    SwitchyardError                    INTERNAL: a bug; the caller sees only the request id
    ├── InvalidRequestError            INVALID_ARGUMENT: fix the request
    │   ├── RequestTooLargeError       INVALID_ARGUMENT: too many messages, parts or bytes of text
    │   ├── ContextWindowError         INVALID_ARGUMENT: no model's context window holds the call
    │   └── UnknownModelError          INVALID_ARGUMENT: lists the served models
    ├── AuthenticationError            UNAUTHENTICATED: no key, or one that is not valid (which)
    ├── AccessDeniedError              PERMISSION_DENIED: the caller may not do this (a model
    │                                  outside its allowlist, the admin API, another's usage)
    ├── NotFoundError                  NOT_FOUND: the admin API's tenant or key does not exist
    ├── AlreadyExistsError             ALREADY_EXISTS: the admin API's tenant exists already
    ├── DirectoryUnavailableError      UNAVAILABLE: keys and tenants cannot be read now
    ├── CapacityError                  RESOURCE_EXHAUSTED: Switchyard's own limits; has retry_after
    │   ├── RateLimitedError           a request budget is spent for now
    │   ├── ModelBusyError             one model's limits are reached         (falls back)
    │   ├── BudgetExceededError        the caller's spend budget cannot cover the call
    │   └── AuthThrottledError         too many failed authentications from one peer
    ├── CircuitOpenError               UNAVAILABLE: the model is cooling down  (falls back)
    ├── ShuttingDownError              UNAVAILABLE: this instance is draining; retry elsewhere
    ├── LedgerUnavailableError         UNAVAILABLE: the ledger cannot be read now (usage, export)
    │   └── SpendNotRecordedError      UNAVAILABLE: the call's spend could not be journalled
    ├── BudgetUnknownError             UNAVAILABLE: the tenant's spend is not read back yet
    ├── ExportUnavailableError         FAILED_PRECONDITION: this ledger keeps no calls to export
    ├── DeadlineExceededError          DEADLINE_EXCEEDED: the caller's deadline passed first
    ├── InvalidOutputError             UNAVAILABLE: the answer failed its JSON Schema (falls back)
    ├── RelayError                     one attempt on the relay failed (see `classify`)
    │   ├── RelayAuthError             UNAUTHENTICATED: the relay refused the key        (final)
    │   ├── RelayPermissionError       PERMISSION_DENIED: the key may not use the model  (final)
    │   ├── RelayRejectedError         INVALID_ARGUMENT: the relay refused the request   (final)
    │   │   └── ContextLengthError     INVALID_ARGUMENT: too long; a larger model may take it
    │   ├── SpendLimitError            FAILED_PRECONDITION: the relay account's spend limit (final)
    │   ├── RelayUnavailableError      UNAVAILABLE: overload, rate limit, 5xx          (retryable)
    │   │   ├── RelayConnectError      UNAVAILABLE: the relay could not be reached     (retryable)
    │   │   ├── RelayTimeoutError      UNAVAILABLE: the relay went silent              (retryable)
    │   │   └── RelayProtocolError     UNAVAILABLE: a malformed or truncated answer    (retryable)
    │   └── StreamInterruptedError     UNAVAILABLE: failed after text reached the caller (final)
    └── AllModelsFailedError           the status of the decisive failure; names every model tried

Two flags drive resilience: `retryable` (the same model may succeed if
tried again shortly: the retry stage acts on it) and `falls_back` (another
model may succeed where this one failed: the fallback stage acts on it).
Every retryable error also falls back; a context-length error and a busy or
cooling-down model fall back without being retried.

Messages are written for the person who reads them: they say what to do, and
never contain the prompt, a completion or a credential. Retryable relay
errors carry the relay's Retry-After hint when it gave one.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence

import grpc
import orjson


class SwitchyardError(Exception):
    """Base of every error Switchyard reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False  # the same model may answer if tried again
    falls_back: bool = False  # another model may answer instead

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def retry_after(self) -> float | None:
        """Seconds after which trying again may succeed, when known."""
        return None

    @property
    def reason(self) -> str:
        """A few words for attempt records, logs and traces: no request data."""
        return self.message.split(";", 1)[0]


class InvalidRequestError(SwitchyardError):
    """The request cannot be served as written; the message says which field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class RequestTooLargeError(InvalidRequestError):
    """The call asks for more work than one call may (messages, parts or bytes of text).

    The bounds keep one call's conversion and estimate to a few milliseconds of
    the event loop, which every other call and the health checks share.
    """

    def __init__(
        self,
        found: str,
        allowed: str,
        setting: str,
        advice: str = "drop or summarize older turns, or split the work across calls",
    ) -> None:
        super().__init__(f"{found}; at most {allowed} are allowed per call ({setting}): {advice}")
        self.setting = setting


class ContextWindowError(InvalidRequestError):
    """No model the call may go to has a context window that holds it."""


class UnknownModelError(InvalidRequestError):
    """The request named a model the catalog does not serve."""

    def __init__(self, model: str, served: Sequence[str]) -> None:
        super().__init__(
            f"model {model!r} is not served by this gateway; use one of: {', '.join(served)}"
            " (or leave model empty and set task)"
        )
        self.served = tuple(served)


class AuthenticationError(SwitchyardError):
    """The call carries no credential, or one that is not valid; the message says which."""

    code = grpc.StatusCode.UNAUTHENTICATED


class AccessDeniedError(SwitchyardError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class NotFoundError(SwitchyardError):
    """The tenant or key the admin API was asked about does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(SwitchyardError):
    """The tenant the admin API was asked to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class KeyStateError(SwitchyardError):
    """The key cannot be changed so: it is revoked or expired (make a new one)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DirectoryUnavailableError(SwitchyardError):
    """Tenants and keys cannot be read now (their database does not answer)."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class CapacityError(SwitchyardError):
    """One of Switchyard's own limits is reached; retry after `retry_after`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self._retry_after = retry_after

    @property
    def retry_after(self) -> float | None:
        return self._retry_after


class RateLimitedError(CapacityError):
    """A request budget has no capacity within the caller's deadline."""


class AuthThrottledError(CapacityError):
    """This peer failed to authenticate too often lately; it must wait."""


class ModelBusyError(CapacityError):
    """One model's own limits (requests, tokens, concurrency) are reached."""

    falls_back = True


class CircuitOpenError(SwitchyardError):
    """The model failed repeatedly and is skipped until its cooldown ends."""

    code = grpc.StatusCode.UNAVAILABLE
    falls_back = True

    def __init__(self, model: str, failures: int, retry_in: float) -> None:
        super().__init__(
            f"{model} is cooling down after {failures} failures in a row;"
            f" it is tried again in {retry_in:.1f} s"
        )
        self._retry_in = retry_in

    @property
    def retry_after(self) -> float | None:
        return self._retry_in


class ShuttingDownError(SwitchyardError):
    """The instance is shutting down and takes no new work."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class LedgerUnavailableError(SwitchyardError):
    """The ledger's database cannot answer now; calls go on being served and recorded."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class SpendNotRecordedError(LedgerUnavailableError):
    """The call's spend could not be written to the journal, so the call fails instead."""


class ExportUnavailableError(SwitchyardError):
    """The ledger keeps totals only (the in-memory one): there are no calls to export."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class BudgetUnknownError(SwitchyardError):
    """The tenant has a budget but its spend has not been read back from the ledger yet."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True

    def __init__(self, tenant: str) -> None:
        super().__init__(
            f"caller {tenant!r} has a spend budget and its spend is not yet read back from"
            " the ledger (the database is unreachable or starting); retry shortly"
        )

    @property
    def retry_after(self) -> float | None:
        return 1.0


class BudgetStoreUnavailableError(SwitchyardError):
    """The shared budget store (Redis) does not answer: budgets fail closed."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True

    def __init__(self, tenant: str) -> None:
        super().__init__(
            f"caller {tenant!r} has a spend budget and the budget store (Redis) is"
            " unreachable, so the budget cannot be checked; retry shortly (operators: see"
            " the gateway's log for the Redis error)"
        )

    @property
    def retry_after(self) -> float | None:
        return 1.0


class DeadlineExceededError(SwitchyardError):
    """The caller's deadline passed before a model answered; nothing more is tried."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, model: str) -> None:
        super().__init__(
            f"the call's deadline passed before {model} answered;"
            " allow more time or ask for fewer tokens"
        )


class InvalidOutputError(SwitchyardError):
    """The model answered, but its text does not have the requested JSON format.

    Another model may do better, so the walk goes on; the same model, asked
    the same, most likely would not, so it is not retried.
    """

    code = grpc.StatusCode.UNAVAILABLE
    falls_back = True

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(
            f"the answer of {model} did not validate against the requested JSON format"
            f" ({detail}); send the query again, or loosen the schema"
        )
        self.detail = detail

    @property
    def reason(self) -> str:
        """What the attempt record says: which part of the answer failed."""
        return f"the answer did not validate: {self.detail}"


class RelayError(SwitchyardError):
    """One attempt on the relay failed."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(
        self,
        message: str,
        http_status: int = 0,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        # `detail` is the relay's own explanation: shown to the caller, who
        # sent the request, but kept out of `reason`, which logs and traces use.
        super().__init__(f"{message} (the relay said: {detail})" if detail else message)
        self.http_status = http_status
        self._retry_after = retry_after
        self.summary = message

    @property
    def retry_after(self) -> float | None:
        return self._retry_after

    @property
    def reason(self) -> str:
        """A few words for the attempt record: status and kind, no details."""
        prefix = f"HTTP {self.http_status}: " if self.http_status else ""
        return prefix + self.summary.split(";", 1)[0]


class RelayAuthError(RelayError):
    """The relay refused Switchyard's credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class RelayPermissionError(RelayError):
    """The relay accepted the key but refused this use of it."""

    code = grpc.StatusCode.PERMISSION_DENIED


class RelayRejectedError(RelayError):
    """The relay refused the request itself; sending it again cannot help."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ContextLengthError(RelayRejectedError):
    """The conversation is longer than the model's context window."""

    falls_back = True  # to a model with a larger window only


class SpendLimitError(RelayError):
    """The relay account reached its spend limit; only its owner can lift it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class RelayUnavailableError(RelayError):
    """The relay or the provider behind it is overloaded, throttled or failing."""

    retryable = True
    falls_back = True


class RelayConnectError(RelayUnavailableError):
    """No connection to the relay could be made."""


class RelayTimeoutError(RelayUnavailableError):
    """The relay sent nothing for longer than the read timeout."""


class RelayProtocolError(RelayUnavailableError):
    """The relay's answer was malformed or ended before it was complete."""


class StreamInterruptedError(RelayError):
    """A stream failed after text had reached the caller; it cannot be retried."""

    def __init__(self, cause: RelayError, delivered_tokens: int) -> None:
        super().__init__(
            f"the stream failed after {delivered_tokens} tokens were delivered"
            f" ({cause.reason}); the text received so far is incomplete,"
            " send the query again to get a whole answer",
            cause.http_status,
        )
        self.delivered_tokens = delivered_tokens


class AllModelsFailedError(SwitchyardError):
    """Every model of the chain failed; carries the decisive error's status."""

    def __init__(self, failures: Sequence[tuple[str, SwitchyardError]]) -> None:
        decisive = _decisive(failures)
        tried = "; ".join(f"{model}: {error.reason}" for model, error in failures)
        if isinstance(decisive, RelayUnavailableError):
            advice = "the relay or its providers are failing; retry later"
        elif isinstance(decisive, CircuitOpenError):
            advice = "every model is cooling down after repeated failures; retry later"
        else:
            advice = decisive.message
        super().__init__(f"no model could answer ({tried}); {advice}")
        self.code = decisive.code
        self.failures = tuple(failures)
        self.decisive = decisive

    @property
    def retry_after(self) -> float | None:
        hints = [e.retry_after for _, e in self.failures if e.retry_after is not None]
        return min(hints) if hints else None


def _decisive(failures: Sequence[tuple[str, SwitchyardError]]) -> SwitchyardError:
    """The failure whose status the caller should see.

    A failure no retry can fix (bad key, context too long) beats passing
    trouble; among passing trouble, a failing relay beats our own limits and
    cooldowns, which beat nothing.
    """
    errors = [error for _, error in failures]
    for error in reversed(errors):
        if not error.retryable and not isinstance(error, CapacityError | CircuitOpenError):
            return error
    for kind in (RelayError, CapacityError):
        for error in reversed(errors):
            if isinstance(error, kind):
                return error
    return errors[-1]


# --- classification of relay answers: the one place that decides -----------------

_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_CONTEXT_MARKERS = (
    b"context_length_exceeded",
    b"context length",
    b"context window",
    b"prompt is too long",
    b"maximum context",
    b"too many tokens",
)
_SPEND_MARKERS = (
    b"insufficient_quota",
    b"exceeded your current quota",
    b"spend limit",
    b"spending limit",
    b"credit balance",
)
_CHECK_KEY = "the operator should check SWITCHYARD_RELAY_API_KEY and SWITCHYARD_RELAY_URL"


def classify(status: int, headers: Mapping[str, str], body: bytes) -> RelayError:
    """Map a relay's non-2xx answer to the error that says what it means.

    Retryable: 408, 409, 429, 500, 502, 503, 504, 529 (and any other 5xx).
    Final: 400, 401, 403, 404, 413, 422 and other 4xx. A context-length 400
    becomes ContextLengthError (a larger model may take it); a 429 whose
    body names a spend limit or quota becomes SpendLimitError (final).
    """
    lowered = body[:4096].lower()
    if status == 401:
        return RelayAuthError(f"the relay rejected the credentials; {_CHECK_KEY}", status)
    if status == 403:
        return RelayPermissionError(
            f"the relay refused this key for the request; {_CHECK_KEY} and the key's model access",
            status,
        )
    if status == 429 and any(marker in lowered for marker in _SPEND_MARKERS):
        return SpendLimitError(
            "the relay account reached its spend limit or quota; raise it with the provider",
            status,
        )
    if status in _RETRYABLE_STATUSES or status >= 500:
        return RelayUnavailableError(
            _overload_message(status), status, retry_after_seconds(headers)
        )
    if any(marker in lowered for marker in _CONTEXT_MARKERS):
        return ContextLengthError(
            "the conversation is longer than the model's context window;"
            " shorten it or choose a model with a larger context",
            status,
        )
    if status == 404:
        return RelayRejectedError(
            "the relay does not know this model; the operator should check the model catalog",
            status,
        )
    if status == 413:
        return RelayRejectedError("the request is too large for the relay; shorten it", status)
    return RelayRejectedError(
        "the relay refused the request; check the messages and the generation settings",
        status,
        detail=_relay_message(body),
    )


def _overload_message(status: int) -> str:
    if status == 429:
        return "the relay is rate limiting; retry later"
    if status == 529:
        return "the provider is overloaded; retry later"
    if status in (408, 504):
        return "the relay timed out; retry later"
    return "the relay failed; retry later"


def _relay_message(body: bytes) -> str:
    """The relay's own error message, shortened; used only for final 4xx errors."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return ""
    return message[:200]


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Read `retry-after-ms`, then `retry-after` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


class BudgetExceededError(CapacityError):
    """The caller's spend budget cannot cover the call's largest possible cost.

    `retry_after` is the time until the budget resets, or None when the call
    could never fit (it may cost more than the whole budget).
    """

    def __init__(self, message: str, resets_in: float | None) -> None:
        super().__init__(message, 0.0 if resets_in is None else resets_in)
        self._resets_in = resets_in

    @property
    def retry_after(self) -> float | None:
        return self._resets_in
