"""The relay simulator: a real HTTP server speaking both wires, with faults on demand.

It stands in for the one relay Switchyard forwards to, so ``make run`` works
with no key and no network and tests can inject every failure a real relay
shows. Usage::

    sim = RelaySimulator(SimulatorSettings(latency_scale=0))
    base_url = await sim.start()            # "http://127.0.0.1:41234/v1"
    ...                                     # point the gateway's relay client at base_url
    await sim.wait_idle(timeout=5)          # every request finished
    assert sim.stats.model("gpt-4.1").output_tokens == ...
    await sim.stop()

Routes: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages``
(Anthropic), ``GET /v1/models``. Either wire serves any model; faults are
asked for with directives in the prompt (see :mod:`server.simulator.faults`),
tool calls, broken JSON, redacted thinking and cache hits with answer
directives (see :mod:`server.simulator.features`).
Admission, in order: body read, auth, validation, model known, the model's
abilities (thinking or ``reasoning_effort`` on a model that does not reason,
images on one without vision: 400), thinking blocks sent back carry the
signature the simulator gave them (else 400, as Anthropic answers), directives
valid, per-model concurrency (429 with ``retry-after: 1`` beyond the limit).

Prompt cache: a ``[[cache:read]]`` / ``[[cache:write]]`` directive reports the
prompt before the last message as read or written. Without one, an Anthropic
request with ``cache_control`` caches the prompt up to its last breakpoint
(when that is at least ``MIN_CACHEABLE_TOKENS`` long, as on Claude Sonnet):
the first request with that prefix, per model, reports a write, the next ones
a read, for the simulator's lifetime.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web

from server.simulator.anthropic_wire import AnthropicWire
from server.simulator.content import (
    compose_answer,
    compose_feature_answer,
    conversation_key,
    draw,
    fingerprint,
    input_tokens,
    prefix_tokens,
    verify,
)
from server.simulator.exchange import Exchange, Script, error_response
from server.simulator.faults import (
    Directive,
    DirectiveError,
    misfit,
    parse_directives,
    plan_faults,
)
from server.simulator.features import AnswerPlan, CacheMode, plan_answer
from server.simulator.listener import Listener
from server.simulator.openai_wire import OpenAIWire
from server.simulator.profiles import CATALOG, ModelProfile, plan_timing
from server.simulator.stats import SimulatorStats, StatsBook
from server.simulator.wire import Call, ChatRequest, ErrorKind, Wire, WireError

_OPENAI = OpenAIWire()
_ANTHROPIC = AnthropicWire()
_ROUTES: dict[str, Wire] = {"/v1/chat/completions": _OPENAI, "/v1/messages": _ANTHROPIC}
MIN_CACHEABLE_TOKENS = 1024  # Anthropic caches no shorter prefix (Claude Sonnet's minimum)
MAX_CACHED_PREFIXES = 10_000  # the prompt cache forgets its oldest entries beyond this
# Not a secret: it only makes the simulator's thinking signatures verifiable by itself.
DEFAULT_SIGNING_KEY = b"switchyard relay simulator thinking signatures"


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """How the simulator behaves; tests use ``latency_scale=0``."""

    latency_scale: float = 1.0  # multiplies every delay; 0 = no delays at all
    tokens_per_second: float = 60.0  # streaming pace after the first token, before scaling
    api_key: str | None = None  # when set, requests must carry it, else 401
    enforce_concurrency: bool = True  # per-model max concurrent requests; beyond it, 429
    signing_key: bytes = DEFAULT_SIGNING_KEY  # signs thinking blocks (HMAC-SHA256)

    def __post_init__(self) -> None:
        if self.latency_scale < 0:
            raise ValueError("latency_scale must be >= 0")
        if self.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0")
        if not self.signing_key:
            raise ValueError("signing_key must not be empty")


class RelaySimulator:
    """An HTTP relay imitating OpenAI Chat Completions and Anthropic Messages."""

    __slots__ = ("_book", "_cached", "_listener", "_settings", "_times", "_url", "traceparents")

    def __init__(self, settings: SimulatorSettings = SimulatorSettings()) -> None:
        self._settings = settings
        self._book = StatsBook(CATALOG)
        self._times: dict[tuple[bytes, str, int], int] = {}  # times=N counters
        self._cached: dict[tuple[str, bytes], None] = {}  # prompt-cache prefixes, oldest first
        # W3C trace context of the latest completion requests, for tracing tests.
        self.traceparents: deque[str] = deque(maxlen=1000)
        self._listener: Listener | None = None
        self._url: str | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port); returns the base URL ending in /v1."""
        if self._listener is not None:
            raise RuntimeError("the simulator is already started")
        self._listener = Listener(self._book, self._handle)
        bound = await self._listener.listen(host, port)
        shown_host = f"[{host}]" if ":" in host else host
        self._url = f"http://{shown_host}:{bound}/v1"
        return self._url

    async def stop(self) -> None:
        """Stop listening and drop every open connection, stalled ones included."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234/v1``."""
        if self._url is None:
            raise RuntimeError("the simulator is not started")
        return self._url

    @property
    def settings(self) -> SimulatorSettings:
        """The settings it runs with."""
        return self._settings

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        return self._book.snapshot()

    # A timeout argument (ASYNC109) because a forgotten bound would hang a whole
    # test run; TimeoutError says which wait failed.
    async def wait_until(
        self,
        predicate: Callable[[SimulatorStats], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> SimulatorStats:
        """Wait for the stats to satisfy ``predicate``; raise TimeoutError after ``timeout`` s."""
        return await self._book.wait_until(predicate, timeout)

    async def wait_idle(self, timeout: float = 5.0) -> SimulatorStats:  # noqa: ASYNC109
        """Wait until no request is in flight."""
        return await self.wait_until(lambda stats: stats.in_flight == 0, timeout)

    async def wait_disconnected(self, timeout: float = 5.0) -> SimulatorStats:  # noqa: ASYNC109
        """Wait until no HTTP connection is open (a client closed its pool)."""
        return await self.wait_until(lambda stats: stats.open_connections == 0, timeout)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        wire = _ROUTES.get(request.path)
        if request.path == "/v1/models":
            wire, method, respond = _OPENAI, "GET", self._models
        elif wire is None:
            return error_response(_OPENAI, ErrorKind.NOT_FOUND, f"Unknown path {request.path}")
        else:
            method, respond = "POST", self._complete
        if request.method != method:
            return error_response(wire, ErrorKind.METHOD_NOT_ALLOWED, f"Use {method}.")
        try:
            return await respond(request, wire)
        except WireError as exc:
            return error_response(wire, exc.kind, exc.message, exc.headers, exc.param)

    def _check_key(self, request: web.BaseRequest, wire: Wire) -> None:
        """Raise the 401 unless the request carries the configured key (if any)."""
        expected = self._settings.api_key
        if expected is None:
            return
        presented = wire.api_key(request.headers) or ""
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            kind = ErrorKind.AUTHENTICATION
            raise WireError(kind, wire.default_message(kind, model=""))

    async def _models(self, request: web.BaseRequest, wire: Wire) -> web.StreamResponse:
        self._check_key(request, wire)
        created = int(time.time())
        data = [
            {"id": p.name, "object": "model", "created": created, "owned_by": p.owned_by}
            for p in CATALOG.values()
        ]
        body = orjson.dumps({"object": "list", "data": data})
        return web.Response(body=body, content_type="application/json")

    async def _complete(self, request: web.BaseRequest, wire: Wire) -> web.StreamResponse:
        body = await self._read(request)
        traceparent = request.headers.get("traceparent")
        if traceparent is not None:
            self.traceparents.append(traceparent)
        # Everything from here to the in-flight increment is synchronous, so the
        # concurrency check and the times=N counters are atomic under asyncio.
        self._check_key(request, wire)
        chat = wire.parse(body)
        profile = CATALOG.get(chat.model)
        if profile is None:
            kind = ErrorKind.NOT_FOUND
            raise WireError(kind, wire.default_message(kind, model=chat.model))
        if chat.features is not None:
            self._check_features(chat, profile)
        try:
            directives = parse_directives(chat.contents(), CATALOG)
            answer_plan = plan_answer(chat)
        except DirectiveError as exc:
            raise WireError(ErrorKind.INVALID_REQUEST, f"simulator directive {exc}") from None
        limit = profile.max_concurrent
        if self._settings.enforce_concurrency and self._book.in_flight(chat.model) >= limit:
            message = f"Too many concurrent requests for {chat.model} (limit {limit})."
            raise WireError(ErrorKind.RATE_LIMIT, message, {"retry-after": "1"})
        script = self._script(wire, chat, profile, directives, answer_plan)
        with self._book.serving(chat.model) as tally:
            return await Exchange(request, wire, script, tally).run()

    async def _read(self, request: web.BaseRequest) -> object:
        """The decoded JSON body, counted in the stats (under its model, if it names one)."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._book.received(None)
            raise WireError(ErrorKind.TOO_LARGE, "Request body too large.") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._book.received(None)
            raise WireError(ErrorKind.INVALID_REQUEST, f"Malformed JSON body: {exc}") from None
        model = body.get("model") if isinstance(body, dict) else None
        self._book.received(model if isinstance(model, str) else None)
        return body

    def _check_features(self, chat: ChatRequest, profile: ModelProfile) -> None:
        """Refuse what the model cannot do, and thinking blocks the simulator did not sign."""
        features = chat.features
        assert features is not None
        if features.reasoning_effort is not None and not profile.reasoning:
            raise WireError(
                ErrorKind.INVALID_REQUEST,
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                param="reasoning_effort",
            )
        if features.thinking_budget is not None and not profile.reasoning:
            raise WireError(ErrorKind.INVALID_REQUEST, f"{chat.model} does not support thinking.")
        if features.images and not profile.vision:
            raise WireError(
                ErrorKind.INVALID_REQUEST, f"{chat.model} does not support image input."
            )
        for block in features.signed:
            if not verify(self._settings.signing_key, block):
                what = (
                    "`signature` in `thinking`"
                    if block.text is not None
                    else ("`data` in `redacted_thinking`")
                )
                raise WireError(ErrorKind.INVALID_REQUEST, f"{block.path}: Invalid {what} block")

    def _cache(self, chat: ChatRequest, answer_plan: AnswerPlan) -> tuple[int, int]:
        """Prompt-cache (reads, writes) for one answered request; see the module docstring."""
        if answer_plan.cache is CacheMode.READ:
            return prefix_tokens(chat), 0
        if answer_plan.cache is CacheMode.WRITE:
            return 0, prefix_tokens(chat)
        features = chat.features
        if features is None or features.breakpoint is None:
            return 0, 0
        tokens, prefix = features.breakpoint
        if tokens < MIN_CACHEABLE_TOKENS:
            return 0, 0
        key = (chat.model, prefix)
        if key in self._cached:
            return tokens, 0
        self._cached[key] = None
        if len(self._cached) > MAX_CACHED_PREFIXES:
            del self._cached[next(iter(self._cached))]
        return 0, tokens

    def _script(
        self,
        wire: Wire,
        chat: ChatRequest,
        profile: ModelProfile,
        directives: Sequence[Directive],
        answer_plan: AnswerPlan | None = None,
    ) -> Script:
        """Decide the response: faults (spending times=N counters), timing, ids and answer."""
        conversation = conversation_key(chat)
        seen: dict[str, int] = {}
        keys = []
        for directive in directives:  # the same directive twice in a prompt counts twice
            seen[directive.text] = occurrence = seen.get(directive.text, -1) + 1
            keys.append((conversation, directive.text, occurrence))
        plan = plan_faults(directives, chat.model, [self._times.get(key, 0) for key in keys])
        if reason := misfit(plan, stream=chat.stream, wire=wire.name):
            raise WireError(ErrorKind.INVALID_REQUEST, f"simulator directive: {reason}")
        for index in plan.fired:
            self._times[keys[index]] = self._times.get(keys[index], 0) + 1

        settings = self._settings
        timing = plan_timing(
            profile,
            draw(fingerprint(chat), "latency"),
            latency_scale=settings.latency_scale,
            tokens_per_second=settings.tokens_per_second,
            latency_ms=plan.latency_ms,
        )
        response_id = wire.id_prefix + uuid.uuid4().hex[:24]
        call = Call(response_id, int(time.time()), chat.model, input_tokens(chat))
        if answer_plan is None:
            answer = compose_answer(chat, forced_length=plan.tokens)
        else:
            read, write = (0, 0) if plan.error is not None else self._cache(chat, answer_plan)
            answer = compose_feature_answer(
                chat,
                answer_plan,
                key=settings.signing_key,
                forced_length=plan.tokens,
                cache_read=read,
                cache_write=write,
            )
        return Script(chat, call, answer, plan, timing)
