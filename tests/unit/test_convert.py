from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from switchyard.v1 import gateway_pb2 as pb

from server import convert
from server.catalog import default_catalog
from server.domain import (
    CacheMode,
    Completion,
    Feature,
    FinishReason,
    ImagePart,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningPart,
    RedactedReasoningPart,
    ResponseFormat,
    ResponseKind,
    Role,
    Task,
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
from server.errors import InvalidRequestError, RequestTooLargeError
from server.settings import LimitSettings

GPT = default_catalog().models["gpt-4.1"]


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


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


def test_the_reported_flood_of_tiny_messages_is_refused_by_its_count():
    # 500,000 one-letter messages, as in issue 16 (3.5 MB, under gRPC's 4 MiB): built as
    # wire bytes, since half a million Python objects would take longer than the check.
    one = user("x").SerializeToString()
    wire = (bytes([2 << 3 | 2, len(one)]) + one) * 500_000
    flood = pb.QuerySpec.FromString(wire)
    with pytest.raises(RequestTooLargeError) as caught:
        convert.request_from_proto(flood)
    assert caught.value.message.startswith(
        "the query has 500000 messages; at most 1000 are allowed per call"
        " (SWITCHYARD_MAX_MESSAGES): drop or summarize older turns"
    )


def test_message_and_part_counts_are_checked_before_any_message_is_read():
    limits = LimitSettings(max_messages=3, max_parts=10)
    assert len(convert.request_from_proto(spec(messages=[user("a")] * 3), limits).messages) == 3
    assert (
        len(convert.request_from_proto(spec(prompt="q", messages=[user("a")] * 2), limits).messages)
        == 3
    )
    # The fourth message (the prompt counts as one) is refused before the bad role of the
    # first is even looked at: the count costs nothing, reading the messages does.
    with pytest.raises(RequestTooLargeError) as caught:
        convert.request_from_proto(spec(prompt="q", messages=[pb.Message(content="a")] * 3), limits)
    assert caught.value.message.startswith(
        "the query has 4 messages (query.prompt counts as one); at most 3 are allowed per call"
        " (SWITCHYARD_MAX_MESSAGES)"
    )
    assert caught.value.code.name == "INVALID_ARGUMENT"
    with pytest.raises(RequestTooLargeError) as caught:
        convert.request_from_proto(spec(messages=[user("a")] * 3), LimitSettings(max_parts=2))
    assert (
        "the query has 3 content parts; at most 2 are allowed per call (SWITCHYARD_MAX_PARTS)"
        in (caught.value.message)
    )
    # 700 messages of 3 text parts each: within 1000 messages, past 2000 parts
    texts = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="a")] * 3)
    with pytest.raises(
        RequestTooLargeError, match=r"^the query has 2101 content parts; at most 2000"
    ):
        convert.request_from_proto(spec(prompt="q", messages=[texts] * 700))
    # query.system is a message too, and its text counts
    with pytest.raises(
        RequestTooLargeError,
        match=r"^the query has 4 messages \(query\.prompt and query\.system count as one each\)",
    ):
        convert.request_from_proto(spec(prompt="q", system="s", messages=[user("a")] * 2), limits)
    with pytest.raises(
        RequestTooLargeError, match=r"^query\.prompt and query\.system have 13 bytes"
    ):
        convert.request_from_proto(
            spec(prompt="q" * 6, system="s" * 7), LimitSettings(max_text_bytes=12)
        )


