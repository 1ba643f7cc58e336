"""Routing: which model answers a request, and why.

`Router.decide` is pure: the same request and catalog always give the same
decision, which is why the Route RPC can promise that Query would do the
same. The rules, in order:

1. an explicit `model` wins (an unknown one is refused, listing the served
   models, before anything is sent to the relay);
2. else an explicit `task` picks that task's default model;
3. else the complexity of the user's text picks the task: more than 200
   words or at least 3 analysis keywords is complex (REASONING); more than
   50 words or at least 1 keyword is medium (CREATIVE); anything else is
   simple (FAST).

Keywords are counted as case-insensitive substrings, so Korean words with
particles attached (분석해 줘) and English inflections (analyzed) count; each
keyword's occurrences are counted (a keyword inside a longer one counts once).
Words and keywords are counted without building a list of the words or running
a regular expression, and a text over the complex word count is not searched
for keywords at all (its reason then gives the words only): a megabyte of text
is judged in a few milliseconds.
Effective max_tokens: the request's value, else the model's default (1.5x
for user text over 500 words), never above the cap of 16,000.

Context-aware routing: a model of the chain whose context window cannot
hold the input estimate plus that model's effective max_tokens is skipped
(`RouteDecision.skipped` says why; the reason too, when it was the first
choice); a named model that cannot hold the call, or a chain of which none
can, is refused with INVALID_ARGUMENT (`ContextWindowError`), before anything
is sent to the relay.

Feature-aware routing: a request that uses tools, images, a JSON Schema or
reasoning (`Request.features`) goes only to models the catalog says take all
of them, and that their wire can carry it to (``Wire.refusal``: Anthropic's
5 MB image limit, its thinking rules). A named model that cannot is refused
with INVALID_ARGUMENT naming those that can; a routed one is replaced by the
cheapest capable model (of its task when one is); fallbacks that cannot are
dropped. Each is in `RouteDecision.skipped` with why. Plain text skips it all.

Budget-aware routing: when the tenant is near one of its budgets (its
`BudgetPressure`, passed in by whoever knows the spend), a call
routed by complexity (rule 3, "AUTO") goes to the cheapest model that can
serve its task (`ModelSpec.serves`), if that is cheaper for this call than
the task's default model; the reason says so. Calls naming a model or a
task are never rerouted: the caller chose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import aclosing
from typing import TypeVar

from server.catalog import Catalog
from server.domain import (
    OPEN_POLICY,
    BudgetPressure,
    Call,
    Completion,
    Complexity,
    Feature,
    Message,
    ModelSpec,
    Request,
    Role,
    RouteBasis,
    RouteDecision,
    SkippedModel,
    StreamEvent,
    Task,
    TenantPolicy,
)
from server.errors import (
    AccessDeniedError,
    ContextWindowError,
    InvalidRequestError,
    UnknownModelError,
)
from server.pipeline.base import Handler, Stage
from server.pricing import display_usd, input_cost, worst_case_cost
from server.relay.wires import WIRES
from server.settings import RoutingSettings
from server.state.budgets import BudgetStore
from server.telemetry import Telemetry
from server.tokens import definition_tokens, message_tokens, request_tokens

T = TypeVar("T")
_PERIODS = {"day": "daily", "month": "monthly"}
_TASK_OF = {
    Complexity.COMPLEX: Task.REASONING,
    Complexity.MEDIUM: Task.CREATIVE,
    Complexity.SIMPLE: Task.FAST,
}


class Router:
    """Decides the model, fallback chain, max_tokens and cost range of a request."""

    __slots__ = ("_ascii_keywords", "_catalog", "_keywords", "_servers", "_settings")

    def __init__(self, catalog: Catalog, settings: RoutingSettings) -> None:
        self._catalog = catalog
        self._settings = settings
        lowered = {k.lower() for k in settings.keywords if k}
        # A keyword that holds a shorter one is counted by the shorter one's count alone.
        self._keywords = tuple(
            sorted(k for k in lowered if not any(other != k and other in k for other in lowered))
        )
        self._ascii_keywords = tuple(k for k in self._keywords if k.isascii())  # for ASCII text
        self._servers = {task: catalog.servers(task) for task in Task}

    @property
    def catalog(self) -> Catalog:
        """The catalog routed over."""
        return self._catalog

    def judge(self, text: str) -> tuple[Complexity, int, int | None]:
        """The complexity of `text`, with its word count and keyword hits (None when
        the words alone make it complex: a long text is not searched for keywords)."""
        words = word_count(text)
        s = self._settings
        if words > s.complex_words:
            return Complexity.COMPLEX, words, None
        lowered = text.lower()
        keywords = self._ascii_keywords if lowered.isascii() else self._keywords
        hits = sum([lowered.count(keyword) for keyword in keywords])
        if hits >= s.complex_keywords:
            return Complexity.COMPLEX, words, hits
        if words > s.medium_words or hits >= s.medium_keywords:
            return Complexity.MEDIUM, words, hits
        return Complexity.SIMPLE, words, hits

    def decide(
        self,
        request: Request,
        pressure: BudgetPressure | None = None,
        policy: TenantPolicy | None = None,
        *,
        measured: tuple[int, int] | None = None,
    ) -> RouteDecision:
        """Route `request`; raises UnknownModelError for a model not served.

        `pressure` says the caller is near a budget (see the module docstring).
        `policy.models` (when set) is the tenant's allowlist: a model outside it is
        refused (AccessDeniedError) when named, and otherwise never chosen, as a
        route or a fallback; the reason says when it changed the choice.
        `measured` is what `measure_steps` counted of the request (the words of its
        user text and its input estimate), so a long one is not counted again here.
        """
        policy = policy or OPEN_POLICY
        (complexity, words, hits), input_tokens = (
            (self.judge(user_text(request.messages)), request_tokens(request))
            if measured is None
            else self._judged(request, *measured)
        )
        long_prompt = words > self._settings.long_prompt_words
        catalog = self._catalog
        if request.model is not None:
            model = catalog.get(request.model)
            if model is None:
                raise UnknownModelError(request.model, catalog.names)
            if not policy.allows(model.name):
                raise AccessDeniedError(
                    f"this caller may not use {model.name}; it may use only:"
                    f" {', '.join(sorted(policy.models))} (or leave model empty)"
                )
            task, basis = model.task, RouteBasis.MODEL
            reason = f"{model.name} was requested by name"
        elif request.task is not None:
            task, basis = request.task, RouteBasis.TASK
            model = catalog.task_models[task]
            reason = f"task {task.name} is served by {model.name}"
            if not policy.allows(model.name):
                model, reason = self._allowed(
                    request, task, model, policy, (input_tokens, long_prompt)
                )
        else:
            task, basis = _TASK_OF[complexity], RouteBasis.COMPLEXITY
            model = catalog.task_models[task]
            reason = (
                f"{complexity.text} query ({_evidence(words, hits)})"
                f" routed as {task.name} to {model.name}"
            )
            if not policy.allows(model.name):
                model, reason = self._allowed(
                    request, task, model, policy, (input_tokens, long_prompt)
                )
            elif pressure is not None:
                cheaper = self._cheapest(request, task, input_tokens, long_prompt, policy)
                if cheaper is not model and self._cost_max(
                    request, cheaper, input_tokens, long_prompt
                ) < self._cost_max(request, model, input_tokens, long_prompt):
                    reason = (
                        f"{complexity.text} query ({_evidence(words, hits)})"
                        f" routed as {task.name} to the"
                        f" cheaper {cheaper.name} instead of {model.name}: the caller has used"
                        f" {display_usd(pressure.spent)} of its {_PERIODS[pressure.period]}"
                        f" budget of {display_usd(pressure.limit)} ({_share(pressure)})"
                    )
                    model = cheaper
        unfit: list[SkippedModel] = []  # models left out for what the request uses
        if not request.plain:
            model, reason = self._capable(
                request,
                (task, basis),
                (model, reason),
                policy=policy,
                size=(input_tokens, long_prompt),
                unfit=unfit,
            )
        fallbacks = catalog.fallbacks(model) if request.fallback else ()
        if policy.models:
            fallbacks = tuple(f for f in fallbacks if policy.allows(f.name))
        if not request.plain:
            fallbacks = self._capable_fallbacks(request, fallbacks, long_prompt, unfit)
        chain = (model, *fallbacks)
        chain_max_tokens = tuple(
            [self._max_tokens(request, candidate, long_prompt) for candidate in chain]
        )  # a list made into a tuple: a generator's frame costs more than the list
        skipped: tuple[SkippedModel, ...] = ()
        for candidate, max_tokens in zip(chain, chain_max_tokens, strict=True):
            if input_tokens + max_tokens > candidate.context_window:
                fitting, skipped = self._fitting(
                    chain, chain_max_tokens, input_tokens, basis is RouteBasis.MODEL, policy
                )
                if fitting[0][0] is not model:
                    reason = f"{reason}; {model.name} was skipped: {skipped[0].reason}"
                model, fallbacks = fitting[0][0], tuple(m for m, _ in fitting[1:])
                chain_max_tokens = tuple(t for _, t in fitting)
                break
        return RouteDecision(
            model=model,
            fallbacks=fallbacks,
            task=task,
            complexity=complexity,
            basis=basis,
            reason=reason,
            input_tokens=input_tokens,
            chain_max_tokens=chain_max_tokens,
            cost_min=input_cost(model, input_tokens),
            cost_max=worst_case_cost(model, input_tokens, chain_max_tokens[0]),
            skipped=(*unfit, *skipped) if unfit else skipped,
        )

    def _judged(
        self, request: Request, words: int, input_tokens: int
    ) -> tuple[tuple[Complexity, int, int | None], int]:
        """What `judge` says of a request whose words and estimate `measure_steps` counted
        (the text is read again only when it is short enough to be searched for keywords)."""
        if words > self._settings.complex_words:
            return (Complexity.COMPLEX, words, None), input_tokens  # as `judge` says of so many
        return self.judge(user_text(request.messages)), input_tokens

    def _fitting(
        self,
        chain: tuple[ModelSpec, ...],
        chain_max_tokens: tuple[int, ...],
        input_tokens: int,
        named: bool,
        policy: TenantPolicy,
    ) -> tuple[list[tuple[ModelSpec, int]], tuple[SkippedModel, ...]]:
        """The models of `chain` whose context window holds the call (with their
        max_tokens), and the others with why; refuses a named first model that cannot
        hold it, and a chain of which none can, before anything reaches the relay."""
        fitting: list[tuple[ModelSpec, int]] = []
        skipped: list[SkippedModel] = []
        for candidate, max_tokens in zip(chain, chain_max_tokens, strict=True):
            window = candidate.context_window
            if input_tokens + max_tokens <= window:
                fitting.append((candidate, max_tokens))
                continue
            if named and candidate is chain[0]:
                raise ContextWindowError(
                    f"{candidate.name} cannot hold this query: it needs the estimated"
                    f" {input_tokens} input tokens plus max_tokens {max_tokens}, and the"
                    f" model's context window is {window} tokens; "
                    + self._fit_advice(input_tokens, window, policy)
                )
            skipped.append(
                SkippedModel(
                    candidate.name,
                    f"its context window of {window} tokens cannot hold the estimated"
                    f" {input_tokens} input tokens plus max_tokens {max_tokens}",
                )
            )
        if not fitting:
            best = max(chain, key=lambda m: m.context_window)
            names = ", ".join(m.name for m in chain)
            raise ContextWindowError(
                f"no model of the route can hold this query: it needs the estimated"
                f" {input_tokens} input tokens plus max_tokens, and the largest context"
                f" window of {names} is {best.context_window} tokens ({best.name}); "
                + self._fit_advice(input_tokens, best.context_window, policy)
            )
        return fitting, tuple(skipped)

    def _fit_advice(self, input_tokens: int, window: int, policy: TenantPolicy) -> str:
        """What to do about a query too large for `window`: what may help, and the largest
        window this caller may name, when there is a larger one."""
        advice = "shorten the conversation"
        if input_tokens < window:
            advice += f" or lower max_tokens to {window - input_tokens} or less"
        allowed = [m for m in self._catalog.models.values() if policy.allows(m.name)]
        largest = max(allowed, key=lambda m: m.context_window, default=None)
        if largest is not None and largest.context_window > window:
            advice += (
                f", or name a model with a larger window: {largest.name} holds"
                f" {largest.context_window} tokens"
            )
        return advice

    def _unfit(self, request: Request, model: ModelSpec, long_prompt: bool) -> str | None:
        """Why `model` cannot answer `request`: a feature it lacks, or a limit of its
        wire at the max_tokens it would be called with; None when it can."""
        missing = request.features - model.features
        if missing:
            return "it does not take " + " or ".join(sorted(_FEATURE_NAMES[f] for f in missing))
        max_tokens = self._max_tokens(request, model, long_prompt)
        return WIRES[model.wire].refusal(request, model, max_tokens)

    def _capable(
        self,
        request: Request,
        how: tuple[Task, RouteBasis],
        routed: tuple[ModelSpec, str],
        *,
        policy: TenantPolicy,
        size: tuple[int, bool],
        unfit: list[SkippedModel],
    ) -> tuple[ModelSpec, str]:
        """The routed model (and its reason) when it can answer the request's features; a
        named one that cannot is refused, any other is replaced by the cheapest allowed
        model that can (serving the task when one does), and recorded in `unfit`."""
        model, reason = routed
        input_tokens, long_prompt = size
        why = self._unfit(request, model, long_prompt)
        if why is None:
            return routed
        task, basis = how
        allowed = [m for m in self._catalog.models.values() if policy.allows(m.name)]
        able = [
            m for m in allowed if m is not model and self._unfit(request, m, long_prompt) is None
        ]
        if basis is RouteBasis.MODEL:
            others = ", ".join(m.name for m in able) or "none served here"
            raise InvalidRequestError(
                f"{model.name} cannot answer this query: {why}; name a model that can"
                f" ({others}) or leave model empty"
            )
        if not able:
            raise InvalidRequestError(
                "no model served here can answer this query: "
                + "; ".join(f"{m.name}: {self._unfit(request, m, long_prompt)}" for m in allowed)
            )
        serving = [m for m in able if m.serves(task)] or able
        chosen = min(serving, key=lambda m: self._cost_max(request, m, input_tokens, long_prompt))
        unfit.append(SkippedModel(model.name, why))
        return chosen, f"{reason}; {model.name} was skipped ({why}), so {chosen.name} answers"

    def _capable_fallbacks(
        self,
        request: Request,
        fallbacks: tuple[ModelSpec, ...],
        long_prompt: bool,
        unfit: list[SkippedModel],
    ) -> tuple[ModelSpec, ...]:
        """The fallbacks that can answer the request's features; the others into `unfit`."""
        kept = []
        for fallback in fallbacks:
            why = self._unfit(request, fallback, long_prompt)
            if why is None:
                kept.append(fallback)
            else:
                unfit.append(SkippedModel(fallback.name, why))
        return tuple(kept)

    def _cost_max(
        self, request: Request, model: ModelSpec, input_tokens: int, long_prompt: bool
    ) -> int:
        return worst_case_cost(model, input_tokens, self._max_tokens(request, model, long_prompt))

    def _cheapest(
        self,
        request: Request,
        task: Task,
        input_tokens: int,
        long_prompt: bool,
        policy: TenantPolicy = OPEN_POLICY,
    ) -> ModelSpec:
        """The allowed model serving `task` whose largest cost for this request is lowest."""
        allowed = [m for m in self._servers[task] if policy.allows(m.name)]
        return min(
            allowed, key=lambda model: self._cost_max(request, model, input_tokens, long_prompt)
        )

    def _allowed(
        self,
        request: Request,
        task: Task,
        default: ModelSpec,
        policy: TenantPolicy,
        size: tuple[int, bool],
    ) -> tuple[ModelSpec, str]:
        """The cheapest allowed model serving `task` (else any allowed model), and the reason."""
        models = ", ".join(sorted(policy.models))
        if any(policy.allows(m.name) for m in self._servers[task]):
            model = self._cheapest(request, task, size[0], size[1], policy)  # by price, as above
            return model, (
                f"task {task.name} routed to {model.name}: the caller may not use"
                f" {default.name}, the task's default (its models: {models})"
            )
        allowed = [m for m in self._catalog.models.values() if policy.allows(m.name)]
        if not allowed:
            raise AccessDeniedError(
                f"none of the models this caller may use ({models}) is served here;"
                " ask the operator to update its allowlist"
            )
        model = min(allowed, key=lambda m: self._cost_max(request, m, size[0], size[1]))
        return model, (
            f"task {task.name} routed to {model.name}: the caller may use none of the models"
            f" that serve {task.name} (its models: {models}), so the cheapest of its own"
        )

    def _max_tokens(self, request: Request, model: ModelSpec, long_prompt: bool) -> int:
        if request.max_tokens is not None:
            wanted = request.max_tokens
        elif long_prompt:
            wanted = model.default_max_tokens * 3 // 2
        else:
            wanted = model.default_max_tokens
        return min(wanted, self._settings.max_tokens_cap)


