"""Tools, images, JSON formats and reasoning on both wires: requests out, answers and
streams in, exactly as each provider's API reference has them."""

import base64

import httpx
import orjson
import pytest

from server.catalog import default_catalog
from server.domain import (
    Completion,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningPart,
    RedactedReasoningPart,
    Request,
    ResponseFormat,
    ResponseKind,
    Role,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    ToolSpec,
    Usage,
)
from server.errors import RelayProtocolError
from server.relay.anthropic_messages import MAX_IMAGE_BASE64
from server.relay.client import RelayClient
from server.relay.sse import SSEDecoder
from server.relay.wires import WIRES
from server.settings import RelaySettings

from .mock_relay import MockRelay, streamed

CATALOG = default_catalog()
GPT = CATALOG.models["gpt-4.1"]
CLAUDE = CATALOG.models["claude-sonnet-4-20250514"]
WEATHER = ToolSpec(
    "get_weather",
    "Current weather of a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolSpec("get_time", "", {"type": "object", "properties": {}})
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
CALL = ToolCallPart("call_1", "get_weather", {"city": "Paris"})
# A whole tool round trip: the question, the assistant's reasoning and call, the result.
ROUND_TRIP = (
    Message.of(Role.SYSTEM, "be brief"),
    Message(Role.USER, (TextPart("weather and this?"), ImagePart("image/png", data=PNG))),
    Message(
        Role.ASSISTANT,
        (
            ReasoningPart("I should look it up", "sig-abc"),
            RedactedReasoningPart("opaque=="),
            TextPart("Let me check."),
            CALL,
        ),
    ),
    Message(Role.TOOL, (ToolResultPart("call_1", "18C and sunny"),)),
    Message.of(Role.USER, "and tomorrow?"),
)
TOOLS_REQUEST = Request(messages=ROUND_TRIP, tools=(WEATHER, CLOCK))


def sse(*frames: bytes) -> list:
    return SSEDecoder().feed(b"".join(frames))


def data(payload: object, event: str = "") -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def drained(decoder, frames: list[bytes]) -> list[StreamEvent]:
    """Every event of the frames, fed one SSE event at a time, text as TextDeltas."""
    out: list[StreamEvent] = []
    for frame in frames:
        text = decoder.feed(sse(frame))
        if text:
            out.append(TextDelta(text))
        out.extend(decoder.events)
        decoder.events.clear()
    return out


# --- OpenAI chat: requests ----------------------------------------------------------


def test_openai_sends_tools_choice_parallel_format_and_effort():
    request = Request(
        messages=(Message.of(Role.USER, "hi"),),
        tools=(WEATHER, CLOCK),
        tool_choice=ToolChoice(ToolChoiceMode.TOOL, "get_weather"),
        parallel_tool_calls=False,
        response_format=ResponseFormat(
            ResponseKind.JSON_SCHEMA, "reply", {"type": "object"}, strict=True
        ),
        reasoning_effort=ReasoningEffort.HIGH,
    )
    body = orjson.loads(WIRES["openai"].encode(request, GPT, 100, stream=False))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city",
                "parameters": WEATHER.parameters,
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": CLOCK.parameters}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": {"type": "object"}, "strict": True},
    }
    assert body["reasoning_effort"] == "high"


@pytest.mark.parametrize(
    ("mode", "wire"),
    [
        (ToolChoiceMode.AUTO, "auto"),
        (ToolChoiceMode.NONE, "none"),
        (ToolChoiceMode.REQUIRED, "required"),
    ],
)
def test_openai_tool_choice_modes(mode, wire):
    request = Request(messages=ROUND_TRIP[1:2], tools=(WEATHER,), tool_choice=ToolChoice(mode))
    assert orjson.loads(WIRES["openai"].encode(request, GPT, 9, False))["tool_choice"] == wire


