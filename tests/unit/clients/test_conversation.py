"""Tools, formats and message parts -> QuerySpec; answers -> tool calls and the next turn."""

import pytest
from google.protobuf import json_format, struct_pb2
from switchyard.v1 import gateway_pb2 as pb
from switchyard_client import (
    Answer,
    Image,
    JsonSchema,
    Message,
    Reasoning,
    RedactedReasoning,
    Tool,
    ToolCall,
    ToolResult,
)
from switchyard_client.requests import QueryOptions, query_spec, reply_spec

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
WEATHER = Tool("get_weather", "The weather in a city", WEATHER_SCHEMA)


def struct(value: dict) -> struct_pb2.Struct:
    built = struct_pb2.Struct()
    built.update(value)
    return built


def test_tools_from_values_plain_dicts_and_the_openai_shape_land_alike():
    spec = query_spec(
        "Weather?",
        {
            "tools": [
                WEATHER,
                {"name": "get_time", "description": "The time now"},
                {
                    "type": "function",
                    "function": {"name": "get_tide", "parameters": {"type": "object"}},
                },
                {"name": "get_moon", "input_schema": {"type": "object"}},  # Anthropic's key
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
    )
    weather, time, tide, moon = spec.tools
    assert (weather.name, weather.description) == ("get_weather", "The weather in a city")
    assert json_format.MessageToDict(weather.parameters) == WEATHER_SCHEMA
    assert time.name == "get_time" and not time.HasField("parameters")  # takes no arguments
    assert json_format.MessageToDict(tide.parameters) == {"type": "object"}
    assert json_format.MessageToDict(moon.parameters) == {"type": "object"}
    assert spec.tool_choice == pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)
    assert spec.HasField("parallel_tool_calls") and not spec.parallel_tool_calls


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO)),
        ("none", pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)),
        ("get_weather", pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="get_weather")),
        (WEATHER, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="get_weather")),
    ],
)
def test_tool_choice_is_a_mode_or_the_tool_to_call(choice, expected):
    assert query_spec("hi", {"tools": [WEATHER], "tool_choice": choice}).tool_choice == expected


@pytest.mark.parametrize(
    ("value", "strict", "expected"),
    [
        ("text", None, pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_TEXT)),
        ("JSON", None, pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)),
        (
            WEATHER_SCHEMA,
            True,
            pb.ResponseFormat(
                type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(schema=struct(WEATHER_SCHEMA), strict=True),
            ),
        ),
        (
            JsonSchema(WEATHER_SCHEMA, name="weather"),
            None,
            pb.ResponseFormat(
                type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=pb.JsonSchema(name="weather", schema=struct(WEATHER_SCHEMA)),
            ),
        ),
    ],
)
def test_response_formats(value, strict, expected):
    options: QueryOptions = {"response_format": value}
    if strict is not None:
        options["strict"] = strict
    assert query_spec("hi", options).response_format == expected


def test_reasoning_system_and_message_parts_land_in_their_fields():
    photo = Image(data=b"\x89PNG...", media_type="image/png")
    spec = query_spec(
        "",
        {
            "system": "Be brief.",
            "reasoning_effort": "HIGH",
            "messages": [
                ("user", "Hi"),  # a text tuple stays plain content
                Message.user("What is on these?", photo, Image(url="https://example.com/a.jpg")),
            ],
        },
    )
    assert spec.system == "Be brief." and spec.reasoning_effort == pb.REASONING_EFFORT_HIGH
    text, pictures = spec.messages
    assert text == pb.Message(role=pb.ROLE_USER, content="Hi")
    assert [part.WhichOneof("kind") for part in pictures.parts] == ["text", "image", "image"]
    assert pictures.parts[1].image == pb.Image(data=b"\x89PNG...", media_type="image/png")
    assert pictures.parts[2].image.url == "https://example.com/a.jpg"
    assert query_spec("hi", {"thinking_budget": 2048}).thinking_budget_tokens == 2048


