"""The response cache key: what makes two calls the same call, and what may be cached."""

import pytest
from switchyard.v1 import gateway_pb2 as pb

from server import convert
from server.domain import CacheMode, FinishReason, Message, Request, Role, TextPart
from server.state.responses import CachedAnswer, cache_key, cacheable

from ..pipeline.fakes import CATALOG, ROUTER

GEMINI = CATALOG.models["gemini-2.5-flash"]


def key_of(caller="svc", **fields):
    request = convert.request_from_proto(pb.QuerySpec(**fields))
    return cache_key(caller, ROUTER.decide(request), request)


def answer(text="Paris.", cost=120_000):
    return CachedAnswer(text, GEMINI, FinishReason.STOP, cost)


def test_prompt_and_an_explicit_user_message_are_the_same_conversation():
    assert key_of(prompt="What is the capital of France?") == key_of(
        messages=[pb.Message(role=pb.ROLE_USER, content="What is the capital of France?")]
    )


@pytest.mark.parametrize(
    "other",
    [
        {"caller": "other-svc"},
        {"prompt": "What is the capital of France? "},  # one space more
        {"model": "gpt-4.1"},
        {"max_tokens": 100},
        {"temperature": 0.0},  # 0 is not "the model's default"
        {"top_p": 0.5},
        {"stop": ["."]},
        {"disable_fallback": True},
        {"messages": [pb.Message(role=pb.ROLE_SYSTEM, content="be brief")]},
    ],
)
def test_every_setting_and_the_tenant_are_part_of_the_key(other):
    base = {"prompt": "What is the capital of France?"}
    fields = dict(other)
    caller = fields.pop("caller", "svc")
    assert key_of(caller, **{**base, **fields}) != key_of("svc", **base)


def test_labels_and_task_that_route_the_same_are_not_part_of_the_key():
    base = key_of(prompt="hi")
    assert key_of(prompt="hi", labels={"team": "x"}) == base
    assert key_of(prompt="hi", task=pb.TASK_FAST) == base  # the same model, the same call


@pytest.mark.parametrize(
    ("temperature", "mode", "expected"),
    [
        (None, CacheMode.DEFAULT, True),
        (0.0, CacheMode.DEFAULT, True),
        (0.0, CacheMode.REFRESH, True),
        (0.7, CacheMode.DEFAULT, False),
        (None, CacheMode.BYPASS, False),
    ],
)
def test_cacheable(temperature, mode, expected):
    request = Request(
        messages=(Message.of(Role.USER, "x"),), temperature=temperature, cache_mode=mode
    )
    assert cacheable(request) is expected


def test_each_part_of_a_message_is_part_of_the_key():
    def key(*parts: str):
        request = Request(messages=(Message(Role.USER, tuple(TextPart(p) for p in parts)),))
        return cache_key("svc", ROUTER.decide(request), request)

    assert key("ab") == key("ab")
    assert key("ab") != key("a", "b") != key("b", "a")
