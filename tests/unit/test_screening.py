"""The wire-level count of a large request (server/screening.py) against the conversion's.

The screen must refuse exactly what the conversion refuses for its counts (messages,
parts), refuse the lists' floods, and let everything else through to the decoder;
and it must do so without decoding, which the floods check through the decoder it
stands in front of.
"""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchyard.v1 import gateway_pb2 as pb

from server.convert import MAX_LABELS, MAX_STOP_SEQUENCES, MAX_TOOLS, request_from_proto
from server.decoding import Undecodable, _decoder
from server.errors import InvalidRequestError, RequestTooLargeError
from server.screening import SCREEN_FROM, screen
from server.settings import LimitSettings
from tests.helpers import flood, wire_field

LIMITS = LimitSettings()
# Small counts, so the property below reaches both sides of each bound quickly; the
# prompt pads each request past SCREEN_FROM, and the text bound holds it.
SMALL = dataclasses.replace(LIMITS, max_messages=12, max_parts=20, max_text_bytes=SCREEN_FROM * 4)
PAD = "word " * (SCREEN_FROM // 5 + 1)


class _Counting:
    """A decoder that counts the requests it was given (the real one behind it)."""

    def __init__(self) -> None:
        self.decoded = 0

    def __call__(self, data: bytes) -> pb.QueryRequest:
        self.decoded += 1
        return pb.QueryRequest.FromString(data)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (
            flood(500_000, pb.Message(role=pb.ROLE_USER, content="x")),
            "the query has more than 1000 messages; at most 1000 are allowed per call"
            " (SWITCHYARD_MAX_MESSAGES)",
        ),
        (
            flood(1, pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="x")] * 300_000)),
            "the query has more than 2000 content parts; at most 2000 are allowed per call"
            " (SWITCHYARD_MAX_PARTS)",
        ),
        (  # parts spread over the messages, each holding fewer than any one bound
            flood(900, pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="x")] * 400)),
            "the query has more than 2000 content parts",
        ),
        (
            pb.QueryRequest(
                query=pb.QuerySpec(prompt="hi", stop=["x"] * 100_000)
            ).SerializeToString(),
            f"query.stop has more than {MAX_STOP_SEQUENCES} sequences; at most"
            f" {MAX_STOP_SEQUENCES} are allowed",
        ),
        (
            pb.QueryRequest(
                query=pb.QuerySpec(prompt="hi", labels={str(n): "v" for n in range(50_000)})
            ).SerializeToString(),
            f"query.labels has more than {MAX_LABELS} entries",
        ),
        (
            pb.QueryRequest(
                query=pb.QuerySpec(prompt="hi", tools=[pb.Tool(name="t")] * 100_000)
            ).SerializeToString(),
            f"query.tools has more than {MAX_TOOLS} tools",
        ),
    ],
    ids=["messages", "parts-in-one-message", "parts-spread", "stop", "labels", "tools"],
)
def test_a_flood_is_refused_without_being_decoded(wire: bytes, reason: str) -> None:
    decode = _Counting()
    tolerant = _decoder(decode, "switchyard.v1.QueryRequest", screen(LIMITS))
    answer = tolerant(wire)
    assert isinstance(answer, Undecodable)
    assert answer.reason.startswith(reason), answer.reason
    assert decode.decoded == 0
    # and the conversion refuses the same request for the same bound
    with pytest.raises(InvalidRequestError) as caught:
        request_from_proto(pb.QueryRequest.FromString(wire).query, LIMITS)
    subject = reason.split(" has more than ", maxsplit=1)[0]
    assert str(caught.value).startswith(f"{subject} has "), str(caught.value)


def test_the_largest_allowed_call_and_small_calls_are_decoded() -> None:
    count = LIMITS.max_messages
    text = ("word " * 300)[:1000]
    largest = pb.QueryRequest(
        query=pb.QuerySpec(
            messages=[pb.Message(role=pb.ROLE_USER, content=text)] * (count - 2),
            prompt="p",
            system="s",
        )
    ).SerializeToString()
    assert len(largest) > SCREEN_FROM
    check = screen(LIMITS)
    assert check(largest) is None
    request_from_proto(pb.QueryRequest.FromString(largest).query, LIMITS)  # within the bounds
    # under SCREEN_FROM nothing is walked: the conversion gives the exact count
    small = flood(LIMITS.max_messages + 1, pb.Message(role=pb.ROLE_USER, content="hi"))
    assert len(small) <= SCREEN_FROM
    assert check(small) is None


def test_the_prompt_and_the_system_text_count_as_messages_and_parts() -> None:
    base = pb.QuerySpec(messages=[pb.Message(role=pb.ROLE_USER, content=PAD)] * 10)
    check = screen(SMALL)
    assert check(pb.QueryRequest(query=base).SerializeToString()) is None
    over = pb.QuerySpec()
    over.CopyFrom(base)
    over.prompt, over.system, over.messages[0].content = "p", "s", PAD  # 10 + 2 > 12? no: 12
    assert check(pb.QueryRequest(query=over).SerializeToString()) is None
    over.messages.add(role=pb.ROLE_USER, content="one more")
    reason = check(pb.QueryRequest(query=over).SerializeToString())
    assert reason is not None and reason.startswith("the query has more than 12 messages")
    # an empty prompt set on the wire is no message: the last value of a field wins
    emptied = pb.QueryRequest(query=over).SerializeToString() + wire_field(1, wire_field(1, b""))
    assert pb.QueryRequest.FromString(emptied).query.prompt == ""
    assert check(emptied) is None


