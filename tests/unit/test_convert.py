import pytest
from google.protobuf import timestamp_pb2
from switchyard.v1 import gateway_pb2 as pb

from server import convert
from server.domain import CacheMode, Role, Task, Usage
from server.errors import InvalidRequestError


def spec(**fields) -> pb.QuerySpec:
    return pb.QuerySpec(**fields)


def test_prompt_becomes_the_last_user_message():
    request = convert.request_from_proto(
        spec(
            prompt="and now?",
            messages=[pb.Message(role=pb.ROLE_SYSTEM, content="be brief")],
            task=pb.TASK_FAST,
        )
    )
    assert [(m.role, m.text) for m in request.messages] == [
        (Role.SYSTEM, "be brief"),
        (Role.USER, "and now?"),
    ]
    assert request.task is Task.FAST
    assert request.model is None and request.max_tokens is None and request.temperature is None
    assert request.fallback


def test_optional_fields_are_kept_only_when_set():
    request = convert.request_from_proto(
        spec(
            prompt="x",
            temperature=0.0,
            top_p=1.0,
            max_tokens=9,
            stop=["\n\n"],
            disable_fallback=True,
            labels={"team": "search"},
            model="gpt-4.1",
        )
    )
    assert request.temperature == 0.0  # zero is a value, not "unset"
    assert (request.top_p, request.max_tokens, request.stop, request.fallback) == (
        1.0,
        9,
        ("\n\n",),
        False,
    )
    assert request.labels == {"team": "search"} and request.model == "gpt-4.1"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({}, "query.prompt is empty"),
        ({"prompt": "   "}, "query.prompt is blank"),
        (
            {"messages": [pb.Message(role=pb.ROLE_USER, content="")]},
            "query.messages[0].content is empty",
        ),
        ({"messages": [pb.Message(content="hi")]}, "query.messages[0].role"),
        ({"messages": [pb.Message(role=pb.ROLE_SYSTEM, content="rules")]}, "no user message"),
        ({"prompt": "x", "task": 9}, "query.task 9 is unknown"),
        ({"prompt": "x", "temperature": 2.5}, "query.temperature must be from 0 to 2"),
        ({"prompt": "x", "temperature": float("nan")}, "query.temperature"),
        ({"prompt": "x", "top_p": 0.0}, "query.top_p"),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"prompt": "x", "stop": [""]}, "empty sequence"),
        ({"prompt": "x", "labels": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
        ({"prompt": "x", "labels": {"k" * 65: "v"}}, "1 to 64 characters"),
        ({"prompt": "x", "labels": {"k": "v" * 257}}, "longer than 256"),
    ],
)
def test_bad_requests_name_the_field(fields, needle):
    with pytest.raises(InvalidRequestError) as caught:
        convert.request_from_proto(spec(**fields))
    assert needle in caught.value.message


@pytest.mark.parametrize(
    ("nanos", "units", "fraction"), [(0, 0, 0), (8_755_000, 0, 8_755_000), (2_000_000_001, 2, 1)]
)
def test_money_is_exact(nanos, units, fraction):
    money = convert.money(nanos)
    assert (money.currency_code, money.units, money.nanos) == ("USD", units, fraction)


def test_cache_mode_and_bad_cache_mode():
    assert convert.request_from_proto(spec(prompt="x")).cache_mode is CacheMode.DEFAULT
    assert (
        convert.request_from_proto(spec(prompt="x", cache_mode=pb.CACHE_MODE_BYPASS)).cache_mode
        is CacheMode.BYPASS
    )
    with pytest.raises(InvalidRequestError, match=r"query\.cache_mode 9 is unknown"):
        convert.request_from_proto(spec(prompt="x", cache_mode=9))


def test_usage_window_defaults_to_the_last_day_and_refuses_reversed_windows():
    assert convert.usage_window(pb.GetUsageRequest(), 1_000_000.0) == (913_600.0, 1_000_000.0)
    start = timestamp_pb2.Timestamp(seconds=10)
    end = timestamp_pb2.Timestamp(seconds=5)
    with pytest.raises(InvalidRequestError, match="start must be before end"):
        convert.usage_window(pb.GetUsageRequest(start=start, end=end), 1_000_000.0)


def test_usage_carries_cached_and_estimated():
    usage = convert.usage_to_proto(Usage(10, 2, estimated=True, cached_input_tokens=4))
    assert (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.estimated,
    ) == (
        10,
        2,
        4,
        True,
    )
