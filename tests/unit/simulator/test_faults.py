"""Directive grammar, validation and resolution (pure)."""

from __future__ import annotations

import pytest

from server.simulator.faults import (
    Directive,
    DirectiveError,
    FaultKind,
    misfit,
    parse_directive,
    parse_directives,
    plan_faults,
    strip_directives,
)
from server.simulator.profiles import CATALOG
from server.simulator.wire import ErrorKind


def parse(text: str) -> Directive:
    return parse_directive(text, CATALOG)


def test_parses_every_key() -> None:
    directive = parse(
        "[[sim fault=429 retry_after=1.5 retry_after_ms=250 times=2 model=gpt-4.1 "
        "latency_ms=30 tokens=7]]"
    )
    assert directive.fault is FaultKind.S429
    assert directive.retry_after == "1.5"
    assert directive.retry_after_ms == "250"
    assert directive.times == 2
    assert directive.model == "gpt-4.1"
    assert directive.latency_ms == 30
    assert directive.tokens == 7
    assert parse("[[sim fault=reset after=3]]").after == 3
    assert parse("[[sim fault=503 retry_after_date=10]]").retry_after_date == 10


def test_finds_directives_anywhere_in_order() -> None:
    found = parse_directives(
        ["system [[sim tokens=3]]", "a [[sim fault=500]] b [[sim fault=429]]", "[[simulated]]"],
        CATALOG,
    )
    assert [d.text for d in found] == ["[[sim tokens=3]]", "[[sim fault=500]]", "[[sim fault=429]]"]
    assert strip_directives("a [[sim fault=500]] b") == "a  b"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[[sim colour=red]]", "'colour'"),
        ("[[sim fault=418]]", "'418'"),
        ("[[sim fault]]", "'fault'"),
        ("[[sim fault=500 fault=502]]", "'fault' given twice"),
        ("[[sim tokens=lots]]", "tokens=lots"),
        ("[[sim tokens=-1]]", "tokens=-1"),
        ("[[sim times=0]]", "times"),
        ("[[sim model=gpt-5]]", "'gpt-5'"),
        ("[[sim fault=500 retry_after=1]]", "retry_after"),
        ("[[sim retry_after_ms=100]]", "retry_after_ms"),
        ("[[sim fault=429 retry_after=1 retry_after_date=2]]", "retry_after_date"),
        ("[[sim fault=429 retry_after=soon]]", "retry_after=soon"),
        ("[[sim fault=500 after=2]]", "after"),
    ],
)
def test_mistakes_are_named(text: str, named: str) -> None:
    with pytest.raises(DirectiveError, match=named.replace("[", r"\[")):
        parse(text)


def test_times_and_model_select_the_requests() -> None:
    directives = [parse("[[sim fault=429 times=2 model=gpt-4.1]]")]
    assert plan_faults(directives, "gpt-4.1", [0]).fault is FaultKind.S429
    assert plan_faults(directives, "gpt-4.1", [1]).fired == (0,)
    assert plan_faults(directives, "gpt-4.1", [2]).fault is None
    assert plan_faults(directives, "gemini-2.5-flash", [0]).fired == ()


def test_faults_fire_in_sequence_first_one_wins() -> None:
    directives = [parse("[[sim fault=429 times=2]]"), parse("[[sim fault=503 times=1]]")]
    outcomes = []
    spent = [0, 0]
    for _ in range(4):
        plan = plan_faults(directives, "gpt-4.1", spent)
        outcomes.append(plan.fault)
        for index in plan.fired:
            spent[index] += 1
    assert outcomes == [FaultKind.S429, FaultKind.S429, FaultKind.S503, None]


def test_settings_merge_first_wins_and_follow_the_fired_fault() -> None:
    directives = [
        parse("[[sim tokens=5]]"),
        parse("[[sim fault=reset after=2 latency_ms=10]]"),
        parse("[[sim fault=500 latency_ms=99]]"),
        parse("[[sim tokens=9]]"),
    ]
    plan = plan_faults(directives, "gpt-4.1", [0, 0, 0, 0])
    assert plan.fault is FaultKind.RESET
    assert (plan.after, plan.latency_ms, plan.tokens) == (2, 10, 5)
    assert plan.fired == (0, 1, 3)  # the 500 did not fire, so it spent nothing


def test_error_faults_map_to_error_kinds() -> None:
    assert plan_faults([parse("[[sim fault=529]]")], "gpt-4.1", [0]).error is ErrorKind.OVERLOADED
    quota = plan_faults([parse("[[sim fault=spend_limit]]")], "gpt-4.1", [0])
    assert quota.error is ErrorKind.SPEND_LIMIT
    assert plan_faults([parse("[[sim fault=no_done]]")], "gpt-4.1", [0]).error is None


def test_misfit_names_stream_only_and_wire_only_faults() -> None:
    no_done = plan_faults([parse("[[sim fault=no_done]]")], "gpt-4.1", [0])
    assert misfit(no_done, stream=True, wire="openai") is None
    assert "streaming" in (misfit(no_done, stream=False, wire="openai") or "")
    empty = plan_faults([parse("[[sim fault=empty_choices]]")], "gpt-4.1", [0])
    assert "OpenAI" in (misfit(empty, stream=True, wire="anthropic") or "")
