"""The pipeline every call runs through, declared in one place.

    accounting -> router -> cache -> [tenant limits] -> budget -> fallback
        -> [per model] retry -> breaker -> limiter -> relay attempt

Above fallback a stage sees the whole `Call`; below it, one `ModelCall` per
model of the chain. Retry repeats a model's try; the breaker and the limiter
then see every single try, so an open circuit costs no budget and every
relay request (retries included) is counted; each try is recorded where it
happens.

The cache sits above the budget on purpose: an answer from the cache costs
nothing, so it is served even to a tenant whose budget is spent. The budget
sits above fallback so that one reservation covers the whole chain. The
cache stage is left out when the cache is disabled, the budget stage when no
budget can apply, and the tenant-limit stage without authentication (callers
who name themselves have no limits of their own), so none costs anything then.

The stages keep no state of their own worth sharing: budgets, the ledger,
the limiter's gates, the breakers and cached answers live in the stores
(``server/state/``), which `build_pipeline` opens from the settings.

`Pipeline` is the facade the servicer talks to: the handler for Query and
StreamQuery, `preview` for Route (the same answers Query would get: the
route, budget-aware when configured, whether the call would be admitted,
and the breakers of its chain) and `usage` for GetUsage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server import telemetry as semconv
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import (
    ADMITTED,
    Admission,
    Call,
    CircuitState,
    CircuitStatus,
    Identity,
    ModelCall,
    ModelSpec,
    Request,
    RouteDecision,
)
from server.errors import AccessDeniedError
from server.pipeline.accounting import AccountingStage
from server.pipeline.attempt import RelayAttempt
from server.pipeline.base import Handler
from server.pipeline.breaker import BreakerStage
from server.pipeline.budget import BudgetStage
from server.pipeline.cache import CacheStage
from server.pipeline.fallback import FallbackStage
from server.pipeline.limiter import LimiterStage, Limits
from server.pipeline.retry import RetryBudget, RetryStage
from server.pipeline.router import Router, RouterStage
from server.pipeline.tenant_limits import TenantLimitStage
from server.pricing import largest_cost
from server.relay.client import RelayClient
from server.settings import Settings
from server.state import Stores, open_stores
from server.state.budgets import BudgetStatus
from server.state.ledger import UsageSummary
from server.state.responses import ResponseStore, cache_key, cacheable
from server.state.rows import CallRow
from server.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class Preview:
    """What Query would do now: its route, its admission, and the breakers of its chain."""

    route: RouteDecision
    admission: Admission
    circuits: tuple[tuple[ModelSpec, CircuitStatus], ...]


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What GetUsage reports: the ledger's summary, the budgets, the providers' load."""

    summary: UsageSummary
    budgets: tuple[BudgetStatus, ...]
    provider_load: dict[str, tuple[int, int]]  # provider -> (in flight, cap)


class Pipeline:
    """The assembled stages and the stores behind them, as the servicer sees them.

    `router`, `stores` and `limits` are there to be read (by tests, by an
    operator's tooling); the servicer needs only `handler`, `preview` and
    `usage`.
    """

    __slots__ = ("_budget_aware", "handler", "limits", "router", "stores")

    def __init__(
        self,
        handler: Handler[Call],
        router: Router,
        stores: Stores,
        limits: Limits,
        budget_aware: bool = False,
    ) -> None:
        self.handler = handler  # Query and StreamQuery: `await handler.query(call)`
        self.router = router
        self.stores = stores
        self.limits = limits
        self._budget_aware = budget_aware

    async def preview(self, request: Request, identity: Identity) -> Preview:
        """What Query would do now for `identity`: route, admission, breakers; calls nothing."""
        tenant, policy = identity.tenant, identity.policy
        budgets = self.stores.budgets
        pressure = await budgets.pressure(tenant, policy) if self._budget_aware else None
        route = self.router.decide(request, pressure, policy)
        breakers = self.stores.breakers
        circuits = tuple([(model, await breakers.status(model.name)) for model in route.chain])
        responses = self.stores.responses
        if (
            responses is not None
            and cacheable(request)
            and await responses.peek(cache_key(tenant, route, request))
        ):
            return Preview(route, ADMITTED, circuits)  # served from the cache, whatever the budget
        admission = await budgets.admission(tenant, largest_cost(route), policy)
        return Preview(route, admission, circuits)

    async def tenant_of(self, identity: Identity, tenant: str) -> Identity:
        """Whose usage `identity` reads when it names `tenant` (empty: its own).

        Only the admin credential may name another tenant; it reads that one
        under its directory policy (a tenant since deleted still has its ledger).
        """
        if not tenant or tenant == identity.tenant:
            return identity
        if not identity.admin:
            raise AccessDeniedError(
                f"only the admin credential may read another tenant's usage; leave"
                f" `caller` (the CLI's --tenant) empty to read your own ({identity.tenant!r})"
            )
        found = await self.stores.directory.tenant(tenant)
        return Identity(tenant, policy=None if found is None else found.policy)

    async def usage(self, identity: Identity, start: float, end: float) -> UsageReport:
        """The tenant's spend over [start, end), its budgets now and the providers' load."""
        tenant = identity.tenant
        return UsageReport(
            await self.stores.ledger.summary(tenant, start, end),
            await self.stores.budgets.status(tenant, identity.policy),
            self.limits.provider_load(),
        )

    async def export(
        self, identity: Identity, start: float, end: float, after: tuple[int, str], limit: int
    ) -> list[CallRow]:
        """A page of the tenant's calls that ended in [start, end), after `after`."""
        return await self.stores.ledger.export(identity.tenant, start, end, after, limit)

    async def start(self) -> None:
        """Open the stores (the ledger replays its journal; budgets read spend back)."""
        await self.stores.start()

    async def aclose(self, within: float = 10.0) -> None:
        """Write out what the stores still queue, within `within` s (after the server stopped)."""
        await self.stores.aclose(within)


