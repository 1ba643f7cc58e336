"""Tools, structured output, images and reasoning, end to end on both wires.

The real gateway on a free port talks gRPC to these tests and HTTP to the relay
simulator, which speaks the OpenAI chat and Anthropic Messages wires as their
APIs do (server/simulator/features.py lists the directives used here:
``[[tool:NAME]]``, ``[[tools:A,B]]``, ``NAME:empty``, ``[[json:invalid]]`` (and
``[[json:invalid:MODEL]]``),
``[[thinking:redacted]]``, ``[[cache:write]]``). Each case runs unary and
streamed, on gpt-4.1 (OpenAI wire) and claude-sonnet-4-20250514 (Anthropic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import jsonschema
import orjson
import pytest
from google.protobuf import json_format, struct_pb2
from switchyard.v1 import gateway_pb2 as pb

from .conftest import Gateway, StartGateway, details, nanos, stream_all

GPT = "gpt-4.1"
CLAUDE = "claude-sonnet-4-20250514"
WIRE_MODELS = pytest.mark.parametrize("model", [GPT, CLAUDE])
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,  # OpenAI's strict mode requires it
}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    built = struct_pb2.Struct()
    built.update(value)
    return built


def arguments(call: pb.ToolCall) -> dict[str, Any]:
    return json_format.MessageToDict(call.arguments)


WEATHER = pb.Tool(
    name="get_weather", description="The weather in a city", parameters=struct(WEATHER_SCHEMA)
)
TIME = pb.Tool(name="get_time", description="The time now")  # no parameters


def ask(prompt: str, model: str, **fields: Any) -> pb.QuerySpec:
    return pb.QuerySpec(prompt=prompt, model=model, tools=[WEATHER, TIME], **fields)


async def answer(gateway: Gateway, spec: pb.QuerySpec, stream: bool) -> dict[str, Any]:
    """The call's outcome in one shape for both RPCs: text, tool calls, reasoning, end."""
    if not stream:
        response = await gateway.stub.Query(pb.QueryRequest(query=spec))
        return {
            "text": response.content,
            "calls": list(response.tool_calls),
            "reasoning": list(response.reasoning),
            "finish": response.finish_reason,
            "usage": response.usage,
            "cost": response.cost,
            "attempts": list(response.attempts),
            "validation": response.validation,
            "validation_error": response.validation_error,
            "route": response.route,
            "events": [],
        }
    messages = await stream_all(gateway.stub, spec)
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1
    end = messages[-1].end
    starts = {m.tool_call_start.index: m.tool_call_start for m in messages if m.tool_call_start.id}
    fragments: dict[int, str] = {}
    calls: dict[int, pb.ToolCall] = {}
    thoughts: dict[int, pb.Part] = {}
    for message in messages:
        kind = message.WhichOneof("event")
        if kind == "tool_call_delta":
            index = message.tool_call_delta.index
            assert index in starts and index not in calls  # id and name first, then fragments
            fragments[index] = fragments.get(index, "") + message.tool_call_delta.arguments
        elif kind == "tool_call_end":
            index = message.tool_call_end.index
            call = message.tool_call_end.call
            assert (call.id, call.name) == (starts[index].id, starts[index].name)
            assert struct(arguments(call)) == call.arguments
            if fragments.get(index):  # the fragments, joined, are the parsed arguments
                assert json_format.Parse(fragments[index], struct_pb2.Struct()) == call.arguments
            calls[index] = call
        elif kind == "reasoning":
            delta = message.reasoning
            part = thoughts.setdefault(delta.index, pb.Part())
            if delta.redacted_data:
                part.redacted_reasoning.data = delta.redacted_data
            else:
                part.reasoning.text += delta.text
                part.reasoning.signature += delta.signature
    assert sorted(calls) == sorted(starts) == list(range(len(starts)))
    return {
        "text": "".join(m.delta.text for m in messages if m.WhichOneof("event") == "delta"),
        "calls": [calls[i] for i in sorted(calls)],
        "reasoning": [thoughts[i] for i in sorted(thoughts)],
        "finish": end.finish_reason,
        "usage": end.usage,
        "cost": end.cost,
        "attempts": list(end.attempts),
        "validation": end.validation,
        "validation_error": end.validation_error,
        "route": messages[0].start.route,
        "events": kinds,
    }


STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["unary", "streamed"])


@WIRE_MODELS
@STREAMED
async def test_a_full_tool_round_trip(gateway: Gateway, model: str, stream: bool):
    question = "[[tool:get_weather]] What is the weather in Lisbon?"
    first = await answer(gateway, ask(question, model), stream)
    assert first["finish"] == pb.FINISH_REASON_TOOL_CALLS
    [call] = first["calls"]
    assert call.name == "get_weather" and call.id
    jsonschema.validate(arguments(call), WEATHER_SCHEMA)
    assert first["text"] == ""
    # The caller runs the tool and sends the call back with its result.
    follow_up = pb.QuerySpec(
        model=model,
        tools=[WEATHER, TIME],
        messages=[
            pb.Message(role=pb.ROLE_USER, content=question),
            pb.Message(role=pb.ROLE_ASSISTANT, parts=[pb.Part(tool_call=call)]),
            pb.Message(
                role=pb.ROLE_TOOL,
                parts=[
                    pb.Part(tool_result=pb.ToolResult(tool_call_id=call.id, content="21C, clear"))
                ],
            ),
        ],
    )
    final = await answer(gateway, follow_up, stream)
    assert final["finish"] == pb.FINISH_REASON_STOP
    assert final["calls"] == []
    assert "21C, clear" in final["text"]  # the simulated model quotes the tool's result


@WIRE_MODELS
@STREAMED
async def test_parallel_tool_calls_all_arrive_in_order(gateway: Gateway, model: str, stream: bool):
    got = await answer(
        gateway, ask("[[tools:get_weather,get_time,get_weather]] plan my day", model), stream
    )
    assert got["finish"] == pb.FINISH_REASON_TOOL_CALLS
    assert [call.name for call in got["calls"]] == ["get_weather", "get_time", "get_weather"]
    assert len({call.id for call in got["calls"]}) == 3
    jsonschema.validate(arguments(got["calls"][0]), WEATHER_SCHEMA)
    jsonschema.validate(arguments(got["calls"][2]), WEATHER_SCHEMA)
    assert arguments(got["calls"][1]) == {}


@WIRE_MODELS
@STREAMED
async def test_parallel_calls_off_gives_one_call(gateway: Gateway, model: str, stream: bool):
    spec = ask("[[tools:get_weather,get_time]] plan my day", model, parallel_tool_calls=False)
    got = await answer(gateway, spec, stream)
    assert [call.name for call in got["calls"]] == ["get_weather"]


@WIRE_MODELS
@STREAMED
async def test_an_empty_arguments_call_is_an_empty_object(
    gateway: Gateway, model: str, stream: bool
):
    # OpenAI streams such a call as `"arguments": ""`, Anthropic as partial_json "".
    got = await answer(gateway, ask("[[tool:get_weather:empty]] anything", model), stream)
    [call] = got["calls"]
    assert call.name == "get_weather" and call.HasField("arguments")
    assert arguments(call) == {}
    if stream:
        assert "tool_call_delta" not in got["events"]  # empty fragments are not sent on


@WIRE_MODELS
@STREAMED
async def test_a_forced_tool_choice(gateway: Gateway, model: str, stream: bool):
    forced = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="get_time")
    got = await answer(gateway, ask("What time is it?", model, tool_choice=forced), stream)
    assert [call.name for call in got["calls"]] == ["get_time"]
    assert got["finish"] == pb.FINISH_REASON_TOOL_CALLS
    none = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)
    text = await answer(gateway, ask("[[tool:get_time]] time?", model, tool_choice=none), stream)
    assert text["calls"] == [] and text["text"] and text["finish"] == pb.FINISH_REASON_STOP


