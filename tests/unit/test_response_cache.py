"""The response cache store: what the key covers, LRU by entries and bytes, TTL."""

import pytest
from switchyard.v1 import gateway_pb2 as pb

from server import convert
from server.domain import CacheMode, FinishReason, Message, Request, Role
from server.response_cache import (
    ENTRY_OVERHEAD,
    CachedAnswer,
    ResponseCache,
    cache_key,
    cacheable,
)
from server.settings import CacheSettings

from .pipeline.fakes import CATALOG, ROUTER

GEMINI = CATALOG.models["gemini-2.5-flash"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


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
def test_every_setting_and_the_caller_are_part_of_the_key(other):
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
    request = Request(messages=(Message(Role.USER, "x"),), temperature=temperature, cache_mode=mode)
    assert cacheable(request) is expected


def test_ttl_with_an_injected_clock():
    clock = Clock()
    cache = ResponseCache(CacheSettings(ttl=60), clock)
    key = key_of(prompt="hi")
    cache.put(key, answer())
    clock.now += 59.999
    assert cache.get(key) == answer()
    clock.now += 0.001
    assert cache.get(key) is None and not cache.peek(key)
    assert cache.stats().entries == 0 and cache.stats().bytes == 0


def test_lru_by_entries_keeps_the_recently_used():
    cache = ResponseCache(CacheSettings(max_entries=2), Clock())
    a, b, c = (key_of(prompt=p) for p in ("a", "b", "c"))
    cache.put(a, answer("A"))
    cache.put(b, answer("B"))
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, answer("C"))
    assert cache.peek(a) and cache.peek(c) and not cache.peek(b)
    assert cache.stats().evictions == 1


def test_lru_by_bytes():
    key = key_of(prompt="p1")
    # the size estimate: overhead + caller + model name + (message + 16) + answer text
    one = ENTRY_OVERHEAD + len("svc") + len(GEMINI.name) + (2 + 16) + 1000
    cache = ResponseCache(CacheSettings(max_bytes=2 * one), Clock())
    cache.put(key, answer("x" * 1000))
    cache.put(key_of(prompt="p2"), answer("y" * 1000))
    assert cache.stats().bytes == 2 * one and cache.stats().entries == 2
    cache.put(key_of(prompt="p3"), answer("z" * 1000))
    assert not cache.peek(key) and cache.stats().bytes == 2 * one
    # an answer larger than the whole cache is not kept, and evicts nothing
    assert not cache.put(key_of(prompt="p4"), answer("w" * 3 * one))
    assert cache.stats().entries == 2


def test_multibyte_text_counts_its_utf8_bytes():
    cache = ResponseCache(CacheSettings(), Clock())
    cache.put(key_of(prompt="안녕"), answer("서울"))  # 6 bytes each
    assert cache.stats().bytes == ENTRY_OVERHEAD + 3 + len(GEMINI.name) + (6 + 16) + 6


def test_put_replaces_and_peek_changes_nothing():
    cache = ResponseCache(CacheSettings(), Clock())
    key = key_of(prompt="hi")
    cache.put(key, answer("old"))
    cache.put(key, answer("new"))
    assert cache.stats().entries == 1
    assert cache.peek(key) and cache.stats().hits == 0
    found = cache.get(key)
    assert found is not None and found.content == "new"
    assert cache.stats().hits == 1