def build_pipeline(
    settings: Settings,
    relay: RelayClient,
    telemetry: Telemetry | None = None,
    clock: Clock = SYSTEM_CLOCK,
    stores: Stores | None = None,
) -> Pipeline:
    """Open the stores `settings` ask for (unless given); assemble the stages, innermost first."""
    telemetry = telemetry or Telemetry.disabled()
    models = tuple(settings.catalog.models.values())
    stores = stores or open_stores(settings, models, clock)
    router = Router(settings.catalog, settings.routing)
    limits = Limits(models, settings.limits, stores.gates)
    budgets = stores.budgets
    budget_aware = budgets.enabled and settings.budgets.downgrade_at is not None
    retry = settings.retry

    attempt: Handler[ModelCall] = RelayAttempt(
        relay, settings.relay.timeout, telemetry, clock, settings.routing.validate_json
    )
    attempt = LimiterStage(attempt, limits, telemetry, clock)
    attempt = BreakerStage(attempt, stores.breakers)
    attempt = RetryStage(
        attempt,
        retry,
        RetryBudget(retry.budget_ratio, retry.budget_min_per_second, retry.budget_window),
        clock=clock,
    )
    call: Handler[Call] = FallbackStage(attempt)
    if budgets.enabled:
        call = BudgetStage(call, budgets)
    if settings.auth.effective_mode != "none":  # tenants of the directory may have limits
        call = TenantLimitStage(call, stores.gates, settings.limits.max_callers)
    if stores.responses is not None:
        call = CacheStage(call, stores.responses, telemetry, clock)
    call = RouterStage(call, router, budgets if budget_aware else None, telemetry)
    call = AccountingStage(call, stores.ledger, clock)
    _observe(telemetry, limits, stores, models)
    return Pipeline(call, router, stores, limits, budget_aware)


_CIRCUIT_LEVEL = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


def _observe(
    telemetry: Telemetry, limits: Limits, stores: Stores, models: Iterable[ModelSpec]
) -> None:
    """Gauges read when metrics are collected: no work on the call path."""
    models = tuple(models)
    breakers = stores.breakers
    telemetry.observe(
        "switchyard.circuit.state",
        "1",
        "Each model's circuit breaker: 0 closed, 1 half-open, 2 open",
        lambda: [
            (
                _CIRCUIT_LEVEL[breakers.snapshot(m.name).state],
                {semconv.GEN_AI_REQUEST_MODEL: m.name},
            )
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
    ledger = stores.ledger
    telemetry.observe(
        "switchyard.ledger.pending",
        "{call}",
        "Calls journalled and not yet written to the ledger's database (how far behind it is)",
        lambda: [(ledger.lag, {})],
    )
    shared = stores.shared
    if shared is not None:
        telemetry.observe(
            "switchyard.redis.degraded",
            "1",
            "1 while Redis does not answer and shared state has fallen back (see the README)",
            lambda: [(0 if shared.up else 1, {})],
        )
    responses = stores.responses
    if responses is not None:
        _observe_cache(telemetry, responses)


def _observe_cache(telemetry: Telemetry, responses: ResponseStore) -> None:
    def hit_ratio() -> list[tuple[float, dict[str, str]]]:
        stats = responses.stats()
        lookups = stats.hits + stats.misses
        return [(stats.hits / lookups if lookups else 0.0, {})]

    telemetry.observe(
        "switchyard.cache.hit_ratio", "1", "Cache hits over cacheable lookups", hit_ratio
    )