@pytest.mark.parametrize(("budget", "effort"), [(1024, "low"), (8000, "medium"), (20000, "high")])
def test_openai_maps_a_thinking_budget_to_the_nearest_effort(budget, effort):
    request = Request(messages=ROUND_TRIP[1:2], thinking_budget=budget)
    assert orjson.loads(WIRES["openai"].encode(request, GPT, 9, False))["reasoning_effort"] == (
        effort
    )


def test_openai_json_object_format():
    request = Request(
        messages=ROUND_TRIP[1:2], response_format=ResponseFormat(ResponseKind.JSON_OBJECT)
    )
    body = orjson.loads(WIRES["openai"].encode(request, GPT, 9, False))
    assert body["response_format"] == {"type": "json_object"}


def test_openai_messages_carry_images_calls_and_results_but_no_reasoning():
    body = orjson.loads(WIRES["openai"].encode(TOOLS_REQUEST, GPT, 9, stream=False))
    png_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert body["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "weather and this?"},
                {"type": "image_url", "image_url": {"url": png_url}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}]},
    ]


def test_openai_image_by_url_and_an_assistant_with_only_calls():
    request = Request(
        messages=(
            Message(Role.USER, (ImagePart("", url="https://img.test/a.png"),)),
            Message(Role.ASSISTANT, (CALL,)),
            Message(Role.TOOL, (ToolResultPart("call_1", "ok", is_error=True),)),
        ),
        tools=(WEATHER,),
    )
    messages = orjson.loads(WIRES["openai"].encode(request, GPT, 9, False))["messages"]
    assert messages[0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://img.test/a.png"}}
    ]
    assert messages[1]["content"] is None and messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "ok"}


# --- OpenAI chat: answers -----------------------------------------------------------


def _completion(message: dict, finish: str, usage: dict | None = None) -> bytes:
    body: dict = {"choices": [{"message": message, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return orjson.dumps(body)


def test_openai_answer_with_tool_calls_and_reasoning_tokens():
    body = _completion(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                },
            ],
        },
        "tool_calls",
        {
            "prompt_tokens": 20,
            "completion_tokens": 30,
            "completion_tokens_details": {"reasoning_tokens": 12},
        },
    )
    answer = WIRES["openai"].decode(body)
    assert answer.text == ""
    assert answer.finish_reason is FinishReason.TOOL_CALLS
    assert answer.tool_calls == (
        ToolCallPart("call_a", "get_weather", {"city": "Oslo"}),
        ToolCallPart("call_b", "get_time", {}),  # "" is no arguments, never ""
    )
    assert answer.usage == Usage(20, 30, reasoning_tokens=12)


def test_openai_a_call_reported_with_stop_is_still_tool_calls():
    body = _completion(
        {
            "content": "",
            "tool_calls": [{"id": "c", "function": {"name": "get_time", "arguments": "{}"}}],
        },
        "stop",
    )
    assert WIRES["openai"].decode(body).finish_reason is FinishReason.TOOL_CALLS


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [('{"city": "Os', "not JSON"), ("[1, 2]", "not a JSON object"), ('"x"', "not a JSON object")],
)
def test_openai_arguments_that_are_no_object_fail_the_attempt(arguments, complaint):
    body = _completion(
        {"tool_calls": [{"id": "c", "function": {"name": "get_weather", "arguments": arguments}}]},
        "tool_calls",
    )
    with pytest.raises(RelayProtocolError, match=complaint) as caught:
        WIRES["openai"].decode(body)
    assert "get_weather" in str(caught.value) and caught.value.retryable


def test_openai_reasoning_content_of_compatible_relays_is_kept():
    body = _completion({"content": "42", "reasoning_content": "6 times 7"}, "stop")
    assert WIRES["openai"].decode(body).reasoning == (ReasoningPart("6 times 7"),)