def test_bytes_of_text_are_counted_in_utf8_and_refused_where_the_bound_is_passed():
    limits = LimitSettings(max_text_bytes=12)
    # 2 + 9 (three Hangul syllables, 3 bytes each) + 1 = 12: exactly the bound
    request = convert.request_from_proto(
        spec(prompt="q", messages=[user("ab"), user("분석해")]), limits
    )
    assert [m.text for m in request.messages] == ["ab", "분석해", "q"]
    with pytest.raises(RequestTooLargeError) as caught:
        convert.request_from_proto(
            # one byte over at messages[1]; the bad messages[2] is never read
            spec(prompt="qq", messages=[user("ab"), user("분석해"), pb.Message(content="x")]),
            limits,
        )
    assert caught.value.message.startswith(
        "the query's text reaches 13 bytes (UTF-8) at query.messages[1]; at most 12 bytes of"
        " text are allowed per call (SWITCHYARD_MAX_TEXT_BYTES): shorten the text"
    )
    with pytest.raises(
        RequestTooLargeError, match=r"^query\.prompt and query\.system have 13 bytes of text"
    ):
        convert.request_from_proto(spec(prompt="x" * 13), limits)


# --- parts, tools, response formats and reasoning ------------------------------------

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}


def struct(value: dict) -> struct_pb2.Struct:
    built = struct_pb2.Struct()
    built.update(value)
    return built


def weather_tool(**fields) -> pb.Tool:
    return pb.Tool(
        name=fields.pop("name", "get_weather"),
        description="the weather",
        parameters=struct(fields.pop("parameters", WEATHER_SCHEMA)),
        **fields,
    )


def call_part(call_id: str = "call_1", name: str = "get_weather", **arguments) -> pb.Part:
    return pb.Part(tool_call=pb.ToolCall(id=call_id, name=name, arguments=struct(arguments)))


def test_struct_keys_reach_the_relay_sorted_whatever_order_they_were_given_in():
    # A Struct is a map: its iteration order changes from one process to the next, so
    # the request sent to the relay would too. Sorted, the same call is the same bytes.
    forwards: dict[str, Any] = {"zeta": {"b": 1, "a": [{"y": 2, "x": 1}]}, "alpha": "x", "mid": 2.5}
    backwards: dict[str, Any] = {
        "mid": 2.5,
        "alpha": "x",
        "zeta": {"a": [{"x": 1, "y": 2}], "b": 1},
    }
    first = convert.request_from_proto(spec(prompt="q", messages=[], tools=[weather_tool()]))
    converted = []
    for part in (call_part(**forwards), call_part(**backwards)):
        asked = spec(
            messages=[user("hi"), pb.Message(role=pb.ROLE_ASSISTANT, parts=[part])],
            tools=[weather_tool()],
        )
        call = convert.request_from_proto(asked).messages[1].parts[0]
        assert isinstance(call, ToolCallPart)
        converted.append(call)
    assert [list(c.arguments) for c in converted] == [["alpha", "mid", "zeta"]] * 2
    assert list(converted[0].arguments["zeta"]) == ["a", "b"]
    assert list(converted[1].arguments["zeta"]["a"][0]) == ["x", "y"]
    assert list(first.tools[0].parameters) == sorted(WEATHER_SCHEMA)


def test_tool_results_and_reasoning_count_towards_the_text_bound():
    # user 16 + reasoning 10 + signature 3 + redacted 6 + tool result 2 + prompt 13 = 50
    convert.request_from_proto(round_trip(), LimitSettings(max_text_bytes=50))
    with pytest.raises(RequestTooLargeError) as caught:
        convert.request_from_proto(round_trip(), LimitSettings(max_text_bytes=49))
    assert caught.value.message.startswith(
        "the query's text reaches 50 bytes (UTF-8) at query.messages[2]; at most 49 bytes"
    )


def round_trip(**fields) -> pb.QuerySpec:
    """A question, the model's call, the tool's result, and a follow-up prompt."""
    return spec(
        messages=[
            user("weather in Oslo?"),
            pb.Message(
                role=pb.ROLE_ASSISTANT,
                parts=[
                    pb.Part(reasoning=pb.Reasoning(text="look it up", signature="sig")),
                    pb.Part(redacted_reasoning=pb.RedactedReasoning(data="opaque")),
                    call_part(city="Oslo", days=2),
                ],
            ),
            pb.Message(
                role=pb.ROLE_TOOL,
                parts=[pb.Part(tool_result=pb.ToolResult(tool_call_id="call_1", content="5C"))],
            ),
        ],
        prompt="and tomorrow?",
        tools=[weather_tool()],
        **fields,
    )


