"""What the CLI prints, from canned contract messages."""

from decimal import Decimal

from google.protobuf import timestamp_pb2
from google.type import money_pb2
from switchyard.v1 import gateway_pb2 as pb
from switchyard_client.formatting import dollars, route_text, summary_line, usage_text
from switchyard_client.results import Attempt, Route, Summary, Usage


def _attempt(model: str, outcome: str, status: int = 0) -> Attempt:
    return Attempt(model, "p", outcome, status, "", 1, Usage(0, 0), Decimal(0))


def test_dollars_always_show_nine_decimals():
    assert dollars(Decimal("0.000075")) == "$0.000075000"
    assert dollars(Decimal(12)) == "$12.000000000"


def test_a_summary_line_names_model_tokens_cost_latency_and_attempts():
    summary = Summary(
        model="gpt-4.1",
        provider="openai",
        usage=Usage(12, 34),
        cost=Decimal("0.001184"),
        attempts=(
            _attempt("claude-sonnet-4-20250514", "RETRYABLE_ERROR", 529),
            _attempt("gpt-4.1", "SUCCESS"),
        ),
        finish_reason="STOP",
        cached=False,
        latency_ms=250,
        request_id="r",
        time_to_first_token_ms=80,
    )
    assert summary_line(summary) == (
        "model=gpt-4.1 tokens_in=12 tokens_out=34 cost=$0.001184000 latency_ms=250"
        " first_token_ms=80"
        " attempts=2 [claude-sonnet-4-20250514 RETRYABLE_ERROR 529, gpt-4.1 SUCCESS]"
    )


def test_a_single_attempt_is_just_counted_and_cache_hits_and_estimates_are_flagged():
    summary = Summary(
        "m", "p", Usage(1, 2, estimated=True), Decimal(0), (_attempt("m", "SUCCESS"),),
        "STOP", True, 3, "r",
    )  # fmt: skip
    assert summary_line(summary).endswith("attempts=1 cached=yes usage=estimated")


def test_route_text_shows_the_decision_the_range_and_open_circuits():
    decision = pb.RouteDecision(
        model="gpt-4.1",
        provider="openai",
        fallback_models=["claude-sonnet-4-20250514"],
        task=pb.TASK_CREATIVE,
        complexity=pb.COMPLEXITY_MEDIUM,
        basis=pb.ROUTE_BASIS_COMPLEXITY,
        reason="medium query",
        estimated_input_tokens=12,
        max_tokens=4096,
        model_states=[
            pb.ModelState(model="gpt-4.1", circuit=pb.CIRCUIT_STATE_CLOSED),
            pb.ModelState(
                model="claude-sonnet-4-20250514", circuit=pb.CIRCUIT_STATE_OPEN, retry_in_ms=900
            ),
        ],
        admission=pb.Admission(admitted=False, reason="daily budget of $5 spent"),
    )
    decision.estimated_cost.min.nanos = 96_000
    decision.estimated_cost.max.units = 1
    text = route_text(Route.from_proto(decision))
    assert text.splitlines() == [
        "model      gpt-4.1 (openai)",
        "fallbacks  claude-sonnet-4-20250514",
        "task       CREATIVE (decided by COMPLEXITY; complexity MEDIUM)",
        "reason     medium query",
        "tokens     ~12 in, up to 4096 out",
        "cost       $0.000096000 to $1.000000000",
        "circuits   gpt-4.1 CLOSED, claude-sonnet-4-20250514 OPEN (retry in 900 ms)",
        "admitted   no: daily budget of $5 spent",
    ]


def _usd(nanos: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", units=nanos // 10**9, nanos=nanos % 10**9)


def _usage() -> pb.GetUsageResponse:
    return pb.GetUsageResponse(
        caller="search",
        start=timestamp_pb2.Timestamp(seconds=1_767_182_400),  # 2025-12-31 12:00:00Z
        end=timestamp_pb2.Timestamp(seconds=1_767_268_800),
        requests=12,
        errors=1,
        cost=_usd(1_234_000),
        tokens=pb.TokenTotals(input_tokens=1200, output_tokens=3400, cached_input_tokens=100),
        models=[
            pb.ModelUsage(
                model="gemini-2.5-flash",
                attempts=9,
                failed_attempts=1,
                tokens=pb.TokenTotals(input_tokens=900, output_tokens=3000),
                cost=_usd(1_000_000),
            )
        ],
        cache=pb.CacheUsage(hits=3, misses=9, hit_rate=0.25, saved_cost=_usd(300_000)),
        budgets=[
            pb.BudgetUsage(
                period="day",
                limit=_usd(5 * 10**9),
                spent=_usd(1_234_000),
                resets_at=timestamp_pb2.Timestamp(seconds=1_767_225_600),
            )
        ],
        in_flight=[pb.ProviderLoad(provider="anthropic", in_flight=2, limit=10)],
    )


def test_usage_text_reports_totals_models_cache_budgets_and_load():
    assert usage_text(_usage()).splitlines() == [
        "caller     search",
        "window     2025-12-31 12:00:00Z to 2026-01-01 12:00:00Z",
        "requests   12 (1 failed)",
        "cost       $0.001234000",
        "tokens     1200 in (100 cached), 3400 out",
        "cache      3 hits, 9 misses (25.0%), saved $0.000300000",
        "",
        "model                        attempts failed  tokens in tokens out           cost",
        "gemini-2.5-flash                    9      1        900       3000   $0.001000000",
        "",
        "budget     day: $0.001234000 of $5.000000000, resets 2026-01-01 00:00:00Z",
        "in flight  anthropic 2/10",
    ]


def test_usage_text_of_a_quiet_caller_is_just_the_totals():
    quiet = pb.GetUsageResponse(caller="new-service")
    assert usage_text(quiet).splitlines()[2:] == [
        "requests   0 (0 failed)",
        "cost       $0.000000000",
        "tokens     0 in (0 cached), 0 out",
    ]


def test_usage_text_adds_reasoning_and_cache_writes_when_there_are_any():
    usage = _usage()
    usage.tokens.reasoning_tokens = 700
    usage.tokens.cache_write_input_tokens = 40
    assert usage_text(usage).splitlines()[4] == (
        "tokens     1200 in (100 cached, 40 written to cache), 3400 out (700 reasoning)"
    )
