"""The `switchyard` CLI against a fake gateway: output, exit codes, secrets, plumbing."""

import argparse
import io
import json
import re
import sys
import types
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from switchyard.v1 import gateway_pb2 as pb
from switchyard_client.cli import build_parser, run
from switchyard_client.cli_base import Terminal
from switchyard_client.formatting import usage_text

from .fakes import Failure, packed, retry_info

SECRET = "sk-cli-0123456789abcdef"


def call(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), Terminal(out, err), env or {})
    return code, out.getvalue(), err.getvalue()


def test_help_lists_every_command_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        run(["--help"], environ={"SWITCHYARD_API_KEY": SECRET})
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in ("serve", "query", "route", "usage", "health", "report"):
        assert command in text
    assert "14 UNAVAILABLE" in text and "64" in text
    assert SECRET not in text


def test_subcommand_help_never_shows_the_api_key(capsys):
    with pytest.raises(SystemExit):
        run(["query", "--help"], environ={"SWITCHYARD_API_KEY": SECRET})
    text = capsys.readouterr().out
    assert "--api-key" in text and "--stream" in text and "exit codes" in text
    assert SECRET not in text


@pytest.mark.parametrize(
    "argv",
    [[], ["query"], ["query", "hi", "--task", "quick"], ["route", "hi", "--bogus"], ["fly"]],
)
def test_a_wrong_command_line_exits_64_not_a_grpc_status(argv, capsys):
    with pytest.raises(SystemExit) as done:
        run(argv, environ={})
    assert done.value.code == 64
    assert "usage:" in capsys.readouterr().err


def test_environment_supplies_address_caller_and_key_and_options_win():
    parser = build_parser(
        {"SWITCHYARD_ADDRESS": "gw:1", "SWITCHYARD_CALLER": "env-caller", "SWITCHYARD_API_KEY": "k"}
    )
    args = parser.parse_args(["route", "hi"])
    assert (args.address, args.caller, args.api_key) == ("gw:1", "env-caller", "k")
    args = parser.parse_args(["route", "hi", "--caller", "flag-caller", "--address", "gw:2"])
    assert (args.address, args.caller) == ("gw:2", "flag-caller")


def test_query_prints_the_answer_then_the_summary_and_sends_the_options(fake):
    response = pb.QueryResponse(
        content="Paris", model="gemini-2.5-flash", usage=pb.Usage(input_tokens=9, output_tokens=1)
    )
    response.attempts.add(model="gemini-2.5-flash", outcome=pb.ATTEMPT_OUTCOME_SUCCESS)
    fake.gateway.answers["Query"] = response
    env = {"SWITCHYARD_CALLER": "search", "SWITCHYARD_API_KEY": SECRET}
    code, out, err = call(
        "query", "Capital of France?", "--task", "fast", "--max-tokens", "5", "--no-fallback",
        "--address", fake.address, env=env,
    )  # fmt: skip
    assert code == 0
    assert out == "Paris\n"  # stdout is exactly the answer
    assert err.startswith("model=gemini-2.5-flash tokens_in=9 tokens_out=1 cost=$0.000000000")
    seen = fake.gateway.seen[0]
    assert seen.metadata["x-switchyard-caller"] == "search"
    assert seen.metadata["authorization"] == f"Bearer {SECRET}"
    spec = seen.request.query
    assert (spec.task, spec.max_tokens, spec.disable_fallback) == (pb.TASK_FAST, 5, True)


def test_a_failed_call_exits_with_its_status_number_and_explains_it(fake):
    attempt = pb.Attempt(
        model="gpt-4.1", outcome=pb.ATTEMPT_OUTCOME_RETRYABLE_ERROR, error="HTTP 529: overloaded"
    )
    fake.gateway.failure = Failure(
        grpc.StatusCode.UNAVAILABLE,
        "no model could answer",
        request_id="feedc0de",
        details=[retry_info(2), packed(attempt)],
    )
    code, out, err = call(
        "query", "hi", "--address", fake.address, env={"SWITCHYARD_API_KEY": SECRET}
    )
    assert code == 14
    assert out == ""
    assert err.splitlines() == [
        "switchyard: UNAVAILABLE: no model could answer (request id feedc0de); retry in 2 s",
        "  tried gpt-4.1: RETRYABLE_ERROR (HTTP 529: overloaded)",
    ]
    assert SECRET not in err


