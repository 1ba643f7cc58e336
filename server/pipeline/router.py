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
particles attached (분석해 줘) and English inflections (analyzed) count.
Effective max_tokens: the request's value, else the model's default (1.5x
for user text over 500 words), never above the cap of 16,000.

Budget-aware routing: when the tenant is near one of its budgets (its
`BudgetPressure`, passed in by whoever knows the spend), a call
routed by complexity (rule 3, "AUTO") goes to the cheapest model that can
serve its task (`ModelSpec.serves`), if that is cheaper for this call than
the task's default model; the reason says so. Calls naming a model or a
task are never rerouted: the caller chose.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing

from server import telemetry as semconv
from server.catalog import Catalog
from server.domain import (
    OPEN_POLICY,
    BudgetPressure,
    Call,
    Completion,
    Complexity,
    ModelSpec,
    Request,
    Role,
    RouteBasis,
    RouteDecision,
    StreamEvent,
    Task,
    TenantPolicy,
)
from server.errors import AccessDeniedError, SwitchyardError, UnknownModelError
from server.pipeline.base import Handler, Stage
from server.pricing import display_usd, input_cost, worst_case_cost
from server.settings import RoutingSettings
from server.state.budgets import BudgetStore
from server.telemetry import Telemetry
from server.tokens import request_tokens

_PERIODS = {"day": "daily", "month": "monthly"}
_TASK_OF = {
    Complexity.COMPLEX: Task.REASONING,
    Complexity.MEDIUM: Task.CREATIVE,
    Complexity.SIMPLE: Task.FAST,
}


class Router:
    """Decides the model, fallback chain, max_tokens and cost range of a request."""

    __slots__ = ("_catalog", "_keywords", "_servers", "_settings")

    def __init__(self, catalog: Catalog, settings: RoutingSettings) -> None:
        self._catalog = catalog
        self._settings = settings
        alternatives = sorted({k.lower() for k in settings.keywords}, key=len, reverse=True)
        self._keywords = re.compile("|".join(re.escape(k) for k in alternatives))
        self._servers = {task: catalog.servers(task) for task in Task}

    @property
    def catalog(self) -> Catalog:
        """The catalog routed over."""
        return self._catalog

    def judge(self, text: str) -> tuple[Complexity, int, int]:
        """The complexity of `text`, with its word count and keyword hits."""
        words = len(text.split())
        hits = len(self._keywords.findall(text.lower()))
        s = self._settings
        if words > s.complex_words or hits >= s.complex_keywords:
            return Complexity.COMPLEX, words, hits
        if words > s.medium_words or hits >= s.medium_keywords:
            return Complexity.MEDIUM, words, hits
        return Complexity.SIMPLE, words, hits

    def decide(
        self,
        request: Request,
        pressure: BudgetPressure | None = None,
        policy: TenantPolicy | None = None,
    ) -> RouteDecision:
        """Route `request`; raises UnknownModelError for a model not served.

        `pressure` says the caller is near a budget (see the module docstring).
        `policy.models` (when set) is the tenant's allowlist: a model outside it is
        refused (AccessDeniedError) when named, and otherwise never chosen, as a
        route or a fallback; the reason says when it changed the choice.
        """
        policy = policy or OPEN_POLICY
        text = "\n".join([m.text for m in request.messages if m.role is Role.USER])
        complexity, words, hits = self.judge(text)
        long_prompt = words > self._settings.long_prompt_words
        input_tokens = request_tokens(request)
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
                f"{complexity.value} query ({_count(words, 'word')}, "
                f"{_count(hits, 'analysis keyword')}) routed as {task.name} to {model.name}"
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
                        f"{complexity.value} query ({_count(words, 'word')}, "
                        f"{_count(hits, 'analysis keyword')}) routed as {task.name} to the"
                        f" cheaper {cheaper.name} instead of {model.name}: the caller has used"
                        f" {display_usd(pressure.spent)} of its {_PERIODS[pressure.period]}"
                        f" budget of {display_usd(pressure.limit)} ({_share(pressure)})"
                    )
                    model = cheaper
        fallbacks = catalog.fallbacks(model) if request.fallback else ()
        if policy.models:
            fallbacks = tuple(f for f in fallbacks if policy.allows(f.name))
        chain_max_tokens = tuple(
            self._max_tokens(request, candidate, long_prompt) for candidate in (model, *fallbacks)
        )
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
        )

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


def _share(pressure: BudgetPressure) -> str:
    percent = pressure.spent * 100 // max(pressure.limit, 1)
    return f"{percent}%" if percent else "under 1%"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class RouterStage(Stage[Call]):
    """Decides the route of each call and hands it on.

    With a `BudgetStore` (budget-aware routing on), the tenant's budget
    pressure is read at routing time, so Route and Query agree.
    """

    __slots__ = ("_budgets", "_router", "_telemetry")

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

    def _route(self, call: Call, pressure: BudgetPressure | None = None) -> None:
        span = self._telemetry.child(call.span, "route")
        try:
            call.route = self._router.decide(call.request, pressure, call.identity.policy)
        except SwitchyardError as error:
            span.set_attribute(semconv.ERROR_TYPE, type(error).__name__)
            raise
        finally:
            if span.is_recording() and call.route is not None:
                route = call.route
                span.set_attributes(
                    {
                        semconv.SWITCHYARD_ROUTE_MODEL: route.model.name,
                        semconv.SWITCHYARD_ROUTE_TASK: route.task.name,
                        semconv.SWITCHYARD_ROUTE_COMPLEXITY: route.complexity.name,
                        semconv.SWITCHYARD_ROUTE_BASIS: route.basis.name,
                        semconv.SWITCHYARD_ROUTE_REASON: route.reason,
                        semconv.SWITCHYARD_ROUTE_FALLBACKS: [m.name for m in route.fallbacks],
                    }
                )
            span.end()

    async def query(self, call: Call, /) -> Completion:
        """Route, then answer."""
        budgets = self._budgets
        identity = call.identity
        pressure = (
            None if budgets is None else await budgets.pressure(identity.tenant, identity.policy)
        )
        self._route(call, pressure)
        return await self.next.query(call)

    def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Route (refusing bad requests before the stream starts), then stream.

        Budget-aware routing reads the store first, which takes a wrapping
        generator; without it the route is decided here and the next stage's
        stream is returned as it is (no extra layer per event).
        """
        if self._budgets is not None:
            return self._stream_with_pressure(call, self._budgets)
        self._route(call)
        return self.next.stream(call)

    async def _stream_with_pressure(
        self, call: Call, budgets: BudgetStore
    ) -> AsyncGenerator[StreamEvent, None]:
        identity = call.identity
        self._route(call, await budgets.pressure(identity.tenant, identity.policy))
        async with aclosing(self.next.stream(call)) as events:
            async for event in events:
                yield event
