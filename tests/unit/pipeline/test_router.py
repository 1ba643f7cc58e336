import itertools
from typing import Any

import pytest

from server.catalog import default_catalog
from server.domain import Complexity, Message, Request, Role, RouteBasis, RouteDecision, Task
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


# --- counting words and keywords ----------------------------------------------------

import random  # noqa: E402

from server.pipeline.router import word_count  # noqa: E402


def test_word_count_is_str_split_for_every_kind_of_whitespace():
    wide = "\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
    alphabet = " \t\n\r\x0b\x0c\x1c\x1f" + wide + "ab분석é"
    rng = random.Random(16)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert word_count(text) == len(text.split()), repr(text)
    assert word_count(words(100_000)) == 100_000


def test_a_text_complex_by_its_words_alone_is_not_searched_for_keywords():
    assert ROUTER.judge(words(201) + " analyze") == (Complexity.COMPLEX, 202, None)
    assert ROUTER.decide(ask(words(201))).reason == (
        "complex query (201 words) routed as REASONING to claude-sonnet-4-20250514"
    )
    assert ROUTER.judge(words(199) + " analyze") == (Complexity.MEDIUM, 200, 1)


def test_a_keyword_inside_a_longer_keyword_counts_once():
    router = Router(default_catalog(), RoutingSettings(keywords=("code", "codes", "Review")))
    assert router.judge("codes to REVIEW, code to review")[2] == 4


# --- context-aware routing ----------------------------------------------------------

import dataclasses  # noqa: E402

from server.catalog import DEFAULT_MODELS, Catalog  # noqa: E402
from server.domain import TenantPolicy  # noqa: E402
from server.errors import ContextWindowError  # noqa: E402

# The default catalog with small windows, so a few kilobytes of text fill them:
# claude 3,000 tokens -> gpt-4.1 20,000 -> gemini 10,000; deepseek 2,000.
WINDOWS = {
    "claude-sonnet-4-20250514": 3_000,
    "gpt-4.1": 20_000,
    "gemini-2.5-flash": 10_000,
    "deepseek-v3.2": 2_000,
}
SMALL = Router(
    Catalog.build(
        [dataclasses.replace(m, context_window=WINDOWS[m.name]) for m in DEFAULT_MODELS],
        {m.task: m.name for m in DEFAULT_MODELS},
    ),
    RoutingSettings(),
)


def tokens(n: int) -> str:
    """User text whose estimate (with the message's 4 tokens) is exactly n tokens."""
    return "x" * ((n - 4) * 4)


def test_a_model_whose_window_cannot_hold_input_plus_max_tokens_is_skipped_and_route_says_so():
    # 2,000 input tokens + claude's 8,192 max_tokens > 3,000: gpt-4.1 answers instead
    route = SMALL.decide(ask(tokens(2_000), task=Task.REASONING))
    assert route.input_tokens == 2_000
    assert [m.name for m in route.chain] == ["gpt-4.1", "gemini-2.5-flash"]
    assert route.chain_max_tokens == (4096, 1024)
    assert [s.model for s in route.skipped] == ["claude-sonnet-4-20250514"]
    why = "its context window of 3000 tokens cannot hold the estimated 2000 input tokens"
    assert route.skipped[0].reason == why + " plus max_tokens 8192"
    assert route.reason == (
        "task REASONING is served by claude-sonnet-4-20250514;"
        f" claude-sonnet-4-20250514 was skipped: {why} plus max_tokens 8192"
    )
    assert route.cost_max == ROUTER.decide(ask(tokens(2_000), model="gpt-4.1")).cost_max
    # a smaller max_tokens fits the same prompt into claude's window
    route = SMALL.decide(ask(tokens(2_000), task=Task.REASONING, max_tokens=1000))
    assert (route.model.name, route.skipped) == ("claude-sonnet-4-20250514", ())


def test_fallbacks_that_cannot_hold_the_call_are_dropped_from_the_chain():
    # 9,500 tokens + 4,096 fit gpt-4.1's 20,000; its fallback claude (3,000) cannot hold them
    route = SMALL.decide(ask(tokens(9_500), task=Task.CREATIVE))
    assert [m.name for m in route.chain] == ["gpt-4.1"]
    assert [s.model for s in route.skipped] == ["claude-sonnet-4-20250514"]
    assert route.reason == "task CREATIVE is served by gpt-4.1"  # the first choice stood


def test_a_named_model_that_cannot_hold_the_call_is_refused_saying_what_to_do():
    with pytest.raises(ContextWindowError) as caught:
        SMALL.decide(ask(tokens(2_000), model="claude-sonnet-4-20250514"))
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert caught.value.message == (
        "claude-sonnet-4-20250514 cannot hold this query: it needs the estimated 2000 input"
        " tokens plus max_tokens 8192, and the model's context window is 3000 tokens;"
        " shorten the conversation or lower max_tokens to 1000 or less, or name a model with"
        " a larger window: gpt-4.1 holds 20000 tokens"
    )
    # a prompt larger than the window itself: lowering max_tokens cannot help
    with pytest.raises(ContextWindowError, match="tokens; shorten the conversation, or name"):
        SMALL.decide(ask(tokens(3_500), model="claude-sonnet-4-20250514"))