def test_usage_prints_the_report_for_a_window_of_the_last_hours(fake):
    answer = pb.GetUsageResponse(caller="search", requests=3, errors=1)
    fake.gateway.answers["GetUsage"] = answer
    code, out, _ = call("usage", "--hours", "2", "--address", fake.address)
    assert code == 0
    assert out == usage_text(answer) + "\n"
    request = fake.gateway.seen[0].request
    window = request.end.ToDatetime() - request.start.ToDatetime()
    assert window == timedelta(hours=2)


def test_usage_without_hours_leaves_the_window_to_the_gateway(fake):
    fake.gateway.answers["GetUsage"] = pb.GetUsageResponse()
    assert call("usage", "--address", fake.address)[0] == 0
    request = fake.gateway.seen[0].request
    assert not request.HasField("start") and not request.HasField("end")


def test_usage_on_a_gateway_without_getusage_says_so_and_exits_12(fake):
    fake.gateway.failure = Failure(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
    code, out, err = call("usage", "--address", fake.address)
    assert code == 12 and out == ""
    assert "does not report usage yet (GetUsage answered UNIMPLEMENTED)" in err


def test_usage_json_is_the_message_itself(fake):
    fake.gateway.answers["GetUsage"] = pb.GetUsageResponse(caller="search", requests=7)
    code, out, _ = call("usage", "--json", "--address", fake.address)
    assert code == 0 and '"requests": "7"' in out and '"caller": "search"' in out


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (health_pb2.HealthCheckResponse.SERVING, 0),
        (health_pb2.HealthCheckResponse.NOT_SERVING, 14),
    ],
)
def test_health_prints_the_status_and_exits_0_only_when_serving(fake, status, code):
    fake.health.set("", status)
    result, out, _ = call("health", "--address", fake.address)
    assert result == code
    assert out == health_pb2.HealthCheckResponse.ServingStatus.Name(status) + "\n"


def test_report_is_missing_from_builds_without_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "server.report", None)  # import fails as if absent
    code, out, err = call("report", "--since", "1d")
    assert (code, out) == (1, "")
    assert err == "switchyard report is not available in this build\n"


def test_report_hands_its_own_arguments_to_server_report(monkeypatch):
    calls = []

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--since")

    def run_report(args: argparse.Namespace) -> int:
        calls.append(args)
        return 5

    module = types.ModuleType("server.report")
    module.add_arguments = add_arguments  # type: ignore[attr-defined]
    module.run = run_report  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server.report", module)
    assert call("report", "--since", "1d")[0] == 5
    assert calls[0].since == "1d"


def test_report_help_is_the_report_s_own(monkeypatch, capsys):
    module = types.ModuleType("server.report")
    module.add_arguments = lambda parser: parser.add_argument("--since", help="the window")  # type: ignore[attr-defined]
    module.run = lambda args: 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server.report", module)
    with pytest.raises(SystemExit) as done:
        call("report", "--help")
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: switchyard report") and "--since" in help_text


TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"name": "get_time"},
]


def _call(call_id: str, name: str, **arguments: str) -> pb.ToolCall:
    call = pb.ToolCall(id=call_id, name=name)
    call.arguments.update(arguments)
    return call


