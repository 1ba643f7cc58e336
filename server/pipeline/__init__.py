"""The pipeline every call runs through, declared in one place.

    accounting -> router -> cache -> budget -> fallback
        -> [per model] retry -> breaker -> limiter -> relay attempt

Above fallback a stage sees the whole `Call`; below it, one `ModelCall` per
model of the chain. Retry repeats a model's try; the breaker and the limiter
then see every single try, so an open circuit costs no budget and every
relay request (retries included) is counted; each try is recorded where it
happens.

The cache sits above the budget on purpose: an answer from the cache costs
nothing, so it is served even to a caller whose budget is spent. The budget
sits above fallback so that one reservation covers the whole chain. The
cache stage is left out when the cache is disabled, and the budget stage
when no budget is configured, so neither costs anything then.

`preview` gives the Route RPC the same answers Query would get: the route
(budget-aware when configured) and whether the call would be admitted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server import telemetry as semconv
from server.budgets import BudgetBook, largest_cost
from server.catalog import ModelSpec
from server.domain import ADMITTED, Admission, Call, ModelCall, Request, RouteDecision
from server.ledger import InMemoryLedger, Ledger
from server.pipeline.accounting import AccountingStage
from server.pipeline.attempt import RelayAttempt
from server.pipeline.base import Handler
from server.pipeline.breaker import Breakers, BreakerStage, CircuitState
from server.pipeline.budget import BudgetStage
from server.pipeline.cache import CacheStage
from server.pipeline.fallback import FallbackStage
from server.pipeline.limiter import LimiterStage, Limits
from server.pipeline.retry import RetryBudget, RetryStage
from server.pipeline.router import Router, RouterStage
from server.relay.client import RelayClient
from server.response_cache import ResponseCache, cache_key, cacheable
from server.settings import Settings
from server.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The assembled stages and the parts the servicer reads directly."""

    handler: Handler[Call]
    router: Router
    ledger: Ledger
    limits: Limits
    breakers: Breakers
    budgets: BudgetBook
    cache: ResponseCache | None
    budget_aware: bool = False

    def preview(self, request: Request, caller: str) -> tuple[RouteDecision, Admission]:
        """What Query would do now for `caller`: its route and its admission."""
        budgets = self.budgets
        route = self.router.decide(request, budgets.pressure(caller) if self.budget_aware else None)
        cache = self.cache
        if (
            cache is not None
            and cacheable(request)
            and cache.peek(cache_key(caller, route, request))
        ):
            return route, ADMITTED  # served from the cache, whatever the budget
        return route, budgets.admission(caller, largest_cost(route))


def build_pipeline(
    settings: Settings, relay: RelayClient, telemetry: Telemetry | None = None
) -> Pipeline:
    """Assemble the stages, innermost first."""
    telemetry = telemetry or Telemetry.disabled()
    models = settings.catalog.models
    router = Router(settings.catalog, settings.routing)
    ledger = InMemoryLedger()
    limits = Limits(models, settings.limits)
    breakers = Breakers(models.values(), settings.breaker)
    budgets = BudgetBook(settings.budgets)
    cache = ResponseCache(settings.cache) if settings.cache.enabled else None
    budget_aware = budgets.enabled and settings.budgets.downgrade_at is not None
    retry = settings.retry

    attempt: Handler[ModelCall] = RelayAttempt(relay, settings.relay.timeout, telemetry)
    attempt = LimiterStage(attempt, limits, telemetry)
    attempt = BreakerStage(attempt, breakers)
    attempt = RetryStage(
        attempt,
        retry,
        RetryBudget(retry.budget_ratio, retry.budget_min_per_second, retry.budget_window),
    )
    call: Handler[Call] = FallbackStage(attempt)
    if budgets.enabled:
        call = BudgetStage(call, budgets)
    if cache is not None:
        call = CacheStage(call, cache, telemetry)
    call = RouterStage(call, router, budgets if budget_aware else None, telemetry)
    call = AccountingStage(call, ledger)
    _observe(telemetry, limits, breakers, cache, models.values())
    return Pipeline(call, router, ledger, limits, breakers, budgets, cache, budget_aware)


_CIRCUIT_LEVEL = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


def _observe(
    telemetry: Telemetry,
    limits: Limits,
    breakers: Breakers,
    cache: ResponseCache | None,
    models: Iterable[ModelSpec],
) -> None:
    """Gauges read when metrics are collected: no work on the call path."""
    models = tuple(models)
    telemetry.observe(
        "switchyard.circuit.state",
        "1",
        "Each model's circuit breaker: 0 closed, 1 half-open, 2 open",
        lambda: [
            (_CIRCUIT_LEVEL[breakers.state(m)[0]], {semconv.GEN_AI_REQUEST_MODEL: m.name})
            for m in models
        ],
    )
    telemetry.observe(
        "switchyard.provider.in_flight",
        "{request}",
        "Relay requests holding a provider's concurrency slot now",
        lambda: [
            (in_use, {semconv.GEN_AI_PROVIDER_NAME: provider})
            for provider, (in_use, _) in limits.provider_load().items()
        ],
    )
    if cache is not None:

        def hit_ratio() -> list[tuple[float, dict[str, str]]]:
            stats = cache.stats()
            lookups = stats.hits + stats.misses
            return [(stats.hits / lookups if lookups else 0.0, {})]

        telemetry.observe(
            "switchyard.cache.hit_ratio", "1", "Cache hits over cacheable lookups", hit_ratio
        )
