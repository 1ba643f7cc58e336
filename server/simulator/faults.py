"""Fault directives: how a test asks the simulator to misbehave, parsed and resolved.

A test writes a directive anywhere in any message content (system included)::

    [[sim fault=429 retry_after=2 times=1 model=gpt-4.1]]

Grammar: ``[[sim`` then whitespace-separated ``key=value`` pairs then ``]]``.
Keys (each at most once per directive):

====================  =======================================================
``fault``             one of the faults below
``retry_after``       seconds (``2`` or ``0.5``), sent as ``retry-after``
``retry_after_ms``    milliseconds, sent as ``retry-after-ms``
``retry_after_date``  seconds from now, sent as an HTTP-date ``retry-after``
``after``             tokens sent before stall_mid, reset, sse_error (default 0)
``times``             fire for the first N matching requests only
``model``             fire only for requests to this model
``latency_ms``        time to first token, absolute (not scaled)
``tokens``            forces the natural answer length
====================  =======================================================

The three retry keys go with fault 429, 503, 529 or spend_limit only (an
error fault without them sends no ``retry-after``). Faults:

* ``400 401 403 404 408 409 413 422 429 500 502 503 529``: that HTTP status,
  body in the wire's error format; ``context_length`` (400, OpenAI code
  ``context_length_exceeded``, Anthropic "prompt is too long") and
  ``spend_limit`` (429, OpenAI ``insufficient_quota``, Anthropic
  ``rate_limit_error`` naming the spend limit). Sent at once, or after
  ``latency_ms`` when given (drawn latencies apply to answers only).
* ``stall``: nothing at all, not even headers, until the client hangs up.
* ``stall_mid``: stream: the opening frames and ``after`` tokens, then
  silence; unary: status and headers, then a body that never comes.
* ``reset``: stream: opening frames and ``after`` tokens, then a TCP RST;
  unary: RST after the time to first token, before any byte.
* ``no_usage``: no usage chunk (OpenAI, even with include_usage), no usage in
  ``message_delta`` (Anthropic), no ``usage`` in a unary body.
* Streaming only (400 on a unary request): ``no_done`` (everything but
  ``[DONE]`` / ``message_stop``, then the connection closes cleanly);
  ``sse_error`` (HTTP 200, opening frames, ``after`` tokens, then an SSE error,
  overloaded); ``ping`` (a keep-alive before every token and before the
  end: ``: ping`` comments on OpenAI, ``ping`` events on Anthropic);
  ``empty_choices`` (OpenAI only: a ``"choices": []`` chunk without usage
  before every token and before the finish chunk).

Resolution, per request, in the order directives appear: a directive
*fires* when its ``model`` matches, its ``times`` budget is not spent and, if
it carries a fault, no earlier directive's fault fired. So
``[[sim fault=429 times=2]] [[sim fault=503 times=1]]`` answers 429, 429,
503, then succeeds. A fired directive spends one of its ``times``; the
settings of all fired directives merge, the first to set a key winning.
Directives stay in the prompt: they are counted as input like any text.

This module is pure: the ``times`` counters are kept by the caller, who
passes how many times each directive already fired. Directives that shape a
successful answer instead (tool calls, broken JSON, redacted thinking, cache
hits: ``[[tool:NAME]]`` and the like) are in :mod:`server.simulator.features`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from server.simulator.wire import ErrorKind

DIRECTIVE = re.compile(r"\[\[sim(?=[\s\]])([^\[\]]*)\]\]")
# Fault directives and answer directives (server.simulator.features), which echoes leave out.
_ANY_DIRECTIVE = re.compile(
    r"\[\[(?:sim(?=[\s\]])|(?:tool|tools|json|thinking|cache):)[^\[\]]*\]\]"
)
_SECONDS = re.compile(r"\d+(\.\d+)?")
_LIMIT = 1_000_000  # bounds every count, so a typo cannot ask for a billion tokens


class FaultKind(enum.StrEnum):
    """Every value ``fault=`` accepts."""

    S400 = "400"
    S401 = "401"
    S403 = "403"
    S404 = "404"
    S408 = "408"
    S409 = "409"
    S413 = "413"
    S422 = "422"
    S429 = "429"
    S500 = "500"
    S502 = "502"
    S503 = "503"
    S529 = "529"
    CONTEXT_LENGTH = "context_length"
    SPEND_LIMIT = "spend_limit"
    STALL = "stall"
    STALL_MID = "stall_mid"
    RESET = "reset"
    NO_DONE = "no_done"
    NO_USAGE = "no_usage"
    SSE_ERROR = "sse_error"
    PING = "ping"
    EMPTY_CHOICES = "empty_choices"


# Faults answered with an HTTP error status, and the failure each one is.
ERROR_FAULTS = {
    FaultKind.S400: ErrorKind.INVALID_REQUEST,
    FaultKind.S401: ErrorKind.AUTHENTICATION,
    FaultKind.S403: ErrorKind.PERMISSION,
    FaultKind.S404: ErrorKind.NOT_FOUND,
    FaultKind.S408: ErrorKind.REQUEST_TIMEOUT,
    FaultKind.S409: ErrorKind.CONFLICT,
    FaultKind.S413: ErrorKind.TOO_LARGE,
    FaultKind.S422: ErrorKind.UNPROCESSABLE,
    FaultKind.S429: ErrorKind.RATE_LIMIT,
    FaultKind.S500: ErrorKind.SERVER_ERROR,
    FaultKind.S502: ErrorKind.BAD_GATEWAY,
    FaultKind.S503: ErrorKind.UNAVAILABLE,
    FaultKind.S529: ErrorKind.OVERLOADED,
    FaultKind.CONTEXT_LENGTH: ErrorKind.CONTEXT_LENGTH,
    FaultKind.SPEND_LIMIT: ErrorKind.SPEND_LIMIT,
}
RETRYABLE_FAULTS = frozenset(
    {FaultKind.S429, FaultKind.S503, FaultKind.S529, FaultKind.SPEND_LIMIT}
)
MID_STREAM_FAULTS = frozenset({FaultKind.STALL_MID, FaultKind.RESET, FaultKind.SSE_ERROR})
STREAM_ONLY_FAULTS = frozenset(
    {FaultKind.NO_DONE, FaultKind.SSE_ERROR, FaultKind.PING, FaultKind.EMPTY_CHOICES}
)
OPENAI_ONLY_FAULTS = frozenset({FaultKind.EMPTY_CHOICES})

_KEYS = (
    "fault",
    "retry_after",
    "retry_after_ms",
    "retry_after_date",
    "after",
    "times",
    "model",
    "latency_ms",
    "tokens",
)


# Directive fields that carry into a FaultPlan (times and model only select).
_MERGED_KEYS = tuple(key for key in _KEYS if key not in ("times", "model"))


class DirectiveError(ValueError):
    """A directive the simulator cannot honour; the message names the culprit."""


@dataclass(frozen=True, slots=True)
class Directive:
    """One parsed ``[[sim ...]]`` directive."""

    text: str
    fault: FaultKind | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    retry_after_date: int | None = None
    after: int | None = None
    times: int | None = None
    model: str | None = None
    latency_ms: int | None = None
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The merged effect of the directives that fired for one request."""

    fault: FaultKind | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    retry_after_date: int | None = None
    after: int = 0
    latency_ms: int | None = None
    tokens: int | None = None
    fired: tuple[int, ...] = ()  # indexes of fired directives, whose counters to bump

    @property
    def error(self) -> ErrorKind | None:
        """The HTTP error this plan answers with, if its fault is one."""
        return None if self.fault is None else ERROR_FAULTS.get(self.fault)


