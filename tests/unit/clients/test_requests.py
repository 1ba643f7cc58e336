"""Keyword options -> QuerySpec, exactly as the contract spells them."""

import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard_client import CacheMode, Task
from switchyard_client.requests import query_spec


def test_every_option_lands_in_its_field():
    spec = query_spec(
        "Compare them",
        {
            "messages": [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")],
            "task": Task.REASONING,
            "model": "gpt-4.1",
            "max_tokens": 300,
            "temperature": 0.0,
            "top_p": 0.5,
            "stop": ["\n\n"],
            "disable_fallback": True,
            "labels": {"team": "search"},
            "cache_mode": CacheMode.BYPASS,
        },
    )
    assert spec.prompt == "Compare them"
    assert [(m.role, m.content) for m in spec.messages] == [
        (pb.ROLE_SYSTEM, "Be brief."),
        (pb.ROLE_USER, "Hi"),
        (pb.ROLE_ASSISTANT, "Hello"),
    ]
    assert (spec.task, spec.model, spec.max_tokens) == (pb.TASK_REASONING, "gpt-4.1", 300)
    # temperature 0 is a value, not "unset": the field's presence says so
    assert spec.HasField("temperature") and spec.temperature == 0.0
    assert spec.top_p == 0.5 and list(spec.stop) == ["\n\n"] and spec.disable_fallback
    assert dict(spec.labels) == {"team": "search"} and spec.cache_mode == pb.CACHE_MODE_BYPASS


def test_unset_options_stay_unset_so_the_gateway_decides():
    spec = query_spec("hi", {})
    assert spec.task == pb.TASK_UNSPECIFIED and spec.cache_mode == pb.CACHE_MODE_UNSPECIFIED
    assert not spec.HasField("temperature") and not spec.HasField("top_p")


@pytest.mark.parametrize(("task", "value"), [("fast", pb.TASK_FAST), ("BATCH", pb.TASK_BATCH)])
def test_tasks_may_be_plain_strings(task, value):
    assert query_spec("hi", {"task": task}).task == value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "quick"}, "task 'quick' is not one of reasoning, creative, fast, batch"),
        ({"cache_mode": "never"}, "cache_mode 'never' is not one of default, bypass, refresh"),
        ({"messages": [("robot", "hi")]}, "message role 'robot' is not one of"),
    ],
)
def test_a_bad_option_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        query_spec("hi", options)