# --- OpenAI chat: streams -----------------------------------------------------------


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return data({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _tool(index: int, *, call_id: str = "", name: str = "", arguments: str = "") -> dict:
    function = {"arguments": arguments}
    if name:
        function["name"] = name
    fragment: dict = {"index": index, "function": function}
    if call_id:
        fragment.update(id=call_id, type="function")
    return fragment


OPENAI_PARALLEL = [
    _chunk({"role": "assistant", "content": None}),
    _chunk({"tool_calls": [_tool(0, call_id="call_a", name="get_weather")]}),
    _chunk({"tool_calls": [_tool(1, call_id="call_b", name="get_time")]}),
    _chunk({"tool_calls": [_tool(0, arguments='{"ci')]}),
    _chunk({"tool_calls": [_tool(0, arguments='ty": "Li')]}),
    _chunk({"tool_calls": [_tool(0, arguments='ma"}')]}),
    _chunk({}, "tool_calls"),
    data({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 9}}),
    b"data: [DONE]\n\n",
]


def test_openai_stream_keeps_every_call_of_interleaved_indexes():
    decoder = WIRES["openai"].stream_decoder()
    events = drained(decoder, OPENAI_PARALLEL)
    lima = ToolCallPart("call_a", "get_weather", {"city": "Lima"})
    time = ToolCallPart("call_b", "get_time", {})
    assert events == [
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallDelta(0, '{"ci'),
        ToolCallDelta(0, 'ty": "Li'),
        ToolCallDelta(0, 'ma"}'),
        ToolCallEnd(0, lima),
        ToolCallEnd(1, time),
    ]
    assert decoder.done and decoder.tool_calls == (lima, time)
    assert decoder.finish_reason is FinishReason.TOOL_CALLS
    assert decoder.usage == Usage(50, 9)


def test_openai_stream_calls_numbered_zero_each_are_told_apart_by_id():
    decoder = WIRES["openai"].stream_decoder()
    events = drained(
        decoder,
        [
            _chunk({"tool_calls": [_tool(0, call_id="a", name="get_time", arguments="{}")]}),
            _chunk({"tool_calls": [_tool(0, call_id="b", name="get_weather")]}),
            _chunk({"tool_calls": [_tool(0, arguments='{"city":"Rome"}')]}),
            _chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ],
    )
    assert [e for e in events if type(e) is ToolCallEnd] == [
        ToolCallEnd(0, ToolCallPart("a", "get_time", {})),
        ToolCallEnd(1, ToolCallPart("b", "get_weather", {"city": "Rome"})),
    ]
    assert decoder.finish_reason is FinishReason.TOOL_CALLS  # "stop" with calls is a tool turn


def test_openai_stream_text_then_a_call_keeps_their_order_in_one_read():
    decoder = WIRES["openai"].stream_decoder()
    frames = [
        _chunk({"content": "Checking"}),
        _chunk({"content": "..."}),
        _chunk({"tool_calls": [_tool(0, call_id="c1", name="get_time", arguments="")]}),
        _chunk({}, "tool_calls"),
    ]
    assert decoder.feed(sse(*frames)) == ""  # the text went into `events`, in order
    assert decoder.events == [
        TextDelta("Checking..."),
        ToolCallStart(0, "c1", "get_time"),
        ToolCallEnd(0, ToolCallPart("c1", "get_time", {})),
    ]


def test_openai_stream_invalid_arguments_end_the_stream_with_a_reason():
    decoder = WIRES["openai"].stream_decoder()
    drained(
        decoder,
        [
            _chunk({"tool_calls": [_tool(0, call_id="c1", name="get_weather", arguments="{")]}),
            _chunk({}, "tool_calls"),
        ],
    )
    assert isinstance(decoder.error, RelayProtocolError)
    assert "not JSON" in decoder.error.message and "get_weather" in decoder.error.message


def test_openai_stream_without_id_first_is_malformed():
    decoder = WIRES["openai"].stream_decoder()
    drained(decoder, [_chunk({"tool_calls": [_tool(0, arguments='{"a":1}')]})])
    assert isinstance(decoder.error, RelayProtocolError)
    assert "id and name" in decoder.error.message


def test_openai_stream_text_only_takes_the_fast_path():
    decoder = WIRES["openai"].stream_decoder()
    assert decoder.feed(sse(_chunk({"content": "a"}), _chunk({"content": "b"}))) == "ab"
    assert decoder.events == []


# --- Anthropic messages: requests ---------------------------------------------------


def test_anthropic_sends_blocks_back_unchanged_and_results_as_user_content():
    body = orjson.loads(WIRES["anthropic"].encode(TOOLS_REQUEST, CLAUDE, 2048, stream=False))
    png = base64.b64encode(PNG).decode()
    assert body["system"] == "be brief"
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "weather and this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": png},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should look it up", "signature": "sig-abc"},
                {"type": "redacted_thinking", "data": "opaque=="},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",  # the tool results first, then the user's next words: one turn
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C and sunny"},
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER.parameters,
            "description": "Current weather of a city",
        },
        {"name": "get_time", "input_schema": CLOCK.parameters},
    ]
    assert "tool_choice" not in body and "thinking" not in body