def test_a_tool_round_trip_becomes_typed_parts():
    request = convert.request_from_proto(round_trip())
    assistant, tool = request.messages[1], request.messages[2]
    assert assistant.parts == (
        ReasoningPart("look it up", "sig"),
        RedactedReasoningPart("opaque"),
        ToolCallPart("call_1", "get_weather", {"city": "Oslo", "days": 2}),
    )
    days = assistant.parts[2].arguments["days"]  # a Struct holds doubles; whole ones are ints
    assert days == 2 and type(days) is int
    assert tool.role is Role.TOOL and tool.parts == (ToolResultPart("call_1", "5C"),)
    assert request.tools == (ToolSpec("get_weather", "the weather", WEATHER_SCHEMA),)
    assert request.features == {Feature.TOOLS} and not request.plain
    assert request.tool_choice is None and request.parallel_tool_calls is None


def test_text_only_queries_stay_plain_and_featureless():
    request = convert.request_from_proto(spec(prompt="hi", system="be brief"))
    assert request.plain and request.features == frozenset()
    assert [(m.role, m.text) for m in request.messages] == [
        (Role.SYSTEM, "be brief"),
        (Role.USER, "hi"),
    ]
    assert request.tools == () and request.response_format is None


def test_tool_choice_parallel_format_and_reasoning():
    request = convert.request_from_proto(
        round_trip(
            tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="get_weather"),
            parallel_tool_calls=False,
            response_format=pb.ResponseFormat(
                type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(
                    name="forecast", schema=struct(WEATHER_SCHEMA), strict=True
                ),
            ),
            reasoning_effort=pb.REASONING_EFFORT_MEDIUM,
        )
    )
    assert request.tool_choice == ToolChoice(ToolChoiceMode.TOOL, "get_weather")
    assert request.parallel_tool_calls is False
    assert request.response_format == ResponseFormat(
        ResponseKind.JSON_SCHEMA, "forecast", WEATHER_SCHEMA, strict=True
    )
    assert request.reasoning_effort is ReasoningEffort.MEDIUM and request.thinking_budget is None
    assert request.features == {Feature.TOOLS, Feature.JSON_SCHEMA, Feature.REASONING}
    budget = convert.request_from_proto(spec(prompt="q", thinking_budget_tokens=2048))
    assert budget.thinking_budget == 2048 and budget.features == {Feature.REASONING}
    json_object = convert.request_from_proto(
        spec(
            prompt="q", response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
        )
    )
    assert json_object.response_format == ResponseFormat(ResponseKind.JSON_OBJECT)
    assert not json_object.plain and json_object.features == frozenset()
    text = convert.request_from_proto(
        spec(prompt="q", response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_TEXT))
    )
    assert text.response_format is None and text.plain


def test_images_by_bytes_and_by_url():
    request = convert.request_from_proto(
        spec(
            messages=[
                pb.Message(
                    role=pb.ROLE_USER,
                    parts=[
                        pb.Part(text="what is this?"),
                        pb.Part(image=pb.Image(data=b"\x89PNG", media_type="image/png")),
                        pb.Part(image=pb.Image(url="https://img.test/cat.webp")),
                    ],
                )
            ]
        )
    )
    assert request.messages[0].parts == (
        TextPart("what is this?"),
        ImagePart("image/png", data=b"\x89PNG"),
        ImagePart("", url="https://img.test/cat.webp"),
    )
    assert request.messages[0].text == "what is this?"
    assert request.features == {Feature.IMAGES}


