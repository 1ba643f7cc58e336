"""build_pipeline: the stages in their declared order, the stores from the settings; the
facade's preview and usage give Route and GetUsage what Query would do and did."""

from __future__ import annotations

from decimal import Decimal

import httpx

from server.domain import (
    Attempt,
    CircuitState,
    FinishReason,
    Identity,
    Message,
    Outcome,
    Request,
    Role,
    Usage,
)
from server.pipeline import build_pipeline
from server.pipeline.accounting import AccountingStage
from server.pipeline.attempt import RelayAttempt
from server.pipeline.breaker import BreakerStage
from server.pipeline.budget import BudgetStage
from server.pipeline.cache import CacheStage
from server.pipeline.fallback import FallbackStage
from server.pipeline.limiter import LimiterStage
from server.pipeline.retry import RetryStage
from server.pipeline.router import RouterStage
from server.relay.client import RelayClient
from server.settings import (
    BudgetLimits,
    BudgetSettings,
    CacheSettings,
    LedgerSettings,
    RelaySettings,
    Settings,
)
from server.state.ledger import CallRecord
from server.state.memory import MemoryResponseStore
from server.state.responses import CachedAnswer, cache_key
from server.state.sql.ledger import SqlLedger
from tests.helpers import FakeClock

from ..relay.mock_relay import MockRelay
from .fakes import CATALOG

USD = 1_000_000_000
HI = Request(messages=(Message.of(Role.USER, "hi"),))
GEMINI = CATALOG.models["gemini-2.5-flash"]


def memory(**sections) -> Settings:
    """Settings with the in-memory ledger (nothing is written to disk)."""
    return Settings(ledger=LedgerSettings(database_url="memory"), **sections)


def relay() -> RelayClient:
    never = MockRelay(lambda request: httpx.Response(500))  # nothing here calls the relay
    return RelayClient("http://relay.test/v1", RelaySettings(api_key="k"), never.transport)


def stages(pipeline) -> list[type]:
    """The handler chain, outermost first."""
    kinds, handler = [], pipeline.handler
    while handler is not None:
        kinds.append(type(handler))
        handler = getattr(handler, "next", None)
    return kinds


def test_the_default_pipeline_is_the_declared_one_without_a_budget_stage():
    pipeline = build_pipeline(memory(), relay(), clock=FakeClock())
    assert stages(pipeline) == [
        AccountingStage,
        RouterStage,
        CacheStage,
        FallbackStage,
        RetryStage,
        BreakerStage,
        LimiterStage,
        RelayAttempt,
    ]
    assert isinstance(pipeline.stores.responses, MemoryResponseStore)


def test_budgets_add_their_stage_and_a_disabled_cache_removes_its_own():
    settings = memory(
        budgets=BudgetSettings(BudgetLimits(day=USD)), cache=CacheSettings(enabled=False)
    )
    pipeline = build_pipeline(settings, relay(), clock=FakeClock())
    assert BudgetStage in stages(pipeline) and CacheStage not in stages(pipeline)
    assert pipeline.stores.responses is None


async def test_preview_routes_admits_and_reports_the_breakers_of_the_chain():
    pipeline = build_pipeline(memory(), relay(), clock=FakeClock())
    for _ in range(5):  # the default breaker opens after 5 failures in a row
        await pipeline.stores.breakers.failed("gpt-4.1")
    preview = await pipeline.preview(HI, Identity("svc"))
    assert [m.name for m in preview.route.chain] == ["gemini-2.5-flash", "gpt-4.1"]
    assert preview.admission.admitted
    states = {model.name: status.state for model, status in preview.circuits}
    assert states == {"gemini-2.5-flash": CircuitState.CLOSED, "gpt-4.1": CircuitState.OPEN}


async def test_preview_refuses_as_the_budget_would_unless_the_cache_would_answer():
    settings = memory(budgets=BudgetSettings(BudgetLimits(day=1000)))  # $0.000001
    pipeline = build_pipeline(settings, relay(), clock=FakeClock())
    refused = await pipeline.preview(HI, Identity("svc"))
    assert not refused.admission.admitted and "daily budget" in refused.admission.reason
    responses = pipeline.stores.responses
    assert responses is not None
    answer = CachedAnswer("hello", GEMINI, FinishReason.STOP, 5)
    await responses.put(cache_key("svc", refused.route, HI), answer)
    assert (await pipeline.preview(HI, Identity("svc"))).admission.admitted
    # the cached answer is svc's: another tenant is still refused
    assert not (await pipeline.preview(HI, Identity("other"))).admission.admitted


async def test_budget_aware_preview_reads_the_tenants_pressure():
    budgets = BudgetSettings(BudgetLimits(day=USD), downgrade_at=Decimal("0.5"))
    pipeline = build_pipeline(memory(budgets=budgets), relay(), clock=FakeClock())
    ask = Request(messages=(Message.of(Role.USER, "Please compare these two options"),))
    assert (await pipeline.preview(ask, Identity("svc"))).route.model.name == "gpt-4.1"
    await pipeline.stores.budgets.reserve("svc", USD // 2)  # half the day's budget in flight
    cheaper = (await pipeline.preview(ask, Identity("svc"))).route
    assert cheaper.model.name != "gpt-4.1" and "cheaper" in cheaper.reason
    assert (await pipeline.preview(ask, Identity("calm"))).route.model.name == "gpt-4.1"


async def test_usage_reports_the_tenants_ledger_budgets_and_the_providers_load():
    clock = FakeClock()
    settings = memory(budgets=BudgetSettings(BudgetLimits(day=USD)))
    pipeline = build_pipeline(settings, relay(), clock=clock)
    paid = Attempt(GEMINI, Outcome.SUCCESS, 0.1, 200, "", Usage(10, 2), 45_000)
    pipeline.stores.ledger.record(CallRecord("r1", "svc", clock.wall(), (paid,)))
    await pipeline.stores.budgets.settle(
        await pipeline.stores.budgets.reserve("svc", 45_000), 45_000
    )
    report = await pipeline.usage(Identity("svc"), clock.wall() - 60, clock.wall() + 60)
    assert (report.summary.requests, report.summary.total.cost) == (1, 45_000)
    assert [(b.period, b.spent) for b in report.budgets] == [("day", 45_000)]
    assert report.provider_load["google"] == (0, 30)
    other = await pipeline.usage(Identity("other"), clock.wall() - 60, clock.wall() + 60)
    assert other.summary.requests == 0


def test_the_default_ledger_is_sqlite_in_the_data_directory(tmp_path):
    settings = Settings(ledger=LedgerSettings(data_dir=str(tmp_path)))
    pipeline = build_pipeline(settings, relay(), clock=FakeClock())
    ledger = pipeline.stores.ledger
    assert isinstance(ledger, SqlLedger)
    assert ledger.database == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert not pipeline.stores.budgets.seeded  # until the ledger's spend is read back