def test_two_query_values_on_the_wire_are_counted_together() -> None:
    """A message field sent twice is merged by the decoder: its lists are one list."""
    half = pb.QueryRequest(
        query=pb.QuerySpec(messages=[pb.Message(role=pb.ROLE_USER, content=PAD)] * 7)
    ).SerializeToString()
    check = screen(SMALL)
    assert check(half) is None
    merged = half + half
    assert len(pb.QueryRequest.FromString(merged).query.messages) == 14
    reason = check(merged)
    assert reason is not None and reason.startswith("the query has more than 12 messages")


@pytest.mark.parametrize(
    "wire",
    [
        b"\xff" * (SCREEN_FROM + 1),  # not wire format at all
        wire_field(1, wire_field(2, b"\x08\x01" + b"\x12\xff\xff\xff\x7f")) + b"x" * SCREEN_FROM,
        flood(900, pb.Message(content="x" * 100))[:-3],  # cut short, within the bounds
        b"\x0b" + b"\x00" * SCREEN_FROM,  # a group, which proto3 never sends
    ],
    ids=["garbage", "overlong-length", "truncated", "group"],
)
def test_bytes_that_are_not_wire_format_are_left_to_the_decoder(wire: bytes) -> None:
    assert screen(LIMITS)(wire) is None
    answer = _decoder(pb.QueryRequest.FromString, "switchyard.v1.QueryRequest", screen(LIMITS))(
        wire
    )
    assert isinstance(answer, Undecodable)
    assert "do not decode" in answer.reason


_PARTS = st.lists(
    st.sampled_from(
        [
            pb.Part(text="t"),
            pb.Part(image=pb.Image(url="https://example.com/a.png")),
            pb.Part(tool_call=pb.ToolCall(id="c", name="f", arguments=struct_pb2.Struct())),
            pb.Part(tool_result=pb.ToolResult(tool_call_id="c", content="r")),
        ]
    ),
    max_size=6,
)
_MESSAGES = st.lists(
    st.builds(
        lambda role, parts, content: (
            pb.Message(role=role, parts=parts) if parts else pb.Message(role=role, content=content)
        ),
        st.sampled_from([pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_UNSPECIFIED]),
        _PARTS,
        st.sampled_from(["", "hello", "x" * 200]),
    ),
    max_size=16,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=_MESSAGES,
    system=st.sampled_from(["", "be brief"]),
    stop=st.integers(0, MAX_STOP_SEQUENCES + 2),
    tools=st.integers(0, 2),
)
def test_the_screen_refuses_what_the_conversion_refuses_for_its_counts_and_nothing_else(
    messages: list[pb.Message], system: str, stop: int, tools: int
) -> None:
    spec = pb.QuerySpec(
        prompt=PAD,
        system=system,
        messages=messages,
        stop=["s"] * stop,
        tools=[pb.Tool(name=f"t{n}") for n in range(tools)],
    )
    wire = pb.QueryRequest(query=spec).SerializeToString()
    reason = screen(SMALL)(wire)
    try:
        request_from_proto(spec, SMALL)
    except RequestTooLargeError as error:  # messages or parts: the screen says the same
        assert reason is not None, str(error)
        assert reason.split(" more than ")[0] == str(error).split(" has ")[0] + " has", reason
        assert error.setting in reason
        return
    except InvalidRequestError as error:
        # refused for something else; the screen refuses only a list over its bound
        assert reason is None or (stop > MAX_STOP_SEQUENCES and "query.stop" in reason), (
            reason,
            str(error),
        )
        return
    assert reason is None


def _schema(properties: int) -> struct_pb2.Struct:
    schema = struct_pb2.Struct()
    schema.update(
        {"type": "object", "properties": {f"p{n}": {"type": "string"} for n in range(properties)}}
    )
    return schema


@pytest.mark.parametrize(
    "spec",
    [
        pb.QuerySpec(prompt="hi", tools=[pb.Tool(name="t", parameters=_schema(100_000))]),
        pb.QuerySpec(
            prompt="hi",
            response_format=pb.ResponseFormat(
                type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(name="s", schema=_schema(100_000)),
            ),
        ),
    ],
    ids=["tool-parameters", "response-schema"],
)
def test_a_schema_flood_is_refused_without_being_decoded(spec: pb.QuerySpec) -> None:
    """A Struct of 100,000 properties (3 MB): decoded and turned into JSON, it held the
    event loop for seconds; counted in bytes on the wire, it is refused unread."""
    wire = pb.QueryRequest(query=spec).SerializeToString()
    decode = _Counting()
    answer = _decoder(decode, "switchyard.v1.QueryRequest", screen(LIMITS))(wire)
    assert isinstance(answer, Undecodable) and decode.decoded == 0
    assert answer.reason.startswith(
        "query.tools and query.response_format hold more than 65536 bytes; at most 65536 bytes"
        " of tool definitions and schema are allowed per call (SWITCHYARD_MAX_SCHEMA_BYTES)"
    ), answer.reason
    with pytest.raises(RequestTooLargeError) as caught:
        request_from_proto(spec, LIMITS)
    assert caught.value.setting == "SWITCHYARD_MAX_SCHEMA_BYTES"
    assert str(caught.value).startswith("query.tools and query.response_format hold ")