def test_a_text_only_query_sets_none_of_the_new_fields():
    spec = query_spec("hi", {"model": "gpt-4.1"})
    for field in ("tool_choice", "response_format", "parallel_tool_calls"):
        assert not spec.HasField(field)
    assert not spec.tools and not spec.system and not spec.reasoning_effort


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tools": [{"name": "t", "params": {}}]}, r"tool 't' has unknown keys \['params'\]"),
        ({"tools": [{"description": "nameless"}]}, 'a tool needs a "name"'),
        ({"tools": [Tool("t", parameters={"x": {1, 2}})]}, "tool 't' parameters is not a JSON"),
        ({"response_format": "xml"}, "response_format 'xml' is not one of text, json"),
        ({"strict": True}, "strict goes with a JSON Schema"),
        ({"response_format": "json", "strict": True}, "strict goes with a JSON Schema"),
        ({"tool_choice": ""}, "tool_choice is empty"),
        ({"reasoning_effort": "max"}, "reasoning_effort 'max' is not one of low, medium, high"),
        ({"messages": [Message("user", ("hi", 3))]}, "int is not a message part"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_option_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        query_spec("hi", options)


def test_a_message_role_is_checked_when_the_message_is_made():
    with pytest.raises(ValueError, match="message role 'robot' is not one of system, user"):
        Message("robot", ("hi",))


def test_an_image_needs_one_source_and_a_media_type_with_bytes(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        Image()
    with pytest.raises(ValueError, match="needs its media_type"):
        Image(data=b"...")
    picture = tmp_path / "chart.JPG"
    picture.write_bytes(b"\xff\xd8")
    assert Image.from_file(picture) == Image(data=b"\xff\xd8", media_type="image/jpeg")
    assert "bytes" in repr(Image.from_file(picture)) and "\\xff" not in repr(
        Image.from_file(picture)
    )
    with pytest.raises(ValueError, match=r"chart\.bmp: cannot tell the image format"):
        Image.from_file(tmp_path / "chart.bmp")


def _tool_answer(**fields) -> pb.QueryResponse:
    """gpt-4.1 asking for two calls after some reasoning, as the gateway sends it."""
    return pb.QueryResponse(
        model="gpt-4.1",
        finish_reason=pb.FINISH_REASON_TOOL_CALLS,
        tool_calls=[
            pb.ToolCall(
                id="call_1", name="get_weather", arguments=struct({"city": "Lisbon", "days": 3})
            ),
            pb.ToolCall(id="call_2", name="get_time", arguments=struct({})),
        ],
        reasoning=[
            pb.Part(reasoning=pb.Reasoning(text="The user wants", signature="sig-1")),
            pb.Part(redacted_reasoning=pb.RedactedReasoning(data="opaque")),
        ],
        **fields,
    )


def test_an_answer_surfaces_tool_calls_with_whole_numbers_and_its_reasoning():
    answer = Answer.from_proto(_tool_answer(usage=pb.Usage(reasoning_tokens=7)))
    assert answer.finish_reason == "TOOL_CALLS" and answer.text == ""
    assert answer.tool_calls == (
        ToolCall("call_1", "get_weather", {"city": "Lisbon", "days": 3}),
        ToolCall("call_2", "get_time", {}),
    )
    assert type(answer.tool_calls[0].arguments["days"]) is int  # not 3.0, as Struct holds it
    assert answer.reasoning == (Reasoning("The user wants", "sig-1"), RedactedReasoning("opaque"))
    assert answer.usage.reasoning_tokens == 7 and answer.validation is None


def test_validation_and_json_answers():
    valid = Answer.from_proto(
        pb.QueryResponse(content='{"city": "Lisbon"}', validation=pb.OUTPUT_VALIDATION_VALID)
    )
    assert valid.validation == "VALID" and valid.json() == {"city": "Lisbon"}
    invalid = Answer.from_proto(
        pb.QueryResponse(
            content="{}",
            validation=pb.OUTPUT_VALIDATION_INVALID,
            validation_error="$ lacks the required property 'city'",
        )
    )
    assert invalid.validation == "INVALID"
    assert invalid.summary.validation_error == "$ lacks the required property 'city'"


def test_next_messages_keep_the_conversation_the_reasoning_first_and_results_in_call_order():
    sent = query_spec(
        "Weather and time in Lisbon?",
        {"messages": [("user", "Hi"), ("assistant", "Hello")], "tools": [WEATHER]},
    )
    answer = Answer.from_proto(_tool_answer(content="Let me look."), sent)
    failure = TimeoutError("the weather service timed out")
    messages = answer.next_messages(
        {"call_2": failure, "call_1": {"temperature": 21, "sky": "clear"}}, prompt="And Porto?"
    )
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant", "tool", "user"]
    assert messages[2] == Message.user("Weather and time in Lisbon?")  # the prompt, as a message
    assert messages[3].parts == (
        Reasoning("The user wants", "sig-1"),  # signature kept: Anthropic checks it
        RedactedReasoning("opaque"),
        "Let me look.",
        *answer.tool_calls,
    )
    assert messages[4].parts == (
        ToolResult("call_1", '{"temperature": 21, "sky": "clear"}'),
        ToolResult("call_2", "the weather service timed out", is_error=True),
    )
    assert messages[5] == Message.user("And Porto?")
    # and they go on the wire as the contract spells them
    assistant = messages[3].to_proto()
    assert [p.WhichOneof("kind") for p in assistant.parts] == [
        "reasoning", "redacted_reasoning", "text", "tool_call", "tool_call"
    ]  # fmt: skip
    assert assistant.parts[0].reasoning.signature == "sig-1"
    assert json_format.MessageToDict(assistant.parts[3].tool_call.arguments) == {
        "city": "Lisbon",
        "days": 3,
    }


@pytest.mark.parametrize(
    ("results", "message"),
    [
        (None, r"give a result for each: get_weather \(call_1\), get_time \(call_2\)"),
        ({"call_1": "21 C"}, r"no result for tool calls get_time \(call_2\)"),
        ({"call_1": "a", "call_2": "b", "call_9": "c"}, "did not make: call_9"),
        ([ToolResult("call_1", "a")], r"no result for tool calls get_time \(call_2\)"),
    ],
)
def test_every_call_needs_exactly_one_result(results, message):
    answer = Answer.from_proto(_tool_answer(), pb.QuerySpec(prompt="hi"))
    with pytest.raises(ValueError, match=message):
        answer.next_messages(results)


def test_results_for_an_answer_without_calls_or_without_its_query_are_refused():
    text = Answer.from_proto(pb.QueryResponse(content="Paris"), pb.QuerySpec(prompt="Capital?"))
    with pytest.raises(ValueError, match="asked for no tool call"):
        text.next_messages({"call_1": "x"})
    assert text.next_messages(prompt="And Spain?") == [
        Message.user("Capital?"),
        Message.assistant("Paris"),
        Message.user("And Spain?"),
    ]
    with pytest.raises(ValueError, match="does not know the query"):
        Answer.from_proto(pb.QueryResponse(content="Paris")).next_messages()


def test_messages_survive_the_contract_both_ways():
    messages = [
        Message.system("Be brief."),
        Message.user("Look", Image(url="https://example.com/a.png", media_type="image/png")),
        Message.assistant(Reasoning("hm", "sig"), "Calling", ToolCall("c1", "t", {"n": [1, 2.5]})),
        Message.tool(ToolResult("c1", "done", is_error=True)),
    ]
    assert [Message.from_proto(m.to_proto()) for m in messages] == messages


def test_reply_keeps_the_query_and_sets_only_what_is_overridden():
    sent = query_spec(
        "Weather?",
        {
            "model": "claude-sonnet-4-20250514",
            "tools": [WEATHER],
            "tool_choice": "get_weather",
            "system": "Be brief.",
            "labels": {"team": "search"},
            "temperature": 0.0,
        },
    )
    answer = Answer.from_proto(_tool_answer(), sent)
    spec = reply_spec(answer, {"call_1": "21 C", "call_2": "noon"}, None, {"tool_choice": "auto"})
    assert spec.prompt == "" and len(spec.messages) == 3  # question, answer, results
    assert spec.tool_choice == pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO)  # the override
    assert (spec.model, spec.system, dict(spec.labels)) == (
        "claude-sonnet-4-20250514",
        "Be brief.",
        {"team": "search"},
    )
    assert list(spec.tools) == list(sent.tools)  # not doubled by the merge
    assert spec.HasField("temperature") and spec.temperature == 0.0
    assert sent.prompt == "Weather?" and not sent.messages  # the first query is left alone
    cleared = reply_spec(answer, {"call_1": "a", "call_2": "b"}, None, {"temperature": 0.5})
    assert cleared.temperature == 0.5 and cleared.tool_choice == sent.tool_choice
    with pytest.raises(ValueError, match="builds the messages itself"):
        reply_spec(answer, {}, None, {"messages": []})