def _parts(*parts: pb.Part, role=pb.ROLE_USER) -> dict:
    return {"messages": [pb.Message(role=role, parts=list(parts))]}


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        (
            {"messages": [pb.Message(role=pb.ROLE_USER, content="a", parts=[pb.Part(text="b")])]},
            "query.messages[0] sets both content and parts",
        ),
        (_parts(pb.Part()), "query.messages[0].parts[0] is empty"),
        (_parts(pb.Part(text=" ")), "query.messages[0].parts[0].text is empty"),
        (
            _parts(pb.Part(image=pb.Image(data=b"x", media_type="image/bmp"))),
            "query.messages[0].parts[0].image.media_type 'image/bmp' is not one the models take;"
            " use one of image/gif, image/jpeg, image/png, image/webp",
        ),
        (
            _parts(pb.Part(image=pb.Image(data=b"x"))),
            "query.messages[0].parts[0].image.media_type is required with data",
        ),
        (
            _parts(pb.Part(image=pb.Image(url="file:///etc/passwd"))),
            "query.messages[0].parts[0].image.url must be an http(s) URL",
        ),
        (_parts(pb.Part(image=pb.Image())), "has neither url nor data"),
        (
            _parts(call_part()),
            "query.messages[0].parts[0].tool_call cannot be in a USER message; it may hold:"
            " text, image",
        ),
        (
            {"messages": [user("q"), pb.Message(role=pb.ROLE_TOOL, content="42")]},
            "query.messages[1] is a ROLE_TOOL message without parts",
        ),
        (
            {
                "messages": [
                    user("q"),
                    pb.Message(role=pb.ROLE_ASSISTANT, parts=[call_part(call_id="call 1")]),
                ],
                "tools": [weather_tool()],
            },
            "query.messages[1].parts[0].tool_call.id 'call 1' must be 1 to 128 letters",
        ),
        (
            {
                "messages": [
                    user("q"),
                    pb.Message(role=pb.ROLE_ASSISTANT, parts=[call_part(name="get.weather")]),
                ],
                "tools": [weather_tool()],
            },
            "query.messages[1].parts[0].tool_call.name 'get.weather' must be 1 to 64 letters",
        ),
        (
            {
                "messages": [
                    user("q"),
                    pb.Message(
                        role=pb.ROLE_TOOL,
                        parts=[pb.Part(tool_result=pb.ToolResult(tool_call_id="call_9"))],
                    ),
                ],
                "tools": [weather_tool()],
            },
            "query.messages[1].parts[0].tool_result.tool_call_id 'call_9' answers no tool call"
            " of an earlier assistant message",
        ),
        (
            {"messages": [user("q"), pb.Message(role=pb.ROLE_ASSISTANT, parts=[call_part()])]},
            "query.messages hold tool calls but query.tools is empty",
        ),
        (
            {"prompt": "q", "tools": [weather_tool(name="x" * 65)]},
            "query.tools[0].name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'"
            " must be 1 to 64 letters",
        ),
        (
            {"prompt": "q", "tools": [weather_tool(), weather_tool()]},
            "query.tools[1].name 'get_weather' is used twice",
        ),
        (
            {"prompt": "q", "tools": [weather_tool(parameters={"type": "array"})]},
            'query.tools[0].parameters must be an object schema ({"type": "object"',
        ),
        (
            {
                "prompt": "q",
                "tools": [weather_tool(parameters={"type": "object", "required": "city"})],
            },
            'query.tools[0].parameters is not a valid JSON Schema: at $.required: "city" is not of'
            ' type "array"',
        ),
        (
            {
                "prompt": "q",
                "tools": [weather_tool()],
                "tool_choice": pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="get_time"),
            },
            "query.tool_choice.name 'get_time' is not one of query.tools; name a defined tool",
        ),
        (
            {"prompt": "q", "tool_choice": pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)},
            "query.tool_choice is TOOL_CHOICE_MODE_REQUIRED but query.tools is empty",
        ),
        (
            {"prompt": "q", "tools": [weather_tool()], "tool_choice": pb.ToolChoice(mode=9)},  # type: ignore[arg-type]
            "query.tool_choice.mode 9 is unknown",
        ),
        (
            {"prompt": "q", "parallel_tool_calls": True},
            "query.parallel_tool_calls is set but query.tools is empty",
        ),
        (
            {
                "prompt": "q",
                "response_format": pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
            },
            "query.response_format.json_schema.schema is required",
        ),
        (
            {
                "prompt": "q",
                "response_format": pb.ResponseFormat(
                    type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
                    json_schema=pb.JsonSchema(schema=struct(WEATHER_SCHEMA)),
                ),
            },
            "query.response_format.json_schema is set but type is not",
        ),
        (
            {
                "prompt": "q",
                "response_format": pb.ResponseFormat(
                    type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                    json_schema=pb.JsonSchema(
                        schema=struct({"type": "object", "properties": {"a": {"type": "fish"}}})
                    ),
                ),
            },
            "query.response_format.json_schema.schema is not a valid JSON Schema: at"
            " $.properties.a.type:",
        ),
        (
            {
                "prompt": "q",
                "reasoning_effort": pb.REASONING_EFFORT_LOW,
                "thinking_budget_tokens": 2000,
            },
            "query.reasoning_effort and query.thinking_budget_tokens are both set",
        ),
        (
            {"prompt": "q", "thinking_budget_tokens": 1000},
            "query.thinking_budget_tokens is 1000; it must be at least 1024",
        ),
        ({"prompt": "q", "system": "  "}, "query.system is blank"),
    ],
)
def test_bad_parts_and_tools_name_the_field(fields, needle):
    with pytest.raises(InvalidRequestError) as caught:
        convert.request_from_proto(spec(**fields))
    assert needle in caught.value.message
    assert caught.value.code.name == "INVALID_ARGUMENT"