def test_anthropic_leaves_out_unsigned_reasoning_and_marks_tool_errors():
    request = Request(
        messages=(
            Message.of(Role.USER, "q"),
            Message(Role.ASSISTANT, (ReasoningPart("from another wire"), CALL)),
            Message(Role.TOOL, (ToolResultPart("call_1", "boom", is_error=True),)),
            Message(Role.USER, (ImagePart("", url="https://img.test/b.jpg"),)),
        ),
        tools=(WEATHER,),
    )
    messages = orjson.loads(WIRES["anthropic"].encode(request, CLAUDE, 64, False))["messages"]
    assert [block["type"] for block in messages[1]["content"]] == ["tool_use"]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "boom", "is_error": True},
        {"type": "image", "source": {"type": "url", "url": "https://img.test/b.jpg"}},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "wire"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), None, {"type": "auto"}),
        (ToolChoice(ToolChoiceMode.NONE), False, {"type": "none"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), None, {"type": "any"}),
        (
            ToolChoice(ToolChoiceMode.TOOL, "get_weather"),
            False,
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_anthropic_tool_choice(choice, parallel, wire):
    request = Request(
        messages=ROUND_TRIP[1:2], tools=(WEATHER,), tool_choice=choice, parallel_tool_calls=parallel
    )
    assert orjson.loads(WIRES["anthropic"].encode(request, CLAUDE, 64, False))["tool_choice"] == (
        wire
    )


@pytest.mark.parametrize(
    ("effort", "budget"),
    [(ReasoningEffort.LOW, 2048), (ReasoningEffort.MEDIUM, 4096), (ReasoningEffort.HIGH, 6144)],
)
def test_anthropic_thinking_from_an_effort_is_a_share_of_max_tokens(effort, budget):
    request = Request(messages=ROUND_TRIP[1:2], reasoning_effort=effort)
    body = orjson.loads(WIRES["anthropic"].encode(request, CLAUDE, 8192, False))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}


def test_anthropic_json_answers_use_the_native_output_format():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = Request(
        messages=ROUND_TRIP[1:2],
        response_format=ResponseFormat(ResponseKind.JSON_SCHEMA, "r", schema),
        thinking_budget=2000,
    )
    body = orjson.loads(WIRES["anthropic"].encode(request, CLAUDE, 4096, False))
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert "tools" not in body  # no wrapper tool: nothing can leak into the text or the calls


