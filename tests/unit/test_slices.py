"""A long call's conversion and routing counts, a slice of messages per loop turn (issue 16).

The sliced paths must give exactly what the one-step paths give (the same Request, the
same refusal, the same route), and only calls over the long-call bound take them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Generator
from typing import TypeVar, cast

import pytest
from switchyard.v1 import gateway_pb2 as pb

from server import convert
from server.boundary import RpcBoundary
from server.errors import InvalidRequestError, RequestTooLargeError
from server.pipeline import Pipeline
from server.pipeline.router import (
    LONG_CALL_MESSAGES,
    SLICE_MESSAGES,
    Router,
    in_slices,
    measure_steps,
    user_text,
    word_count,
)
from server.servicer import GatewayServicer
from server.settings import LimitSettings, Settings
from server.tokens import definition_tokens, message_tokens, request_tokens

T = TypeVar("T")
SETTINGS = Settings()
ROUTER = Router(SETTINGS.catalog, SETTINGS.routing)


def run(steps: Generator[None, None, T]) -> tuple[T, int]:
    """The generator's result, and how many times it yielded."""
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(T, done.value), yields
        yields += 1


def conversation(count: int, text: str = "word " * 20) -> pb.QuerySpec:
    roles = (pb.ROLE_USER, pb.ROLE_ASSISTANT)
    return pb.QuerySpec(
        messages=[pb.Message(role=roles[i % 2], content=text) for i in range(count)],
        prompt="and so?",
    )


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 30])
def test_a_conversion_in_slices_is_the_conversion_in_one_step(count: int) -> None:
    spec = conversation(count)
    request, yields = run(convert.request_steps(spec, 8))
    assert request == convert.request_from_proto(spec)
    assert yields == 1 + -(-count // 8)  # before the counts' pass, then before each slice


def test_tool_calls_and_parts_convert_alike_in_slices() -> None:
    call = pb.Part(tool_call=pb.ToolCall(id="call_1", name="weather"))
    answer = pb.Part(tool_result=pb.ToolResult(tool_call_id="call_1", content="sunny"))
    spec = pb.QuerySpec(
        messages=[
            pb.Message(role=pb.ROLE_USER, content="weather?"),
            pb.Message(role=pb.ROLE_ASSISTANT, parts=[pb.Part(text="let me see"), call]),
            pb.Message(role=pb.ROLE_TOOL, parts=[answer]),
        ],
        prompt="and tomorrow?",
        tools=[pb.Tool(name="weather", description="the weather")],
    )
    request, yields = run(convert.request_steps(spec, 1))
    assert (request, yields) == (convert.request_from_proto(spec), 4)
    assert not request.plain


@pytest.mark.parametrize(
    ("messages", "limits", "error"),
    [
        # a bad message in a later slice is refused as in one step, naming its index
        (
            [pb.Message(role=pb.ROLE_USER, content="hi")] * 5 + [pb.Message(content="hi")],
            LimitSettings(),
            InvalidRequestError,
        ),
        ([pb.Message(role=pb.ROLE_USER, content="   ")] * 6, LimitSettings(), InvalidRequestError),
        (  # both content and parts
            [pb.Message(role=pb.ROLE_USER, content="a", parts=[pb.Part(text="b")])] * 6,
            LimitSettings(),
            InvalidRequestError,
        ),
        (  # a tool message without parts
            [pb.Message(role=pb.ROLE_TOOL, content="sunny")] * 6,
            LimitSettings(),
            InvalidRequestError,
        ),
        # the text bound passed in a later slice
        (
            [pb.Message(role=pb.ROLE_USER, content="abcd")] * 6,
            LimitSettings(max_text_bytes=21),
            RequestTooLargeError,
        ),
        # the counts, before any slice
        (
            [pb.Message(role=pb.ROLE_USER, content="a")] * 6,
            LimitSettings(max_messages=5),
            RequestTooLargeError,
        ),
    ],
)
def test_a_refusal_in_slices_is_the_refusal_in_one_step(
    messages: list[pb.Message], limits: LimitSettings, error: type[Exception]
) -> None:
    spec = pb.QuerySpec(messages=messages)
    with pytest.raises(error) as in_one:
        convert.request_from_proto(spec, limits)
    with pytest.raises(error) as in_slices_:
        run(convert.request_steps(spec, 2, limits))
    assert str(in_slices_.value) == str(in_one.value)


def test_the_estimate_is_the_messages_and_the_definitions() -> None:
    plain = convert.request_from_proto(conversation(5))
    assert definition_tokens(plain) == 0
    assert request_tokens(plain) == message_tokens(plain.messages) == 5 * (4 + 25) + 4 + 2
    tooled = convert.request_from_proto(
        pb.QuerySpec(prompt="q", tools=[pb.Tool(name="weather", description="abcdefgh")])
    )
    # the name (2), the description (2) and the parameters' JSON, plus the prompt's 4 + 1
    assert definition_tokens(tooled) > 4
    assert request_tokens(tooled) == definition_tokens(tooled) + 5


@pytest.mark.parametrize(
    "spec",
    [
        conversation(300),  # long and wordy: complex by its words, never searched
        conversation(300, "hi"),  # 150 user words and the prompt's two: searched
        conversation(40, "분석해 줘\u3000please"),  # wide spaces and keywords, searched
        pb.QuerySpec(
            messages=[pb.Message(role=pb.ROLE_USER, content="analyze")] * 3, model="gpt-4.1"
        ),
    ],
)
def test_a_route_counted_in_slices_is_the_route_counted_in_one_step(spec: pb.QuerySpec) -> None:
    request = convert.request_from_proto(spec)
    measured, yields = run(measure_steps(request, 7))
    assert measured == (word_count(user_text(request.messages)), request_tokens(request))
    assert yields == -(-len(request.messages) // 7) - 1
    assert ROUTER.decide(request, measured=measured) == ROUTER.decide(request)


class Unused:
    """A pipeline the conversion tests never reach."""


async def test_long_calls_convert_a_slice_per_loop_turn_and_short_ones_in_one_step() -> None:
    servicer = GatewayServicer(cast(Pipeline, Unused()), cast(RpcBoundary, None))
    order: list[str] = []
    real = convert.request_steps

    def noting(
        spec: pb.QuerySpec, size: int, limits: LimitSettings
    ) -> Generator[None, None, object]:
        steps = real(spec, size, limits)
        order.append("slice")
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            yield
            order.append("slice")

    async def ticks() -> None:
        for turn in range(12):
            order.append(f"turn {turn}")
            await asyncio.sleep(0)

    long = conversation(2 * SLICE_MESSAGES + 1)  # the counts' pass, three slices, the end
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(convert, "request_steps", noting)
        clock = asyncio.create_task(ticks())
        converted = await asyncio.gather(servicer._request(long), servicer._request(long))
        short = await servicer._request(conversation(LONG_CALL_MESSAGES))
        await clock
    assert converted[0] == converted[1] == convert.request_from_proto(long)
    assert short == convert.request_from_proto(conversation(LONG_CALL_MESSAGES))
    slices = [i for i, step in enumerate(order) if step == "slice"]
    assert len(slices) == 10  # five steps for each long call; the short one took none
    for first, second in itertools.pairwise(slices):
        # another task's turn between any two slices, of one call or of the next
        assert any(step.startswith("turn") for step in order[first:second]), order


async def test_in_slices_lets_a_turn_pass_where_the_steps_yield() -> None:
    order: list[str] = []

    def steps() -> Generator[None, None, str]:
        order.append("a")
        yield
        order.append("b")
        return "done"

    async def other() -> None:
        order.append("other")

    task = asyncio.create_task(other())
    assert await in_slices(steps()) == "done"
    await task
    assert order == ["a", "other", "b"]