def test_query_with_tools_sends_them_and_prints_each_call(fake, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    fake.gateway.answers["Query"] = pb.QueryResponse(
        model="gpt-4.1",
        finish_reason=pb.FINISH_REASON_TOOL_CALLS,
        tool_calls=[_call("call_1", "get_weather", city="Lisbon"), _call("call_2", "get_time")],
    )
    code, out, err = call(
        "query", "Weather?", "--tools", str(tools), "--tool-choice", "required",
        "--address", fake.address,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == [  # no empty answer line: the calls are the answer
        'tool call get_weather {"city": "Lisbon"} (id call_1)',
        "tool call get_time {} (id call_2)",
    ]
    assert err.startswith("model=gpt-4.1 ")
    spec = fake.gateway.seen[0].request.query
    assert [tool.name for tool in spec.tools] == ["get_weather", "get_time"]
    assert spec.tool_choice.mode == pb.TOOL_CHOICE_MODE_REQUIRED


def test_a_streamed_tool_call_is_printed_once_complete_on_its_own_line(fake, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    fake.gateway.answers["StreamQuery"] = [
        pb.StreamQueryResponse(start=pb.StreamStart(model="gpt-4.1")),
        pb.StreamQueryResponse(delta=pb.TextDelta(text="Let me check.")),
        pb.StreamQueryResponse(tool_call_start=pb.ToolCallStart(index=0, id="c1", name="get_time")),
        pb.StreamQueryResponse(tool_call_delta=pb.ToolCallDelta(index=0, arguments="{")),
        pb.StreamQueryResponse(tool_call_end=pb.ToolCallEnd(index=0, call=_call("c1", "get_time"))),
        pb.StreamQueryResponse(end=pb.StreamEnd(finish_reason=pb.FINISH_REASON_TOOL_CALLS)),
    ]
    code, out, _ = call(
        "query", "Time?", "--stream", "--tools", str(tools), "--address", fake.address
    )
    assert code == 0
    assert out == "Let me check.\ntool call get_time {} (id c1)\n"


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "streamed"])
def test_a_json_answer_that_does_not_validate_exits_65_and_says_where(fake, tmp_path, stream):
    schema = tmp_path / "person.json"
    schema.write_text('{"type": "object", "required": ["name"]}')
    where = "$ lacks the required property 'name'"
    verdict: dict[str, Any] = {
        "validation": pb.OUTPUT_VALIDATION_INVALID,
        "validation_error": where,
    }
    fake.gateway.answers["Query"] = pb.QueryResponse(content="{}", **verdict)
    fake.gateway.answers["StreamQuery"] = [
        pb.StreamQueryResponse(start=pb.StreamStart(model="gpt-4.1")),
        pb.StreamQueryResponse(delta=pb.TextDelta(text="{}")),
        pb.StreamQueryResponse(end=pb.StreamEnd(**verdict)),
    ]
    argv = ["query", "Who?", "--json-schema", str(schema), "--address", fake.address]
    code, out, err = call(*argv, *(["--stream"] if stream else []))
    assert (code, out) == (65, "{}\n")
    assert "validation=INVALID" in err.splitlines()[0]
    assert (
        err.splitlines()[1]
        == f"switchyard: the answer does not fit the requested JSON format: {where}"
    )
    spec = fake.gateway.seen[0].request.query
    assert spec.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    assert list(spec.response_format.json_schema.schema["required"]) == ["name"]


def test_images_go_with_the_prompt_in_one_user_message(fake, tmp_path):
    picture = tmp_path / "chart.png"
    picture.write_bytes(b"\x89PNG\r\n")
    fake.gateway.answers["Query"] = pb.QueryResponse(content="A chart.")
    code, out, _ = call(
        "query", "What is this?", "--image", str(picture), "--image", "https://example.com/b.webp",
        "--address", fake.address,
    )  # fmt: skip
    assert (code, out) == (0, "A chart.\n")
    spec = fake.gateway.seen[0].request.query
    assert spec.prompt == ""
    [message] = spec.messages
    text, data, url = message.parts
    assert (message.role, text.text) == (pb.ROLE_USER, "What is this?")
    assert data.image == pb.Image(data=b"\x89PNG\r\n", media_type="image/png")
    assert url.image.url == "https://example.com/b.webp"


@pytest.mark.parametrize(
    ("files", "argv", "message"),
    [
        ({}, ["--tools", "missing.json"], "--tools missing.json: No such file or directory"),
        ({"t.json": "[{"}, ["--tools", "t.json"], "--tools t.json is not JSON"),
        ({"t.json": '{"name": "x"}'}, ["--tools", "t.json"], "expected a JSON list of"),
        ({"t.json": '[{"nom": "x"}]'}, ["--tools", "t.json"], r"unknown keys \['nom'\]"),
        ({"s.json": "[1]"}, ["--json-schema", "s.json"], "expected a JSON Schema object"),
        ({"a.bmp": "BM"}, ["--image", "a.bmp"], "a.bmp: cannot tell the image format"),
        ({}, ["--image", "gone.png"], "--image gone.png: No such file or directory"),
    ],
)
def test_a_bad_file_option_exits_64_naming_the_file(
    fake, tmp_path, monkeypatch, files, argv, message
):
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code, out, err = call("query", "hi", *argv, "--address", fake.address)
    assert (code, out) == (64, "")
    assert re.search(message, err), err
    assert fake.gateway.seen == []  # refused before any call


def test_route_shows_the_models_it_skipped(fake):
    fake.gateway.answers["Route"] = pb.RouteResponse(
        route=pb.RouteDecision(
            model="gpt-4.1",
            skipped_models=[pb.SkippedModel(model="deepseek-v3.2", reason="does not take images")],
        )
    )
    code, out, _ = call(
        "route", "hi", "--image", "https://example.com/a.png", "--address", fake.address
    )
    assert code == 0
    assert "skipped    deepseek-v3.2 (does not take images)" in out.splitlines()