def test_parts_count_towards_the_parts_bound():
    many = [pb.Part(text="a")] * 3
    query = spec(messages=[pb.Message(role=pb.ROLE_USER, parts=many), user("b")])
    assert len(convert.request_from_proto(query, LimitSettings(max_parts=4)).messages) == 1 + 1
    with pytest.raises(RequestTooLargeError, match="the query has 4 content parts"):
        convert.request_from_proto(query, LimitSettings(max_parts=3))


def test_answers_carry_tool_calls_reasoning_validation_and_new_usage():
    completion = Completion(
        GPT,
        "",
        Usage(10, 20, reasoning_tokens=5, cache_write_tokens=3),
        FinishReason.TOOL_CALLS,
        tool_calls=(ToolCallPart("call_1", "get_weather", {"city": "Oslo", "days": 2}),),
        reasoning=(ReasoningPart("t", "s"), RedactedReasoningPart("r")),
    )
    parts = convert._answer_parts(completion)
    [call] = parts["tool_calls"]
    assert (call.id, call.name) == ("call_1", "get_weather")
    assert json_format.MessageToDict(call.arguments) == {"city": "Oslo", "days": 2}
    assert [p.WhichOneof("kind") for p in parts["reasoning"]] == ["reasoning", "redacted_reasoning"]
    assert parts["reasoning"][0].reasoning.signature == "s"
    assert parts["validation"] == pb.OUTPUT_VALIDATION_UNSPECIFIED
    usage = convert.usage_to_proto(completion.usage)
    assert (usage.reasoning_tokens, usage.cache_write_input_tokens) == (5, 3)
    assert convert._FINISH_TO_PB[FinishReason.TOOL_CALLS] == pb.FINISH_REASON_TOOL_CALLS


def test_stream_events_become_their_messages():
    call = ToolCallPart("c", "get_time", {})
    assert (
        convert.stream_event(ToolCallStart(1, "c", "get_time")).tool_call_start.name == "get_time"
    )
    assert convert.stream_event(ToolCallDelta(1, '{"a')).tool_call_delta.arguments == '{"a'
    end = convert.stream_event(ToolCallEnd(1, call)).tool_call_end
    assert end.index == 1 and end.call.id == "c" and end.call.HasField("arguments")
    thought = convert.stream_event(ReasoningDelta(0, signature="sig")).reasoning
    assert (thought.index, thought.signature, thought.text) == (0, "sig", "")


def test_token_totals_carry_reasoning_and_cache_writes():
    from server.state.ledger import ModelTotals  # noqa: PLC0415

    totals = ModelTotals(input_tokens=9, output_tokens=7, reasoning_tokens=3, cache_write_tokens=4)
    message = convert._token_totals(totals)
    assert (message.reasoning_tokens, message.cache_write_input_tokens) == (3, 4)
    assert (message.input_tokens, message.output_tokens) == (9, 7)