def strip_directives(text: str) -> str:
    """``text`` without its directives (fault and answer ones), for echoes and counter keys."""
    return _ANY_DIRECTIVE.sub("", text) if "[[" in text else text


def _count(text: str, key: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > _LIMIT:
        raise DirectiveError(f"{text}: {key}={value} must be a whole number 0..{_LIMIT}")
    return int(value)


def _seconds(text: str, key: str, value: str) -> str:
    if not _SECONDS.fullmatch(value):
        raise DirectiveError(f"{text}: {key}={value} must be a non-negative number")
    return value


def parse_directive(text: str, known_models: Collection[str]) -> Directive:
    """Parse one ``[[sim ...]]`` text; raise :class:`DirectiveError` on any mistake."""
    match = DIRECTIVE.fullmatch(text)
    if match is None:
        raise DirectiveError(f"{text}: not a [[sim key=value ...]] directive")
    pairs: dict[str, str] = {}
    for item in match.group(1).split():
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise DirectiveError(f"{text}: {item!r} is not key=value")
        if key not in _KEYS:
            raise DirectiveError(f"{text}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        if key in pairs:
            raise DirectiveError(f"{text}: key {key!r} given twice")
        pairs[key] = value

    fault = None
    if "fault" in pairs:
        try:
            fault = FaultKind(pairs["fault"])
        except ValueError:
            known = ", ".join(kind.value for kind in FaultKind)
            raise DirectiveError(
                f"{text}: unknown fault {pairs['fault']!r} (known: {known})"
            ) from None
    model = pairs.get("model")
    if model is not None and model not in known_models:
        raise DirectiveError(f"{text}: unknown model {model!r}")
    retry_keys = [
        key for key in ("retry_after", "retry_after_ms", "retry_after_date") if key in pairs
    ]
    if retry_keys and fault not in RETRYABLE_FAULTS:
        raise DirectiveError(
            f"{text}: {retry_keys[0]} applies only to fault=429, 503, 529 or spend_limit"
        )
    if "retry_after" in pairs and "retry_after_date" in pairs:
        raise DirectiveError(f"{text}: retry_after and retry_after_date both set retry-after")
    if "after" in pairs and fault not in MID_STREAM_FAULTS:
        raise DirectiveError(f"{text}: after applies only to fault=stall_mid, reset or sse_error")
    times = None if "times" not in pairs else _count(text, "times", pairs["times"])
    if times == 0:
        raise DirectiveError(f"{text}: times must be at least 1")

    def count(key: str) -> int | None:
        return None if key not in pairs else _count(text, key, pairs[key])

    def seconds(key: str) -> str | None:
        return None if key not in pairs else _seconds(text, key, pairs[key])

    return Directive(
        text=text,
        fault=fault,
        retry_after=seconds("retry_after"),
        retry_after_ms=seconds("retry_after_ms"),
        retry_after_date=count("retry_after_date"),
        after=count("after"),
        times=times,
        model=model,
        latency_ms=count("latency_ms"),
        tokens=count("tokens"),
    )


def parse_directives(texts: Iterable[str], known_models: Collection[str]) -> tuple[Directive, ...]:
    """Every directive in ``texts``, in order of appearance."""
    return tuple(
        parse_directive(match.group(0), known_models)
        for text in texts
        for match in DIRECTIVE.finditer(text)
    )


def plan_faults(directives: Sequence[Directive], model: str, spent: Sequence[int]) -> FaultPlan:
    """Decide which directives fire for a request to ``model``.

    ``spent[i]`` is how many times ``directives[i]`` already fired for this
    conversation; see the module docstring for the rules.
    """
    fired: list[int] = []
    merged: dict[str, Any] = {}
    for index, directive in enumerate(directives):
        if directive.model is not None and directive.model != model:
            continue
        if directive.times is not None and spent[index] >= directive.times:
            continue
        if directive.fault is not None and "fault" in merged:
            continue
        fired.append(index)
        for key in _MERGED_KEYS:
            value = getattr(directive, key)
            if value is not None:
                merged.setdefault(key, value)
    return FaultPlan(fired=tuple(fired), **merged)


def misfit(plan: FaultPlan, *, stream: bool, wire: str) -> str | None:
    """Why ``plan`` cannot apply to this request, or None when it can."""
    if plan.fault in STREAM_ONLY_FAULTS and not stream:
        return f"fault={plan.fault} applies only to streaming requests"
    if plan.fault in OPENAI_ONLY_FAULTS and wire != "openai":
        return f"fault={plan.fault} applies only to the OpenAI wire"
    return None