def json_schema(prompt: str, model: str) -> pb.QuerySpec:
    return pb.QuerySpec(
        prompt=prompt,
        model=model,
        response_format=pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(name="person", schema=struct(PERSON_SCHEMA), strict=True),
        ),
    )


@WIRE_MODELS
@STREAMED
async def test_a_json_schema_answer_that_validates(gateway: Gateway, model: str, stream: bool):
    got = await answer(gateway, json_schema("Who wrote the first program?", model), stream)
    jsonschema.validate(orjson.loads(got["text"]), PERSON_SCHEMA)
    assert got["validation"] == pb.OUTPUT_VALIDATION_VALID and got["validation_error"] == ""
    assert [a.outcome for a in got["attempts"]] == [pb.ATTEMPT_OUTCOME_SUCCESS]


@WIRE_MODELS
async def test_an_answer_that_fails_its_schema_falls_back_and_the_attempts_say_why(
    gateway: Gateway, model: str
):
    spec = json_schema("[[json:invalid]] Who wrote the first program?", model)
    route = (await gateway.stub.Route(pb.RouteRequest(query=spec))).route
    chain = [route.model, *route.fallback_models]
    assert len(chain) >= 2
    # The directive makes every model of the chain answer JSON that does not fit.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    message = details(caught.value)
    for name in chain:  # each model was asked in turn, and each failure is named
        assert f"{name}: the answer did not validate: $" in message
    assert [gateway.sim.stats.model(name).requests for name in chain] == [1] * len(chain)
    # The ledger keeps every attempt, each INVALID_OUTPUT and billed.
    since = pb.ExportUsageRequest()
    since.start.FromSeconds(1)
    export = [page async for page in gateway.stub.ExportUsage(since)]
    [record] = [c for page in export for c in page.calls]
    assert [a.outcome for a in record.attempts] == [pb.ATTEMPT_OUTCOME_INVALID_OUTPUT] * len(chain)
    assert all(nanos(a.cost) > 0 and "did not validate" in a.error for a in record.attempts)


@WIRE_MODELS
async def test_a_model_whose_answer_fails_its_schema_is_followed_by_one_that_fits(
    gateway: Gateway, model: str
):
    spec = json_schema(f"[[json:invalid:{model}]] Who wrote the first program?", model)
    route = (await gateway.stub.Route(pb.RouteRequest(query=spec))).route
    assert route.model == model and route.fallback_models
    response = await gateway.stub.Query(pb.QueryRequest(query=spec))
    # The first model's JSON did not fit: billed, recorded, and the next model answered.
    first, second = response.attempts[0], response.attempts[1]
    assert (first.model, first.outcome) == (model, pb.ATTEMPT_OUTCOME_INVALID_OUTPUT)
    assert "did not validate" in first.error and nanos(first.cost) > 0
    assert second.model == route.fallback_models[0]
    assert second.outcome == pb.ATTEMPT_OUTCOME_SUCCESS
    assert response.model == second.model
    assert response.validation == pb.OUTPUT_VALIDATION_VALID
    jsonschema.validate(orjson.loads(response.content), PERSON_SCHEMA)
    assert nanos(response.cost) == nanos(first.cost) + nanos(second.cost)


@pytest.mark.gateway_env(SWITCHYARD_VALIDATE_JSON="report")
@WIRE_MODELS
@STREAMED
async def test_report_mode_returns_the_invalid_answer_marked(
    gateway: Gateway, model: str, stream: bool
):
    got = await answer(gateway, json_schema("[[json:invalid]] Who?", model), stream)
    assert got["validation"] == pb.OUTPUT_VALIDATION_INVALID
    assert got["validation_error"].startswith("$")
    assert [a.outcome for a in got["attempts"]] == [pb.ATTEMPT_OUTCOME_SUCCESS]