def test_tool_definitions_are_bounded_in_bytes_and_a_large_schema_within_it_is_checked():
    def tool(properties: int) -> pb.Tool:
        return weather_tool(
            parameters={
                "type": "object",
                "properties": {f"p{n}": {"type": "string"} for n in range(properties)},
            }
        )

    within = spec(prompt="q", tools=[tool(1_500)])  # about 40 KB: checked, and fine
    assert sum(t.ByteSize() for t in within.tools) < convert.DEFAULT_LIMITS.max_schema_bytes
    assert len(convert.request_from_proto(within).tools[0].parameters["properties"]) == 1_500
    with pytest.raises(RequestTooLargeError) as caught:
        convert.request_from_proto(spec(prompt="q", tools=[tool(1_500), tool(1_500)]))
    assert caught.value.setting == "SWITCHYARD_MAX_SCHEMA_BYTES"
    assert "bytes of tool definitions and schema are allowed per call" in str(caught.value)


def test_a_schema_naming_an_unknown_meta_schema_is_checked_as_2020_12_without_fetching_it():
    from server.structured import schema_problem  # noqa: PLC0415

    # a URL nothing answers on: fetching it would fail (or hang); it is never fetched
    unknown = "http://127.0.0.1:9/never-fetched"
    assert schema_problem({"$schema": unknown, "type": "object"}) is None
    problem = schema_problem({"$schema": unknown, "type": "object", "required": "city"})
    assert problem == 'at $.required: "city" is not of type "array"'
    draft7 = "http://json-schema.org/draft-07/schema#"
    assert schema_problem({"$schema": draft7, "type": "object"}) is None


@pytest.mark.parametrize(
    "usage",
    [
        Usage(),
        Usage(12, 34),
        Usage(0, 5, estimated=True),
        Usage(100, 40, cached_input_tokens=60, reasoning_tokens=30, cache_write_tokens=20),
    ],
)
def test_usage_skips_defaults_yet_writes_the_same_bytes_and_presence(usage):
    # `_set_usage` leaves zero fields alone (a setter saved each); on the wire that is
    # the same message, and an all-zero usage is still present in its parent.
    every_field = pb.QueryResponse(
        usage=pb.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            estimated=usage.estimated,
            reasoning_tokens=usage.reasoning_tokens,
            cache_write_input_tokens=usage.cache_write_tokens,
        )
    )
    filled = pb.QueryResponse()
    convert._set_usage(filled.usage, usage)
    assert filled.HasField("usage")
    assert filled.SerializeToString() == every_field.SerializeToString()


@pytest.mark.parametrize(
    "nanos", [0, 1, 195_000, 999_999_999, 1_000_000_000, 2_500_000_001, 7 * 10**15, -1]
)
def test_money_is_units_and_nanos_of_usd_whatever_it_skips(nanos):
    units, rest = divmod(nanos, 1_000_000_000)
    expected = pb.QueryResponse()
    expected.cost.currency_code = "USD"
    expected.cost.units = units
    expected.cost.nanos = rest
    built = convert.money(nanos)
    assert (built.currency_code, built.units, built.nanos) == ("USD", units, rest)
    filled = pb.QueryResponse()
    convert._set_money(filled.cost, nanos)
    assert filled.SerializeToString() == expected.SerializeToString()


@pytest.mark.parametrize("text", ["", " word", "é" * 300])
def test_a_text_delta_is_the_contract_s_delta_message(text):
    """Filled in place, it is the message the keyword constructor builds: same bytes, and
    the delta is the event even for empty text."""
    built = convert.text_delta(text)
    assert built.WhichOneof("event") == "delta"
    assert built.delta.text == text
    assert (
        built.SerializeToString()
        == pb.StreamQueryResponse(delta=pb.TextDelta(text=text)).SerializeToString()
    )