# str.split()'s whitespace: the ASCII kinds become b" " and every other byte b"x" (UTF-8
# never puts an ASCII byte inside a longer character); the rest are replaced first.
_MARKS = bytes(0x20 if byte < 0x80 and chr(byte).isspace() else 0x78 for byte in range(256))
_WIDE_SPACES = tuple(c for c in map(chr, range(0x80, 0x3001)) if c.isspace())


def user_text(messages: Sequence[Message]) -> str:
    """The text routing judges: the user messages', joined by newlines."""
    return "\n".join([m.text for m in messages if m.role is Role.USER])


def measure_steps(request: Request, slice_messages: int) -> Generator[None, None, tuple[int, int]]:
    """The words of the request's user text and its input estimate (what `Router.decide`
    counts first), counted `slice_messages` messages at a time: the generator yields
    between two slices and returns both, for `decide(measured=...)`.

    Both add up over slices: the estimate is a sum over messages, and a word never spans
    two messages (`user_text` joins them with a newline, which ends a word)."""
    messages = request.messages
    words, tokens = 0, definition_tokens(request)
    for start in range(0, len(messages), slice_messages):
        if start:
            yield
        part = messages[start : start + slice_messages]
        words += word_count(user_text(part))
        tokens += message_tokens(part)
    return words, tokens


