import pytest

from server.catalog import default_catalog
from server.domain import Complexity, Message, Request, Role, RouteBasis, Task
from server.errors import UnknownModelError
from server.pipeline.router import Router
from server.settings import RoutingSettings

ROUTER = Router(default_catalog(), RoutingSettings())


def ask(text: str, **kwargs) -> Request:
    return Request(messages=(Message.of(Role.USER, text),), **kwargs)


def words(n: int) -> str:
    return " ".join(["word"] * n)


@pytest.mark.parametrize(
    ("text", "complexity", "model"),
    [
        ("What time is it in Seoul?", Complexity.SIMPLE, "gemini-2.5-flash"),
        (words(50), Complexity.SIMPLE, "gemini-2.5-flash"),
        (words(51), Complexity.MEDIUM, "gpt-4.1"),
        ("Please analyze this", Complexity.MEDIUM, "gpt-4.1"),
        ("이 문장을 분석해 줘", Complexity.MEDIUM, "gpt-4.1"),
        (words(201), Complexity.COMPLEX, "claude-sonnet-4-20250514"),
        ("Compare and evaluate the logic", Complexity.COMPLEX, "claude-sonnet-4-20250514"),
        ("코드 알고리즘 비교", Complexity.COMPLEX, "claude-sonnet-4-20250514"),
    ],
)
def test_auto_routing_by_complexity(text, complexity, model):
    route = ROUTER.decide(ask(text))
    assert route.complexity is complexity
    assert route.model.name == model
    assert route.basis is RouteBasis.COMPLEXITY
    assert complexity.value in route.reason


def test_explicit_model_beats_task_and_task_beats_complexity():
    route = ROUTER.decide(
        ask("Compare and evaluate the logic", task=Task.FAST, model="deepseek-v3.2")
    )
    assert (route.model.name, route.basis) == ("deepseek-v3.2", RouteBasis.MODEL)
    route = ROUTER.decide(ask("Compare and evaluate the logic", task=Task.BATCH))
    assert (route.model.name, route.basis, route.task) == (
        "deepseek-v3.2",
        RouteBasis.TASK,
        Task.BATCH,
    )
    assert route.complexity is Complexity.COMPLEX  # still judged, for insight


def test_unknown_model_is_refused_with_the_served_list():
    with pytest.raises(UnknownModelError) as caught:
        ROUTER.decide(ask("hi", model="gpt-5"))
    assert "gemini-2.5-flash" in caught.value.message


def test_fallback_chain_and_disabling_it():
    route = ROUTER.decide(ask("hi", model="claude-sonnet-4-20250514"))
    assert [m.name for m in route.chain] == [
        "claude-sonnet-4-20250514",
        "gpt-4.1",
        "gemini-2.5-flash",
    ]
    assert (
        ROUTER.decide(ask("hi", model="claude-sonnet-4-20250514", fallback=False)).fallbacks == ()
    )


def test_effective_max_tokens():
    assert ROUTER.decide(ask("hi", task=Task.FAST)).max_tokens == 1024
    assert ROUTER.decide(ask("hi", task=Task.FAST, max_tokens=77)).max_tokens == 77
    assert ROUTER.decide(ask(words(501), task=Task.FAST)).max_tokens == 1536
    assert ROUTER.decide(ask("hi", max_tokens=50_000)).max_tokens == 16_000
    long_route = ROUTER.decide(ask(words(501), model="claude-sonnet-4-20250514"))
    # each model of the chain gets its own effective max_tokens
    assert long_route.chain_max_tokens == (12288, 6144, 1536)


def test_cost_range_by_hand():
    # "hi" = 1 token + 4 per message = 5 input tokens on gemini ($2.50/M in, $10/M out)
    route = ROUTER.decide(ask("hi", task=Task.FAST))
    assert route.input_tokens == 5
    assert route.cost_min == 5 * 2_500  # nano-dollars
    assert route.cost_max == 5 * 2_500 + 1024 * 10_000


def test_keywords_are_configurable():
    router = Router(default_catalog(), RoutingSettings(keywords=("kubernetes",)))
    assert router.decide(ask("fix my Kubernetes pod")).complexity is Complexity.MEDIUM
    assert router.decide(ask("analyze this")).complexity is Complexity.SIMPLE


# --- budget-aware routing ----------------------------------------------------------

from server.domain import BudgetPressure  # noqa: E402

NEAR = BudgetPressure("day", 4_100_000_000, 5_000_000_000)  # $4.10 of $5.00


@pytest.mark.parametrize(
    ("text", "default", "cheaper"),
    [
        # REASONING: claude-sonnet-4 -> gpt-4.1, the cheapest model that also serves it
        ("Compare and evaluate the logic", "claude-sonnet-4-20250514", "gpt-4.1"),
        # CREATIVE: gpt-4.1 -> deepseek-v3.2 (4096 tokens at $0.42/M beat 1024 at $10/M)
        ("Please analyze this", "gpt-4.1", "deepseek-v3.2"),
    ],
)
def test_near_its_budget_an_auto_call_goes_to_a_cheaper_model_and_says_so(text, default, cheaper):
    assert ROUTER.decide(ask(text)).model.name == default
    route = ROUTER.decide(ask(text), NEAR)
    assert route.model.name == cheaper
    assert route.basis is RouteBasis.COMPLEXITY
    assert f"cheaper {cheaper} instead of {default}" in route.reason
    assert "$4.10 of its daily budget of $5.00 (82%)" in route.reason
    assert route.cost_max < ROUTER.decide(ask(text)).cost_max


def test_near_its_budget_explicit_choices_and_the_cheapest_stay():
    assert ROUTER.decide(ask("hi"), NEAR).model.name == "gemini-2.5-flash"  # FAST: cheapest
    assert ROUTER.decide(ask("hi", task=Task.REASONING), NEAR).model.name == (
        "claude-sonnet-4-20250514"
    )
    assert ROUTER.decide(ask("hi", model="gpt-4.1"), NEAR).model.name == "gpt-4.1"
