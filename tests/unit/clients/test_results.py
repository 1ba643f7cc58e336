"""Contract messages -> plain values; money stays exact."""

from decimal import Decimal

from google.type import money_pb2
from switchyard.v1 import gateway_pb2 as pb
from switchyard_client import Answer, usd
from switchyard_client.results import Route, stream_summary


def test_money_is_exact_to_the_nano_dollar_and_keeps_its_sign():
    assert usd(money_pb2.Money(currency_code="USD", units=1, nanos=5)) == Decimal("1.000000005")
    assert usd(money_pb2.Money(units=-2, nanos=-750_000_000)) == Decimal("-2.75")
    assert usd(money_pb2.Money()) == 0


def _response() -> pb.QueryResponse:
    response = pb.QueryResponse(
        content="Paris",
        model="gpt-4.1",
        provider="openai",
        usage=pb.Usage(input_tokens=10, output_tokens=2, cached_input_tokens=4),
        finish_reason=pb.FINISH_REASON_STOP,
        latency_ms=42,
        request_id="abc",
        attempts=[
            pb.Attempt(
                model="claude-sonnet-4-20250514", outcome=pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR
            ),
            pb.Attempt(model="gpt-4.1", outcome=pb.ATTEMPT_OUTCOME_SUCCESS),
        ],
        route=pb.RouteDecision(model="claude-sonnet-4-20250514", task=pb.TASK_REASONING),
    )
    response.cost.nanos = 144_000
    return response


def test_an_answer_surfaces_text_usage_cost_and_attempts():
    answer = Answer.from_proto(_response())
    assert (answer.text, answer.model, answer.cost) == ("Paris", "gpt-4.1", Decimal("0.000144"))
    assert answer.usage.cached_input_tokens == 4
    assert [a.outcome for a in answer.summary.attempts] == ["RETRYABLE_ERROR", "SUCCESS"]
    assert answer.summary.finish_reason == "STOP" and answer.summary.latency_ms == 42
    assert answer.route.task == "REASONING"
    assert answer.summary.time_to_first_token_ms is None  # only streams measure it
    assert answer.raw.request_id == "abc"


def test_an_enum_value_from_a_newer_gateway_is_shown_as_its_number():
    route = Route.from_proto(pb.RouteDecision(task=pb.Task.ValueType(9), basis=pb.ROUTE_BASIS_TASK))
    assert (route.task, route.basis) == ("9", "TASK")
    assert route.admitted  # a gateway without admission control admits everything


def test_route_admission_is_read_when_present():
    route = pb.RouteDecision(admission=pb.Admission(admitted=False, reason="daily budget spent"))
    assert not Route.from_proto(route).admitted


def test_a_stream_summary_joins_start_and_end():
    start = pb.StreamStart(model="gemini-2.5-flash", provider="google", request_id="r1")
    end = pb.StreamEnd(usage=pb.Usage(input_tokens=3, output_tokens=5), time_to_first_token_ms=7)
    summary = stream_summary(start, end)
    assert (summary.model, summary.request_id, summary.usage.output_tokens) == (
        "gemini-2.5-flash",
        "r1",
        5,
    )
    assert summary.time_to_first_token_ms == 7
