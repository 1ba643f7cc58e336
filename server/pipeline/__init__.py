"""The pipeline every call runs through, declared in one place.

    accounting -> router -> fallback -> [per model] retry -> breaker -> limiter -> relay attempt

Above fallback a stage sees the whole `Call`; below it, one `ModelCall` per
model of the chain. Retry repeats a model's try; the breaker and the limiter
then see every single try, so an open circuit costs no budget and every
relay request (retries included) is counted; each try is recorded where it
happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain import Call, ModelCall
from server.pipeline.accounting import AccountingStage, InMemoryLedger
from server.pipeline.attempt import RelayAttempt
from server.pipeline.base import Handler
from server.pipeline.breaker import Breakers, BreakerStage
from server.pipeline.fallback import FallbackStage
from server.pipeline.limiter import LimiterStage, Limits
from server.pipeline.retry import RetryBudget, RetryStage
from server.pipeline.router import Router, RouterStage
from server.relay.client import RelayClient
from server.settings import Settings


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The assembled stages and the parts the servicer reads directly."""

    handler: Handler[Call]
    router: Router
    ledger: InMemoryLedger
    limits: Limits
    breakers: Breakers


def build_pipeline(settings: Settings, relay: RelayClient) -> Pipeline:
    """Assemble the stages, innermost first."""
    models = settings.catalog.models
    router = Router(settings.catalog, settings.routing)
    ledger = InMemoryLedger()
    limits = Limits(models, settings.limits)
    breakers = Breakers(models.values(), settings.breaker)
    retry = settings.retry

    attempt: Handler[ModelCall] = RelayAttempt(relay, settings.relay.timeout)
    attempt = LimiterStage(attempt, limits)
    attempt = BreakerStage(attempt, breakers)
    attempt = RetryStage(
        attempt,
        retry,
        RetryBudget(retry.budget_ratio, retry.budget_min_per_second, retry.budget_window),
    )
    call: Handler[Call] = FallbackStage(attempt)
    call = RouterStage(call, router)
    call = AccountingStage(call, ledger)
    return Pipeline(call, router, ledger, limits, breakers)