def word_count(text: str) -> int:
    """`len(text.split())` without building the list of words (10x faster on a long text).

    Each word starts where a space is followed by anything else, or at the start.
    """
    if not text.isascii():
        for space in _WIDE_SPACES:  # rare: one scan each, a replace only when present
            if space in text:
                text = text.replace(space, " ")
    marks = text.encode().translate(_MARKS)
    return marks.count(b" x") + (marks[:1] == b"x")


_FEATURE_NAMES = {
    Feature.TOOLS: "tools",
    Feature.IMAGES: "images",
    Feature.JSON_SCHEMA: "JSON Schema answers",
    Feature.REASONING: "reasoning settings",
}


def _share(pressure: BudgetPressure) -> str:
    percent = pressure.spent * 100 // max(pressure.limit, 1)
    return f"{percent}%" if percent else "under 1%"


def _evidence(words: int, hits: int | None) -> str:
    """What the complexity was judged on: the words, and the keywords when counted."""
    if hits is None:
        return _count(words, "word")
    return f"{_count(words, 'word')}, {_count(hits, 'analysis keyword')}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


# A call this long was just converted, one message at a time, and one this large is
# about to be keyed and encoded for the relay, each some milliseconds of the event loop
# at the per-call bounds: the router stage lets other calls and health checks run
# between those steps, so several maximum-size calls never hold the loop for long.
LONG_CALL_MESSAGES = 64
LARGE_CALL_TOKENS = 8_192  # about 32 KB of text
LARGE_CALL_CHARS = 4 * LARGE_CALL_TOKENS  # a prompt of this many characters is a large call too
# A long call is converted (server/servicer.py) and counted here this many messages at a
# time, with a loop turn between two slices: well under a millisecond of the event loop
# each for a call at the bounds (1,000 messages, 1 MiB of text), a few times that at once.
SLICE_MESSAGES = 125


