"""Telemetry: OpenTelemetry set-up, every name Switchyard records, and the
few helpers the servicer and stages call to record them.

Set-up follows the standard environment variables, which the SDK reads
itself: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT` /
`..._METRICS_ENDPOINT`), `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, the default
here, or `http/protobuf`), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` (+ `_ARG`), `OTEL_SDK_DISABLED`. With no endpoint, no
console exporter and no Prometheus port, nothing is set up: `tracing` is
False, spans are the API's no-op span and every helper returns at once.

Spans are held per call until the call ends (``server/spans.py``); then the
keep policy (`SWITCHYARD_TRACE_KEEP`, `kept_because`) exports the whole trace
or drops it before any encoding: every call that failed, fell back, retried,
hit a limit or was slow, plus a share of the rest, and always a trace whose
caller sampled it. Kept spans go through a batch processor (a full queue
drops spans rather than slowing a call; an unreachable collector is retried
in the background) and are flushed on graceful shutdown. A head sampler
(`OTEL_TRACES_SAMPLER`), when set, decides first at each SERVER span.

The tree an operator reads is the SERVER span and one CLIENT span per relay
try; what the stages do in between is attributes and events of those two
(the route, the cache lookup's time, each try's limiter wait).

Conventions, pinned: the SERVER span of each RPC follows the RPC semantic
conventions v1.39.0 (`rpc.system.name`, fully qualified `rpc.method`, string
`rpc.response.status_code`); each relay try is a CLIENT span `chat {model}`
following the GenAI semantic conventions v1.37.0. Cost uses the names
proposed to the GenAI conventions (`gen_ai.usage.cost.amount`,
`gen_ai.usage.cost.currency`), with the amount as an exact decimal string
rather than the proposal's double, because Switchyard never carries money as
a float; `switchyard.cost.usd` holds the same string.

Privacy: prompts and completions are recorded only when content capture is
on (`SWITCHYARD_CAPTURE_CONTENT`); keys and authorization metadata never.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
import orjson
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import INVALID_SPAN, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.domain import Attempt, CacheUse, Call, Outcome, Usage
from server.histograms import Histograms, collecting
from server.pricing import format_usd
from server.settings import ConfigError, TelemetrySettings, TraceKeep, parse_trace_keep
from server.spans import RecordedSpan, SpanRecorder

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

log = logging.getLogger("switchyard")

RPC_CONVENTIONS_VERSION = "1.39.0"
GENAI_CONVENTIONS_VERSION = "1.37.0"
INSTRUMENTATION = "switchyard"
SERVICE = "switchyard.v1.GatewayService"
CURRENCY = "USD"
FLUSH_TIMEOUT = 5.0  # seconds a graceful stop waits for telemetry to be exported
EXPORT_BATCH = 64  # spans per OTLP export request, unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE

# --- attribute names -----------------------------------------------------------------
RPC_SYSTEM_NAME = "rpc.system.name"
RPC_METHOD = "rpc.method"
RPC_RESPONSE_STATUS_CODE = "rpc.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_COST_AMOUNT = "gen_ai.usage.cost.amount"
GEN_AI_USAGE_COST_CURRENCY = "gen_ai.usage.cost.currency"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"  # noqa: S105 (an attribute name, not a secret)
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"

SWITCHYARD_REQUEST_ID = "switchyard.request_id"
SWITCHYARD_CALLER = "switchyard.caller"  # the tenant charged
# On metrics, callers past the first `metric_callers` (none-auth mode) share this value.
OTHER_CALLERS = "_other"
SWITCHYARD_KEY_ID = "switchyard.key_id"  # the API key used: its id, never its secret
SWITCHYARD_END_USER = "switchyard.end_user"  # x-switchyard-caller under auth: a label
SWITCHYARD_COST_USD = "switchyard.cost.usd"
SWITCHYARD_CACHE_HIT = "switchyard.cache.hit"
SWITCHYARD_SAVED_COST_USD = "switchyard.cache.saved_cost.usd"
SWITCHYARD_FALLBACK_COUNT = "switchyard.fallback.count"
SWITCHYARD_ATTEMPT_COUNT = "switchyard.attempt.count"
SWITCHYARD_LABEL_PREFIX = "switchyard.label."
SWITCHYARD_ROUTE_TASK = "switchyard.route.task"
SWITCHYARD_ROUTE_COMPLEXITY = "switchyard.route.complexity"
SWITCHYARD_ROUTE_BASIS = "switchyard.route.basis"
SWITCHYARD_ROUTE_MODEL = "switchyard.route.model"
SWITCHYARD_ROUTE_REASON = "switchyard.route.reason"
SWITCHYARD_ROUTE_FALLBACKS = "switchyard.route.fallback_models"
SWITCHYARD_LIMITER_WAIT_MS = "switchyard.limiter.wait_ms"
SWITCHYARD_ATTEMPT_OUTCOME = "switchyard.attempt.outcome"
SWITCHYARD_USAGE_ESTIMATED = "switchyard.usage.estimated"
SWITCHYARD_MODEL = "switchyard.model"
SWITCHYARD_REASON = "switchyard.reason"
SWITCHYARD_RETRY_ATTEMPT = "switchyard.retry.attempt"
SWITCHYARD_RETRY_DELAY_MS = "switchyard.retry.delay_ms"
SWITCHYARD_FALLBACK_FROM = "switchyard.fallback.from"
SWITCHYARD_FALLBACK_TO = "switchyard.fallback.to"
SWITCHYARD_CIRCUIT_RETRY_IN_MS = "switchyard.circuit.retry_in_ms"
SWITCHYARD_CACHE_LOOKUP_MS = "switchyard.cache.lookup_ms"
SWITCHYARD_TRACE_KEPT_BECAUSE = "switchyard.trace.kept_because"
SWITCHYARD_TRACE_KEEP_SHARE = "switchyard.trace.keep_share"

# Span events
EVENT_RETRY = "switchyard.retry"
EVENT_FALLBACK = "switchyard.fallback"
EVENT_CIRCUIT_OPEN = "switchyard.circuit_open"
EVENT_LIMITER_REFUSED = "switchyard.limiter_refused"

# Codes that are the server's failure (RPC conventions); the others are the caller's.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_TRACE_HEADERS = ("traceparent", "tracestate")
_TRACE_ID_MASK = 2**64 - 1  # the share reads the trace id's random low 64 bits
# A try's admission that took this long queued for a concurrency slot (one that did not
# queue takes microseconds in memory, one round trip with Redis; a loop busy with other
# calls adds a few milliseconds): the call was held back. Rate gates say when they waited.
LIMIT_WAIT_NOTICED = 0.010
KEEP_ALL = TraceKeep(errors=True, fallbacks=True, retries=True, limits=True, slow=True, share=1.0)
_PROPAGATOR = TraceContextTextMapPropagator()


class Sums:
    """A monotonic counter summed in the gateway and read by the SDK when it collects.

    `add` costs a dict update; an SDK Counter's `add` validates and hashes the
    attributes every time (about 10-20 us a call, measured, with two a call). The
    SDK reads the totals through an ObservableCounter's callback (on the exporter's
    thread, or a Prometheus scrape's): the same cumulative series a Counter exports.
    The keys are bounded by what names them (models, results, the bounded callers).
    """

    __slots__ = ("_names", "_totals")

    def __init__(
        self, meter: metrics.Meter, name: str, unit: str, description: str, names: Sequence[str]
    ) -> None:
        self._names = tuple(names)  # the attribute each position of a key names
        self._totals: dict[tuple[str, ...], int] = {}
        meter.create_observable_counter(name, [self._observe], unit=unit, description=description)

    def add(self, amount: int, *key: str) -> None:
        """Count `amount` for the series of these attribute values (in `names` order)."""
        totals = self._totals
        totals[key] = totals.get(key, 0) + amount

    def total(self, *key: str) -> int:
        """The sum so far for one series."""
        return self._totals.get(key, 0)

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        names = self._names
        # list() copies the items in one step of the interpreter, whatever the loop adds.
        return [
            Observation(total, dict(zip(names, key, strict=True)))
            for key, total in list(self._totals.items())
        ]


class Instruments:
    """The metric instruments, created once."""

    __slots__ = (
        "cache_lookups",
        "cost",
        "limiter_rejections",
        "limiter_wait",
        "operation_duration",
        "time_to_first_chunk",
        "token_usage",
    )

    def __init__(self, meter: metrics.Meter, histograms: Histograms | None = None) -> None:
        # Summed in the gateway when the readers are Switchyard's (`setup`): an SDK
        # histogram's record costs about 90k instructions (server/histograms.py).
        create_histogram: Any = meter.create_histogram if histograms is None else histograms.create
        self.token_usage = create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens billed per model try"
        )
        self.operation_duration = create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Duration of model tries"
        )
        self.time_to_first_chunk = create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time from a streamed try's start to its first text",
        )
        self.cost = Sums(
            meter,
            "switchyard.cost",
            "{nano_usd}",
            "Exact spend in nano-dollars, by model and caller",
            (GEN_AI_REQUEST_MODEL, SWITCHYARD_CALLER),
        )
        self.cache_lookups = Sums(
            meter,
            "switchyard.cache.lookups",
            "{lookup}",
            "Response cache lookups",
            ("switchyard.cache.result",),
        )
        self.limiter_wait = create_histogram(
            "switchyard.limiter.wait.duration", unit="s", description="Time tries waited for limits"
        )
        self.limiter_rejections = meter.create_counter(
            "switchyard.limiter.rejections", unit="{try}", description="Tries refused by a limit"
        )


class Telemetry:
    """The tracer, meter and instruments of one gateway, and the helpers to use them."""

    __slots__ = (
        "_metric_callers",
        "_named_callers",
        "_share_bound",
        "_shutdowns",
        "capture_content",
        "instruments",
        "keep",
        "meter",
        "slow",
        "spans",
        "tracer",
        "tracing",
    )

    def __init__(
        self,
        tracer: trace.Tracer,
        meter: metrics.Meter,
        *,
        tracing: bool,
        capture_content: bool = False,
        shutdowns: Iterable[Callable[[], object]] = (),
        keep: TraceKeep = KEEP_ALL,
        slow: float = 5.0,
        sampler: Sampler | None = None,
        metric_callers: int | None = None,
        histograms: Histograms | None = None,
    ) -> None:
        self.tracer = tracer  # an SDK tracer when tracing: its processors export kept traces
        # Callers who name themselves could mint a metric series each: only the first
        # `metric_callers` are named, the rest are OTHER_CALLERS. None: every caller is
        # named (with keys, callers are the directory's tenants, known and bounded).
        self._metric_callers = metric_callers
        self._named_callers: set[str] = set()
        self.meter = meter
        self.tracing = tracing  # False: every span is the no-op span; skip the work
        self.instruments = Instruments(meter, histograms)
        self.capture_content = capture_content and tracing
        self._shutdowns = tuple(shutdowns)
        self.spans = SpanRecorder.of(tracer, sampler) if tracing else None
        self.keep = keep
        self.slow = slow  # seconds to the first text past which a call is kept as slow
        # The share is taken by trace id, as OpenTelemetry's TraceIdRatioBased sampler does,
        # so every process that sees a trace makes the same choice.
        self._share_bound = round(keep.share * (_TRACE_ID_MASK + 1))

    @classmethod
    def disabled(cls) -> Telemetry:
        """No tracing and no metrics: what runs when nothing is configured."""
        return cls(trace.NoOpTracer(), metrics.NoOpMeter(INSTRUMENTATION), tracing=False)

    # --- spans ---------------------------------------------------------------------------

    def server_span(
        self,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        service: str = SERVICE,
    ) -> Span:
        """Start the SERVER span of one RPC, continuing the caller's W3C trace."""
        spans = self.spans
        if spans is None:
            return INVALID_SPAN
        parent: SpanContext | None = None
        parent_context = None
        carrier = {
            key: value if isinstance(value, str) else value.decode("latin-1")
            for key, value in metadata or ()
            if key in _TRACE_HEADERS
        }
        if carrier:
            parent_context = _PROPAGATOR.extract(carrier)
            found = trace.get_current_span(parent_context).get_span_context()
            parent = found if found.is_valid else None
        name = f"{service}/{method}"
        return spans.root(
            name,
            parent,
            SpanKind.SERVER,
            {RPC_SYSTEM_NAME: "grpc", RPC_METHOD: name},
            parent_context,
        )

    def child(
        self,
        parent: Span,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> Span:
        """Start a span under `parent` (the no-op span when tracing is off).

        A CLIENT span (a relay try) carries the wait of the limiter that admitted
        it (`limiter_waited`), as `switchyard.limiter.wait_ms`.
        """
        if self.spans is None or type(parent) is not RecordedSpan or not parent.is_recording():
            return INVALID_SPAN
        values = dict(attributes) if attributes else {}
        root = parent.root or parent
        if kind is SpanKind.CLIENT and root.pending_wait is not None:
            values[SWITCHYARD_LIMITER_WAIT_MS] = round(root.pending_wait * 1000, 3)
            root.pending_wait = None
        return self.spans.child(parent, name, kind, values)

    def trace_headers(self, span: Span) -> dict[str, str]:
        """`traceparent` (and `tracestate`) for a request made under `span`."""
        if not span.is_recording():
            return {}
        context = span.get_span_context()
        headers = {
            "traceparent": (
                f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
            )
        }
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        return headers

    def limiter_waited(self, call_span: Span, seconds: float, rate_waited: bool) -> None:
        """A try of the call was admitted after `seconds` with its limits: its CLIENT
        span says so; a wait for a rate, or a queue for a slot, marks the call as held
        back by a limit."""
        if type(call_span) is RecordedSpan:
            call_span.pending_wait = seconds
            if rate_waited or seconds >= LIMIT_WAIT_NOTICED:
                call_span.limited = True

    def mark_limited(self, call_span: Span) -> None:
        """A limit or a budget shaped the call (the keep policy's `limits` keeps it)."""
        if type(call_span) is RecordedSpan:
            call_span.limited = True

    def finish_rpc(
        self, span: Span, code: grpc.StatusCode, error: BaseException | None = None
    ) -> None:
        """End an RPC's SERVER span with its status; the keep policy decides its export."""
        if type(span) is not RecordedSpan or not span.is_recording():
            return
        self._end_server(span, code, error, self.kept_because(span, code))

    def finish_call(
        self, call: Call, code: grpc.StatusCode, error: BaseException | None = None
    ) -> None:
        """End a Query/StreamQuery SERVER span with what the whole call did and cost.

        The keep policy decides first; the call's attributes are worked out only
        for a trace that is kept, so a dropped one costs nothing more.
        """
        span = call.span
        if type(span) is not RecordedSpan or not span.is_recording():
            return
        because = self.kept_because(span, code, call)
        if because:
            span.attributes.update(_call_attributes(call))
        self._end_server(span, code, error, because)

    def kept_because(
        self, span: RecordedSpan, code: grpc.StatusCode, call: Call | None = None
    ) -> str:
        """Why the keep policy keeps this trace ("" to drop it): the call's troubles
        that the policy names (error, fallback, retry, limit, slow), then `parent` when
        the caller sampled the trace; `share` when only the share keeps it."""
        keep = self.keep
        reasons: list[str] = []
        if keep.errors and code is not grpc.StatusCode.OK and code is not grpc.StatusCode.CANCELLED:
            reasons.append("error")
        fell_back = retried = refused = False
        for name, _, _ in span.events or ():
            if name == EVENT_FALLBACK:
                fell_back = True
            elif name == EVENT_RETRY:
                retried = True
            elif name == EVENT_LIMITER_REFUSED:
                refused = True
        if fell_back and keep.fallbacks:
            reasons.append("fallback")
        if retried and keep.retries:
            reasons.append("retry")
        if keep.limits and (refused or span.limited or code is grpc.StatusCode.RESOURCE_EXHAUSTED):
            reasons.append("limit")
        if keep.slow:
            if call is not None and call.first_token_at is not None:
                waited = call.first_token_at - call.started  # a stream: its first text
            else:
                waited = (time.time_ns() - span.start_ns) / 1e9  # unary: the whole answer
            if waited > self.slow:
                reasons.append("slow")
        parent = span.parent
        if parent is not None and parent.is_remote and parent.trace_flags.sampled:
            reasons.append("parent")  # the caller's sampler chose it: always honoured
        elif not reasons and span.context.trace_id & _TRACE_ID_MASK < self._share_bound:
            # No parent, or one its caller did not sample (which says nothing of ours).
            reasons.append("share")
        return ",".join(reasons)

    def _end_server(
        self,
        span: RecordedSpan,
        code: grpc.StatusCode,
        error: BaseException | None,
        because: str,
    ) -> None:
        if because:
            attributes = span.attributes
            attributes[RPC_RESPONSE_STATUS_CODE] = code.name
            if code is not grpc.StatusCode.OK:
                attributes[ERROR_TYPE] = code.name if error is None else type(error).__name__
                if code in _SERVER_FAULTS:
                    span.status = Status(StatusCode.ERROR, code.name)
            attributes[SWITCHYARD_TRACE_KEPT_BECAUSE] = because
            attributes[SWITCHYARD_TRACE_KEEP_SHARE] = self.keep.share
            span.kept = True
        span.end()

    def finish_attempt(
        self,
        span: Span,
        attempt: Attempt,
        error: BaseException | None = None,
        time_to_first_chunk: float | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """End a relay try's CLIENT span; its usage, cost and outcome are set if it is kept."""
        if type(span) is not RecordedSpan or not span.is_recording():
            return
        span.late = partial(
            _attempt_attributes,
            attempt,
            None if error is None else type(error).__name__,
            time_to_first_chunk,
            finish_reason,
        )
        span.end()

    def capture(
        self, span: Span, key: str, messages: Callable[[], Sequence[Mapping[str, str]]]
    ) -> None:
        """Record prompt or completion messages, only when content capture is on: `messages`
        lists them, called only then (a call's messages are not listed, nor a stream's
        text joined, for a trace that does not keep them)."""
        if self.capture_content and span.is_recording():
            span.set_attribute(key, orjson.dumps(list(messages())).decode())

    # --- metrics -------------------------------------------------------------------------

    def record_attempt(self, attempt: Attempt, tenant: str, stream: bool) -> None:
        """Metrics of one finished relay try."""
        if not self.tracing:
            return
        attributes: dict[str, Any] = {
            GEN_AI_OPERATION_NAME: "chat",
            GEN_AI_PROVIDER_NAME: attempt.model.provider,
            GEN_AI_REQUEST_MODEL: attempt.model.name,
            GEN_AI_REQUEST_STREAM: stream,
        }
        self.instruments.operation_duration.record(
            attempt.latency,
            {**attributes, ERROR_TYPE: attempt.outcome.text}
            if attempt.outcome is not Outcome.SUCCESS
            else attributes,
        )
        usage: Usage = attempt.usage
        if usage.input_tokens or usage.output_tokens:
            self.instruments.token_usage.record(
                usage.input_tokens, {**attributes, GEN_AI_TOKEN_TYPE: "input"}
            )
            self.instruments.token_usage.record(
                usage.output_tokens, {**attributes, GEN_AI_TOKEN_TYPE: "output"}
            )
        if attempt.cost:
            self.instruments.cost.add(attempt.cost, attempt.model.name, self.metric_caller(tenant))

    def metric_caller(self, tenant: str) -> str:
        """`tenant` as metrics name it: itself, or OTHER_CALLERS once the first
        `metric_callers` distinct callers have their series (those keep them)."""
        limit = self._metric_callers
        if limit is None or tenant in self._named_callers:
            return tenant
        if len(self._named_callers) < limit:
            self._named_callers.add(tenant)
            return tenant
        return OTHER_CALLERS

    def observe(
        self,
        name: str,
        unit: str,
        description: str,
        read: Callable[[], Iterable[tuple[float, Mapping[str, str]]]],
    ) -> None:
        """Register a gauge whose values `read()` gives as (value, attributes) pairs."""
        if not self.tracing:
            return

        def callback(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, dict(attributes)) for value, attributes in read()]

        self.meter.create_observable_gauge(name, [callback], unit=unit, description=description)

    def shutdown(self, within: float = FLUSH_TIMEOUT) -> bool:
        """Flush and stop the exporters, waiting at most `within` seconds.

        Blocking: call it from a thread. The SDK's own shutdown can wait out
        a whole export timeout (with retries) for an unreachable collector,
        so it runs on a daemon thread that is abandoned past `within`: the
        process exits on time and unexported telemetry is dropped.
        """
        if not self._shutdowns:
            return True
        done = threading.Event()

        def stop_all() -> None:
            for stop in self._shutdowns:
                try:
                    stop()
                except Exception as exc:  # a broken exporter must not break the shutdown
                    log.warning("telemetry shutdown failed: %s", type(exc).__name__)
            done.set()

        threading.Thread(target=stop_all, name="telemetry-shutdown", daemon=True).start()
        if done.wait(within):
            return True
        log.warning("telemetry not flushed within %gs; what was not exported is dropped", within)
        return False


def _call_attributes(call: Call) -> dict[str, Any]:
    """What a kept Query/StreamQuery SERVER span reports: the call's route, usage and cost."""
    usage = call.usage
    cost = format_usd(call.cost)
    models_tried = {a.model.name for a in call.attempts if a.outcome is not Outcome.SKIPPED}
    attributes: dict[str, Any] = {
        SWITCHYARD_REQUEST_ID: call.request_id,
        SWITCHYARD_CALLER: call.identity.tenant,
        GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
        GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
        GEN_AI_USAGE_COST_AMOUNT: cost,
        GEN_AI_USAGE_COST_CURRENCY: CURRENCY,
        SWITCHYARD_COST_USD: cost,
        SWITCHYARD_CACHE_HIT: call.cache is CacheUse.HIT,
        SWITCHYARD_FALLBACK_COUNT: max(len(models_tried) - 1, 0),
        SWITCHYARD_ATTEMPT_COUNT: len(call.attempts),
    }
    identity = call.identity
    if identity.key_id is not None:
        attributes[SWITCHYARD_KEY_ID] = identity.key_id
    if identity.user is not None:
        attributes[SWITCHYARD_END_USER] = identity.user
    if call.cache is CacheUse.HIT:
        attributes[SWITCHYARD_SAVED_COST_USD] = format_usd(call.saved_cost)
    route = call.route
    if route is not None:  # what the "route" span said, before spans were cheap
        attributes[GEN_AI_REQUEST_MODEL] = route.model.name
        attributes[SWITCHYARD_ROUTE_MODEL] = route.model.name
        attributes[SWITCHYARD_ROUTE_TASK] = route.task.name
        attributes[SWITCHYARD_ROUTE_COMPLEXITY] = route.complexity.name
        attributes[SWITCHYARD_ROUTE_BASIS] = route.basis.name
        attributes[SWITCHYARD_ROUTE_REASON] = route.reason
        attributes[SWITCHYARD_ROUTE_FALLBACKS] = [m.name for m in route.fallbacks]
    for key, value in call.request.labels.items():
        attributes[SWITCHYARD_LABEL_PREFIX + key] = value
    return attributes


def _attempt_attributes(
    attempt: Attempt,
    error_type: str | None,
    time_to_first_chunk: float | None,
    finish_reason: str | None,
    span: RecordedSpan,
) -> None:
    """A kept relay try's CLIENT span: its usage, cost, outcome and status."""
    cost = format_usd(attempt.cost)
    attributes = span.attributes
    attributes[GEN_AI_USAGE_INPUT_TOKENS] = attempt.usage.input_tokens
    attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = attempt.usage.output_tokens
    attributes[GEN_AI_USAGE_COST_AMOUNT] = cost
    attributes[GEN_AI_USAGE_COST_CURRENCY] = CURRENCY
    attributes[SWITCHYARD_COST_USD] = cost
    attributes[SWITCHYARD_ATTEMPT_OUTCOME] = attempt.outcome.text
    attributes[SWITCHYARD_USAGE_ESTIMATED] = attempt.usage.estimated
    if attempt.outcome is Outcome.SUCCESS:
        attributes[GEN_AI_RESPONSE_MODEL] = attempt.model.name
    if attempt.http_status:
        attributes[HTTP_RESPONSE_STATUS_CODE] = attempt.http_status
    if finish_reason is not None:
        attributes[GEN_AI_RESPONSE_FINISH_REASONS] = (finish_reason,)
    if time_to_first_chunk is not None:
        attributes[GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = time_to_first_chunk
    if error_type is not None:
        attributes[ERROR_TYPE] = error_type
        span.status = Status(StatusCode.ERROR, attempt.error or error_type)


def setup(
    settings: TelemetrySettings, environ: Mapping[str, str], *, known_callers: bool = False
) -> Telemetry:
    """Build Telemetry from settings and the OTEL_* environment.

    `known_callers`: callers are the directory's tenants (auth on), so each gets
    its own metric series; otherwise only the first `settings.metric_callers`.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Telemetry.disabled()
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip()
    if protocol not in ("grpc", "http/protobuf"):
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_PROTOCOL", f"expected grpc or http/protobuf, got {protocol!r}"
        )
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    traces_to = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or endpoint
    metrics_to = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or endpoint
    if not (traces_to or metrics_to or settings.console or settings.prometheus_port):
        return Telemetry.disabled()

    # The SDK is imported only when something is exported.
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "switchyard"}))
    # shutdown_on_exit=False: the SDK's exit hook could wait out a dead collector; the
    # app's graceful stop flushes within a bound instead (Telemetry.shutdown).
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    if traces_to:
        # The batch processor's thread holds the GIL while it encodes a batch, and a call
        # waits for it meanwhile: batches of EXPORT_BATCH spans (the SDK's default is 512)
        # keep that wait well under a millisecond, for one more export RPC per batch.
        batch = None if environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") else EXPORT_BATCH
        tracer_provider.add_span_processor(
            BatchSpanProcessor(_span_exporter(protocol), max_export_batch_size=batch)
        )
    if settings.console:
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    readers: list[MetricReader] = []
    # The histograms are summed in the gateway and added to what these readers collect
    # (server/histograms.py), unless exponential histograms are asked for: the SDK's then.
    exponential = environ.get("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "")
    histograms = None if "exponential" in exponential.lower() else Histograms(INSTRUMENTATION)
    if metrics_to:
        exporter = _metric_exporter(protocol)
        if histograms is None:
            readers.append(PeriodicExportingMetricReader(exporter))
        else:
            # What the OTLP exporters make of OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE.
            preference = environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "")
            delta = preference.strip().upper() in ("DELTA", "LOWMEMORY")
            reader = collecting(PeriodicExportingMetricReader, histograms, delta=delta)
            readers.append(reader(exporter))
    if settings.prometheus_port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(settings.prometheus_port, addr="127.0.0.1")
        prometheus = (
            PrometheusMetricReader
            if histograms is None
            else collecting(PrometheusMetricReader, histograms, delta=False)  # scrapes: totals
        )
        readers.append(prometheus())
    # Exemplars tie a measurement to the span current when it is made. Switchyard's spans
    # are never made current (nor, mostly, exported), so the default filter found none and
    # cost about half of each record's CPU: off, unless OTEL_METRICS_EXEMPLAR_FILTER is set.
    exemplars = None if environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=readers,
        shutdown_on_exit=False,
        exemplar_filter=exemplars,
    )
    # With OTEL_TRACES_SAMPLER set, that head sampler decides first at each SERVER span;
    # unset, every call is recorded and the keep policy decides when it ends.
    sampler = tracer_provider.sampler if environ.get("OTEL_TRACES_SAMPLER") else None
    return Telemetry(
        tracer_provider.get_tracer(INSTRUMENTATION),
        meter_provider.get_meter(INSTRUMENTATION),
        tracing=True,
        capture_content=settings.capture_content,
        shutdowns=(tracer_provider.shutdown, meter_provider.shutdown),
        keep=parse_trace_keep(settings.trace_keep),
        slow=settings.trace_slow,
        sampler=sampler,
        metric_callers=None if known_callers else settings.metric_callers,
        histograms=histograms,
    )


def _span_exporter(protocol: str) -> Any:
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HTTPSpanExporter,
        )

        return HTTPSpanExporter()
    from server.span_encoding import grpc_span_exporter  # noqa: PLC0415 (SDK inside)

    # The SDK's exporter, encoding with span_encoding: a fraction of the SDK encoder's CPU.
    return grpc_span_exporter()


def _metric_exporter(protocol: str) -> Any:
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as HTTPMetricExporter,
        )

        return HTTPMetricExporter()
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )

    return OTLPMetricExporter()