def test_anthropic_refuses_before_the_relay_what_it_would_refuse():
    wire = WIRES["anthropic"]
    big = Request(messages=(Message(Role.USER, (ImagePart("image/png", data=b"x" * 3_932_161),)),))
    refusal = wire.refusal(big, CLAUDE, 1024)
    assert refusal is not None and f"{MAX_IMAGE_BASE64:,}" in refusal and "5 MB" in refusal
    just_fits = Request(
        messages=(Message(Role.USER, (ImagePart("image/png", data=b"x" * 3_932_160),)),)
    )
    assert wire.refusal(just_fits, CLAUDE, 1024) is None  # exactly 5 MiB of base64
    thinking = Request(messages=ROUND_TRIP[1:2], thinking_budget=4096)
    assert "less than max_tokens" in (wire.refusal(thinking, CLAUDE, 4096) or "")
    assert wire.refusal(thinking, CLAUDE, 8192) is None
    hot = Request(messages=ROUND_TRIP[1:2], thinking_budget=1024, temperature=0.5)
    assert "temperature" in (wire.refusal(hot, CLAUDE, 8192) or "")
    forced = Request(
        messages=ROUND_TRIP[1:2],
        tools=(WEATHER,),
        tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
        reasoning_effort=ReasoningEffort.LOW,
    )
    assert "force a tool" in (wire.refusal(forced, CLAUDE, 8192) or "")
    assert WIRES["openai"].refusal(big, GPT, 1024) is None


# --- Anthropic messages: answers ----------------------------------------------------


def test_anthropic_answer_with_thinking_and_tool_use():
    body = orjson.dumps(
        {
            "content": [
                {"type": "thinking", "thinking": "Need the weather.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "cmVk"},
                {"type": "text", "text": "Looking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Bern"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 40, "cache_creation_input_tokens": 90},
        }
    )
    answer = WIRES["anthropic"].decode(body)
    assert answer.text == "Looking."
    assert answer.finish_reason is FinishReason.TOOL_CALLS
    assert answer.tool_calls == (
        ToolCallPart("toolu_1", "get_weather", {"city": "Bern"}),
        ToolCallPart("toolu_2", "get_time", {}),
    )
    assert answer.reasoning == (
        ReasoningPart("Need the weather.", "c2ln"),
        RedactedReasoningPart("cmVk"),
    )
    assert answer.usage == Usage(100, 40, cache_write_tokens=90)


def test_anthropic_tool_input_that_is_no_object_fails_the_attempt():
    body = orjson.dumps(
        {
            "content": [{"type": "tool_use", "id": "t", "name": "get_time", "input": [1]}],
            "stop_reason": "tool_use",
        }
    )
    with pytest.raises(RelayProtocolError, match="not a JSON object"):
        WIRES["anthropic"].decode(body)


# --- Anthropic messages: streams ----------------------------------------------------


def _event(payload: dict) -> bytes:
    return data(payload, payload["type"])


def _start(index: int, block: dict) -> bytes:
    return _event({"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict) -> bytes:
    return _event({"type": "content_block_delta", "index": index, "delta": delta})


def _stop(index: int) -> bytes:
    return _event({"type": "content_block_stop", "index": index})


ANTHROPIC_THINKING_TOOLS = [
    _event(
        {
            "type": "message_start",
            "message": {
                "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 1}
            },
        }
    ),
    _start(0, {"type": "thinking", "thinking": ""}),
    _delta(0, {"type": "thinking_delta", "thinking": "Two tools"}),
    _delta(0, {"type": "thinking_delta", "thinking": " at once."}),
    _delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAh"}),
    _stop(0),
    _start(1, {"type": "text", "text": ""}),
    _delta(1, {"type": "text_delta", "text": "On it"}),
    _stop(1),
    _start(2, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
    _delta(2, {"type": "input_json_delta", "partial_json": ""}),
    _delta(2, {"type": "input_json_delta", "partial_json": '{"city": "Ky'}),
    _delta(2, {"type": "input_json_delta", "partial_json": 'iv"}'}),
    _stop(2),
    _start(3, {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}),
    _delta(3, {"type": "input_json_delta", "partial_json": ""}),
    _stop(3),
    _event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 77},
        }
    ),
    _event({"type": "message_stop"}),
]


def test_anthropic_stream_keys_blocks_by_index_and_keeps_the_signature():
    decoder = WIRES["anthropic"].stream_decoder()
    events = drained(decoder, ANTHROPIC_THINKING_TOOLS)
    kyiv = ToolCallPart("toolu_a", "get_weather", {"city": "Kyiv"})
    clock = ToolCallPart("toolu_b", "get_time", {})
    assert events == [
        ReasoningDelta(0, text="Two tools"),
        ReasoningDelta(0, text=" at once."),
        ReasoningDelta(0, signature="EqQBCgIYAh"),
        TextDelta("On it"),
        ToolCallStart(0, "toolu_a", "get_weather"),
        ToolCallDelta(0, '{"city": "Ky'),
        ToolCallDelta(0, 'iv"}'),
        ToolCallEnd(0, kyiv),
        ToolCallStart(1, "toolu_b", "get_time"),
        ToolCallEnd(1, clock),  # partial_json "" only: arguments {}
    ]
    assert decoder.reasoning == (ReasoningPart("Two tools at once.", "EqQBCgIYAh"),)
    assert decoder.tool_calls == (kyiv, clock)
    assert decoder.finish_reason is FinishReason.TOOL_CALLS
    assert decoder.done and decoder.usage == Usage(42, 77, cached_input_tokens=30)


def test_anthropic_stream_redacted_thinking_and_cache_writes():
    decoder = WIRES["anthropic"].stream_decoder()
    events = drained(
        decoder,
        [
            _event(
                {
                    "type": "message_start",
                    "message": {
                        "usage": {
                            "input_tokens": 5,
                            "cache_creation_input_tokens": 2000,
                            "output_tokens": 1,
                        }
                    },
                }
            ),
            _start(0, {"type": "redacted_thinking", "data": "RU5DUllQVEVE"}),
            _stop(0),
            _start(1, {"type": "text", "text": ""}),
            _delta(1, {"type": "text_delta", "text": "Done."}),
            _stop(1),
            _event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 3},
                }
            ),
            _event({"type": "message_stop"}),
        ],
    )
    assert events == [ReasoningDelta(0, redacted_data="RU5DUllQVEVE"), TextDelta("Done.")]
    assert decoder.reasoning == (RedactedReasoningPart("RU5DUllQVEVE"),)
    assert decoder.finish_reason is FinishReason.STOP
    assert decoder.usage == Usage(2005, 3, cache_write_tokens=2000)