async def in_slices(steps: Generator[None, None, T]) -> T:
    """Run `steps` to its result, letting a loop turn pass where it yields."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        await asyncio.sleep(0)


class RouterStage(Stage[Call]):
    """Decides the route of each call and hands it on.

    With a `BudgetStore` (budget-aware routing on), the tenant's budget
    pressure is read at routing time, so Route and Query agree.
    """

    __slots__ = ("_budgets", "_large", "_router", "_telemetry")

    def __init__(
        self,
        next_handler: Handler[Call],
        router: Router,
        budgets: BudgetStore | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        super().__init__(next_handler)
        self._router = router
        self._budgets = budgets
        self._telemetry = telemetry or Telemetry.disabled()
        self._large = asyncio.Lock()  # the lane long calls are routed in, one per turn

    def _route(
        self,
        call: Call,
        pressure: BudgetPressure | None = None,
        measured: tuple[int, int] | None = None,
    ) -> RouteDecision:
        # No span of its own: a kept trace's SERVER span reports call.route
        # (switchyard.route.*), and a refusal is that span's error.type.
        route = call.route = self._router.decide(
            call.request, pressure, call.identity.policy, measured=measured
        )
        if pressure is not None:  # routed near a budget: the keep policy's `limits`
            self._telemetry.mark_limited(call.span)
        return route

    async def query(self, call: Call, /) -> Completion:
        """Route, then answer."""
        budgets = self._budgets
        identity = call.identity
        pressure = (
            None if budgets is None else await budgets.pressure(identity.tenant, identity.policy)
        )
        if len(call.request.messages) > LONG_CALL_MESSAGES:
            await self._route_large(call, pressure)
        elif self._route(call, pressure).input_tokens > LARGE_CALL_TOKENS:
            await asyncio.sleep(0)  # let others run before the cache key and the encoding
        return await self.next.query(call)

    async def _route_large(self, call: Call, pressure: BudgetPressure | None) -> None:
        """Route a long call in the large calls' lane: its words and estimate counted a
        slice per loop turn, then its route decided, one call at a time (as the servicer
        converts them), so health checks and small calls run between any two steps."""
        async with self._large:
            measured = await in_slices(measure_steps(call.request, SLICE_MESSAGES))
            self._route(call, pressure, measured)
            await asyncio.sleep(0)

    def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Route (refusing bad requests before the stream starts), then stream.

        Budget-aware routing reads the store first, and a long or large call
        lets other calls run around its routing, which takes a wrapping
        generator; otherwise the route is decided here and the next stage's
        stream is returned as it is (no extra layer per event).
        """
        if self._budgets is None and len(call.request.messages) <= LONG_CALL_MESSAGES:
            if self._route(call).input_tokens <= LARGE_CALL_TOKENS:
                return self.next.stream(call)
            return self._stream_routed(call, routed=True)
        return self._stream_routed(call, routed=False)

    async def _stream_routed(self, call: Call, routed: bool) -> AsyncGenerator[StreamEvent, None]:
        """The stream of a call routed here (unless `routed`: then a large one, routed
        already), pausing as `query` does."""
        if routed:
            await asyncio.sleep(0)
        else:
            budgets, identity = self._budgets, call.identity
            pressure = (
                None
                if budgets is None
                else await budgets.pressure(identity.tenant, identity.policy)
            )
            if len(call.request.messages) > LONG_CALL_MESSAGES:
                await self._route_large(call, pressure)
            elif self._route(call, pressure).input_tokens > LARGE_CALL_TOKENS:
                await asyncio.sleep(0)
        async with aclosing(self.next.stream(call)) as events:
            async for event in events:
                yield event