def test_when_no_model_of_the_chain_can_hold_the_call_it_is_refused_with_the_largest_window():
    with pytest.raises(ContextWindowError) as caught:
        SMALL.decide(ask(tokens(12_000), task=Task.REASONING, fallback=False))
    assert caught.value.message == (
        "no model of the route can hold this query: it needs the estimated 12000 input tokens"
        " plus max_tokens, and the largest context window of claude-sonnet-4-20250514 is"
        " 3000 tokens (claude-sonnet-4-20250514); shorten the conversation, or name a model"
        " with a larger window: gpt-4.1 holds 20000 tokens"
    )
    with pytest.raises(ContextWindowError) as caught:
        SMALL.decide(ask(tokens(19_000), task=Task.FAST))  # gemini 10,000 -> gpt-4.1 20,000
    assert "the largest context window of gemini-2.5-flash, gpt-4.1 is 20000 tokens" in (
        caught.value.message
    )
    assert caught.value.message.endswith("lower max_tokens to 1000 or less")  # none larger
    # a caller limited to small models is told only of what it may name
    policy = TenantPolicy(models=frozenset({"claude-sonnet-4-20250514", "deepseek-v3.2"}))
    with pytest.raises(ContextWindowError) as caught:
        SMALL.decide(ask(tokens(2_500), task=Task.BATCH), policy=policy)
    assert "deepseek-v3.2 is 2000 tokens" in caught.value.message
    assert "gpt-4.1" not in caught.value.message


def test_the_reported_768k_token_prompt_is_not_sent_to_a_200k_model():
    prompt = tokens(768_000)  # issue 16: admitted on claude-sonnet-4 (200,000 tokens)
    route = ROUTER.decide(ask(prompt, task=Task.REASONING))
    assert route.input_tokens == 768_000
    assert route.model.name == "gpt-4.1"  # 1,047,576 tokens
    assert [s.model for s in route.skipped] == ["claude-sonnet-4-20250514"]
    with pytest.raises(ContextWindowError, match="context window is 200000 tokens"):
        ROUTER.decide(ask(prompt, model="claude-sonnet-4-20250514"))


# --- the router stage lets other calls run around a large call's routing -----------

import asyncio  # noqa: E402
import time  # noqa: E402
from collections.abc import AsyncGenerator  # noqa: E402

from server.domain import (  # noqa: E402
    Call,
    Completion,
    FinishReason,
    Identity,
    StreamEvent,
    Usage,
)
from server.pipeline.router import RouterStage  # noqa: E402


class Recorder:
    """The stage after the router: notes when it is reached."""

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def query(self, call: Call, /) -> Completion:
        self.order.append("answered")
        assert call.route is not None
        return Completion(call.route.model, "ok", Usage(1, 1), FinishReason.STOP)

    async def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        self.order.append("answered")
        yield await self.query(call)


def conversation(messages: int, text: str = "hi") -> Call:
    request = Request(messages=tuple(Message.of(Role.USER, text) for _ in range(messages)))
    return Call(request, "rid", Identity("tester"), time.monotonic(), None)


@pytest.mark.parametrize(
    ("call", "pauses"),
    [
        (lambda: conversation(1), 0),  # the common call goes straight through
        (lambda: conversation(65), 1),  # a long one: routed in the lane, then others run
        (lambda: conversation(1, "x" * 40_000), 1),  # a large one: others run before encoding
        (lambda: conversation(65, "x" * 600), 1),  # both: the lane's turn is that turn
    ],
)
@pytest.mark.parametrize("rpc", ["query", "stream"])
async def test_a_long_or_large_call_lets_other_tasks_run_around_its_routing(call, pauses, rpc):
    order: list[str] = []
    stage = RouterStage(Recorder(order), ROUTER)

    async def other_call() -> None:  # one turn of the loop per pause it is given
        for turn in range(3):
            order.append(f"other {turn}")
            await asyncio.sleep(0)

    other = asyncio.create_task(other_call())
    the_call = call()
    if rpc == "query":
        await stage.query(the_call)
    else:
        assert [e async for e in stage.stream(the_call)]
    await other
    assert order.index("answered") == pauses  # the other call's turns that came first
    assert the_call.route is not None


async def test_long_calls_are_routed_one_per_loop_turn():
    order: list[str] = []

    class Noting:  # the real router, noting each decision
        def decide(self, *args: Any, **kwargs: Any) -> RouteDecision:
            order.append("routed")
            return ROUTER.decide(*args, **kwargs)

    stage = RouterStage(Recorder(order), Noting())  # type: ignore[arg-type]

    async def ticks() -> None:
        for turn in range(6):
            order.append(f"turn {turn}")
            await asyncio.sleep(0)

    clock = asyncio.create_task(ticks())
    await asyncio.gather(*(stage.query(conversation(65)) for _ in range(3)))
    await clock
    # Three long calls arriving together: each routed in a loop turn of its own.
    routed = [i for i, step in enumerate(order) if step == "routed"]
    assert len(routed) == 3
    for first, second in itertools.pairwise(routed):
        assert any(step.startswith("turn") for step in order[first:second]), order
