"""The pipeline every call runs through, declared in one place.

    accounting -> router -> fallback -> [per model] limiter -> relay attempt

Above fallback a stage sees the whole `Call`; below it, one `ModelCall` per
try, so the limiter counts every relay request (fallbacks included) and
each attempt is recorded where it happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain import Call, ModelCall
from server.pipeline.accounting import AccountingStage, InMemoryLedger
from server.pipeline.attempt import RelayAttempt
from server.pipeline.base import Handler
from server.pipeline.fallback import FallbackStage
from server.pipeline.limiter import LimiterStage, RateBudget
from server.pipeline.router import Router, RouterStage
from server.relay.client import RelayClient
from server.settings import Settings


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The assembled stages and the parts the servicer reads directly."""

    handler: Handler[Call]
    router: Router
    ledger: InMemoryLedger
    relay_budget: RateBudget


def build_pipeline(settings: Settings, relay: RelayClient) -> Pipeline:
    """Assemble the stages, innermost first."""
    limits = settings.limits
    router = Router(settings.catalog, settings.routing)
    ledger = InMemoryLedger()
    relay_budget = RateBudget(
        "relay", limits.relay_rpm, limits.relay_burst, limits.max_waiters, limits.max_wait
    )

    attempt: Handler[ModelCall] = RelayAttempt(relay, settings.relay.timeout)
    attempt = LimiterStage(attempt, relay_budget)
    call: Handler[Call] = FallbackStage(attempt)
    call = RouterStage(call, router)
    call = AccountingStage(call, ledger)
    return Pipeline(call, router, ledger, relay_budget)