@WIRE_MODELS
async def test_a_stream_that_fails_its_schema_says_so_at_its_end(gateway: Gateway, model: str):
    got = await answer(gateway, json_schema("[[json:invalid]] Who?", model), stream=True)
    assert got["validation"] == pb.OUTPUT_VALIDATION_INVALID
    assert got["validation_error"].startswith("$")
    assert len(got["attempts"]) == 1  # the text was out: no fallback


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@WIRE_MODELS
@STREAMED
async def test_an_image_part(gateway: Gateway, model: str, stream: bool):
    spec = pb.QuerySpec(
        model=model,
        messages=[
            pb.Message(
                role=pb.ROLE_USER,
                parts=[
                    pb.Part(text="What is in this picture?"),
                    pb.Part(image=pb.Image(data=PNG, media_type="image/png")),
                ],
            )
        ],
    )
    got = await answer(gateway, spec, stream)
    assert got["text"] and got["finish"] == pb.FINISH_REASON_STOP
    text_only = await answer(
        gateway, pb.QuerySpec(prompt="What is in this picture?", model=model), stream
    )
    assert got["usage"].input_tokens > text_only["usage"].input_tokens  # the image is input


async def test_an_image_over_anthropics_limit_is_refused_before_any_relay_call(gateway: Gateway):
    big = bytes(3_932_161)  # 5,242,884 bytes as base64: 4 over Anthropic's 5 MB
    spec = pb.QuerySpec(
        model=CLAUDE,
        messages=[
            pb.Message(
                role=pb.ROLE_USER,
                parts=[
                    pb.Part(text="and this?"),
                    pb.Part(image=pb.Image(data=big, media_type="image/png")),
                ],
            )
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 5,242,880 (5 MB) an image" in details(caught.value)
    assert gateway.sim.stats.requests == 0
    # Routed by task instead, the query skips Claude for a model that takes it.
    spec.ClearField("model")
    spec.task = pb.TASK_REASONING
    route = (await gateway.stub.Route(pb.RouteRequest(query=spec))).route
    assert route.model != CLAUDE
    assert route.skipped_models[0].model == CLAUDE
    assert "5 MB" in route.skipped_models[0].reason


@STREAMED
async def test_a_thinking_round_trip_keeps_the_signature(gateway: Gateway, stream: bool):
    question = "[[tool:get_weather]] Weather in Oslo, and should I cycle?"
    first = await answer(gateway, ask(question, CLAUDE, thinking_budget_tokens=2048), stream)
    [thought] = first["reasoning"]
    assert thought.reasoning.text and thought.reasoning.signature
    [call] = first["calls"]
    result = pb.Message(
        role=pb.ROLE_TOOL,
        parts=[pb.Part(tool_result=pb.ToolResult(tool_call_id=call.id, content="3C, rain"))],
    )

    def turn(*assistant: pb.Part) -> pb.QuerySpec:
        return pb.QuerySpec(
            model=CLAUDE,
            tools=[WEATHER, TIME],
            thinking_budget_tokens=2048,
            messages=[
                pb.Message(role=pb.ROLE_USER, content=question),
                pb.Message(role=pb.ROLE_ASSISTANT, parts=list(assistant)),
                result,
            ],
        )

    # Sent back unchanged, the thinking is accepted and the model answers.
    final = await answer(gateway, turn(thought, pb.Part(tool_call=call)), stream)
    assert "3C, rain" in final["text"] and final["finish"] == pb.FINISH_REASON_STOP
    # Dropped, or with its signature altered, Anthropic refuses the turn.
    for assistant in (
        [pb.Part(tool_call=call)],
        [
            pb.Part(reasoning=pb.Reasoning(text=thought.reasoning.text, signature="forged")),
            pb.Part(tool_call=call),
        ],
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await answer(gateway, turn(*assistant), stream)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@STREAMED
async def test_redacted_thinking_comes_back_whole(gateway: Gateway, stream: bool):
    spec = pb.QuerySpec(
        prompt="[[thinking:redacted]] think hard", model=CLAUDE, thinking_budget_tokens=1024
    )
    got = await answer(gateway, spec, stream)
    [part] = got["reasoning"]
    assert part.WhichOneof("kind") == "redacted_reasoning" and part.redacted_reasoning.data
    assert got["text"]


@STREAMED
async def test_openai_reasoning_tokens_are_reported_and_billed_as_output(
    gateway: Gateway, stream: bool
):
    spec = pb.QuerySpec(
        prompt="Think it through",
        model="gemini-2.5-flash",
        reasoning_effort=pb.REASONING_EFFORT_LOW,
    )
    got = await answer(gateway, spec, stream)
    usage = got["usage"]
    assert 0 < usage.reasoning_tokens <= usage.output_tokens
    # $2.50/M in = 2,500 nanos a token, $10/M out = 10,000: reasoning is output
    assert nanos(got["cost"]) == usage.input_tokens * 2_500 + usage.output_tokens * 10_000


@STREAMED
async def test_prompt_cache_writes_are_priced_at_the_cache_write_price(
    gateway: Gateway, stream: bool
):
    spec = pb.QuerySpec(
        model=CLAUDE,
        messages=[
            pb.Message(role=pb.ROLE_SYSTEM, content="A long, stable preamble. " * 40),
            pb.Message(role=pb.ROLE_USER, content="[[cache:write]] and the question"),
        ],
    )
    got = await answer(gateway, spec, stream)
    usage = got["usage"]
    written = usage.cache_write_input_tokens
    assert written > 0 and usage.cached_input_tokens == 0
    # Claude: $15/M input, $18.75/M cache writes (1.25x), $75/M output, in nanos a token.
    expected = (usage.input_tokens - written) * 15_000 + written * 18_750
    assert nanos(got["cost"]) == expected + usage.output_tokens * 75_000
    [attempt] = got["attempts"]
    assert attempt.usage.cache_write_input_tokens == written
    assert nanos(attempt.cost) == nanos(got["cost"])


def no_tools_config(tmp_path: Path, model: str) -> dict[str, str]:
    config = tmp_path / "switchyard.toml"
    config.write_text(f'[models."{model}"]\ntools = false\n')
    return {"SWITCHYARD_CONFIG": str(config)}


@STREAMED
async def test_a_model_without_tool_support_is_skipped_by_routing(
    start_gateway: StartGateway, tmp_path: Path, stream: bool
):
    gateway = await start_gateway(env=no_tools_config(tmp_path, "gemini-2.5-flash"))
    spec = pb.QuerySpec(prompt="[[tool:get_time]] quick: the time?", tools=[WEATHER, TIME])
    route = (await gateway.stub.Route(pb.RouteRequest(query=spec))).route
    # A short query routes to FAST, whose default (Gemini) takes no tools here.
    assert route.model != "gemini-2.5-flash"
    assert [(s.model, s.reason) for s in route.skipped_models] == [
        ("gemini-2.5-flash", "it does not take tools")
    ]
    assert "gemini-2.5-flash was skipped (it does not take tools)" in route.reason
    got = await answer(gateway, spec, stream)
    assert [call.name for call in got["calls"]] == ["get_time"]
    assert got["route"].model == route.model
    assert gateway.sim.stats.model("gemini-2.5-flash").requests == 0
    # Named, the model is refused before any relay call.
    spec.model = "gemini-2.5-flash"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value).startswith(
        "gemini-2.5-flash cannot answer this query: it does not take tools; name a model that can"
    )
    assert gateway.sim.stats.model("gemini-2.5-flash").requests == 0


async def test_bad_tool_input_is_invalid_argument_naming_the_field(gateway: Gateway):
    spec = ask("hi", GPT, tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name="nope"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value).startswith(
        "query.tool_choice.name 'nope' is not one of query.tools"
    )
    assert gateway.sim.stats.requests == 0