def test_anthropic_stream_broken_arguments_fail_with_the_tool_named():
    decoder = WIRES["anthropic"].stream_decoder()
    drained(
        decoder,
        [
            _start(0, {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}),
            _delta(0, {"type": "input_json_delta", "partial_json": '{"city": '}),
            _stop(0),
        ],
    )
    assert isinstance(decoder.error, RelayProtocolError)
    assert "get_weather" in decoder.error.message


# --- the relay client: events in order, and the end carries the calls --------------


async def test_relay_stream_yields_events_in_order_and_a_complete_end():
    relay = MockRelay(
        lambda r: httpx.Response(200, content=streamed([b"".join(ANTHROPIC_THINKING_TOOLS)]))
    )
    client = RelayClient("http://relay.test/v1", RelaySettings(api_key="k"), relay.transport)
    request = Request(messages=ROUND_TRIP[1:2], tools=(WEATHER, CLOCK), thinking_budget=1024)
    stream = client.stream(CLAUDE, request, 4096, 5.0)
    events = [event async for event in stream]
    end = events[-1]
    assert type(end) is Completion
    assert end.finish_reason is FinishReason.TOOL_CALLS
    assert [c.id for c in end.tool_calls] == ["toolu_a", "toolu_b"]
    assert end.reasoning == (ReasoningPart("Two tools at once.", "EqQBCgIYAh"),)
    assert [type(e).__name__ for e in events[:-1]].count("ToolCallEnd") == 2
    assert stream.text == "On it"
    sent = relay.body()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["stream"] is True
