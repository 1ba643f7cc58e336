"""The `switchyard` console script, as a person runs it, against the real gateway."""

import asyncio
import csv
import io
import json
import os
import pty
import re
import signal
from pathlib import Path

import jsonschema
import pytest

from .conftest import BANNER, ENV, SWITCHYARD, Gateway, switchyard

# These tests ask the same prompt more than once and check fresh answers, not the cache.
pytestmark = pytest.mark.gateway_env(SWITCHYARD_CACHE_ENABLED="false")

ROOT = Path(__file__).resolve().parents[2]
SIMPLE = "What is the capital of France? [[sim tokens=8]]"


async def test_query_prints_the_answer_and_one_summary_line(gateway: Gateway):
    code, out, err = await switchyard("query", SIMPLE, "--address", gateway.address)
    assert code == 0
    assert out.startswith("Simulated answer from gemini-2.5-flash") and "\x1b" not in out
    assert re.fullmatch(
        r"model=gemini-2\.5-flash tokens_in=16 tokens_out=8 cost=\$0\.000120000"
        r" latency_ms=\d+ attempts=1\n",
        err,
    )


async def test_streamed_query_prints_the_same_text_and_the_time_to_first_token(gateway: Gateway):
    _, plain, _ = await switchyard("query", SIMPLE, "--address", gateway.address)
    code, out, err = await switchyard("query", SIMPLE, "--stream", "--address", gateway.address)
    assert code == 0 and out == plain
    assert err.startswith("model=gemini-2.5-flash tokens_in=16 tokens_out=8 cost=$0.000120000")
    assert "first_token_ms=" in err and err.rstrip().endswith("attempts=1")


async def test_task_and_model_options_pick_the_model(gateway: Gateway):
    _, _, creative = await switchyard(
        "query", "hi [[sim tokens=2]]", "--task", "creative", "--address", gateway.address
    )
    _, _, batch = await switchyard(
        "query", "hi [[sim tokens=2]]", "--model", "deepseek-v3.2", "--address", gateway.address
    )
    assert creative.startswith("model=gpt-4.1 ") and batch.startswith("model=deepseek-v3.2 ")


async def test_failures_exit_with_the_grpc_status_number(gateway: Gateway):
    refused = await switchyard("query", "hi [[sim fault=400]]", "--address", gateway.address)
    assert refused[0] == 3 and "INVALID_ARGUMENT" in refused[2] and "request id" in refused[2]
    failed = await switchyard("query", "hi [[sim fault=529]]", "--address", gateway.address)
    assert failed[0] == 14
    assert "tried gemini-2.5-flash: RETRYABLE_ERROR" in failed[2]
    assert "tried gpt-4.1: RETRYABLE_ERROR" in failed[2]
    unknown = await switchyard("query", "hi", "--model", "gpt-9", "--address", gateway.address)
    assert unknown[0] == 3 and "gpt-9" in unknown[2]


async def test_the_caller_comes_from_the_environment(gateway: Gateway):
    code, _, err = await switchyard(
        "query", "hi", "--address", gateway.address, env={"SWITCHYARD_CALLER": "x" * 200}
    )
    assert code == 3 and "x-switchyard-caller" in err  # the gateway saw it, and refused it


async def test_route_and_health(gateway: Gateway):
    code, out, _ = await switchyard(
        "route", "Compare quicksort and mergesort", "--address", gateway.address
    )
    assert code == 0
    assert out.splitlines()[0] == "model      gpt-4.1 (openai)"
    assert "cost       $0.000096000 to $0.131168000" in out
    assert await switchyard("health", "--address", gateway.address) == (0, "SERVING\n", "")


async def test_a_spinner_runs_until_the_first_token_on_a_terminal_only(gateway: Gateway):
    prompt = "hi [[sim tokens=3 latency_ms=300]]"
    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        SWITCHYARD, "query", prompt, "--stream", "--address", gateway.address,
        env=ENV, stdout=follower, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(follower)
    screen = await asyncio.to_thread(_read_until_closed, leader)
    assert await process.wait() == 0
    waiting = screen.index("waiting for the first token")
    answer = screen.index("Simulated answer")
    assert waiting < screen.rindex("\r\x1b[K") < answer  # drawn, then erased, then the text
    _, piped, _ = await switchyard("query", prompt, "--stream", "--address", gateway.address)
    assert "waiting" not in piped and "\x1b" not in piped


def _read_until_closed(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


async def test_serve_runs_the_gateway_like_python_m_server(tmp_path):
    env = {
        **ENV,
        "SWITCHYARD_LISTEN": "127.0.0.1:0",
        "SWITCHYARD_DATA_DIR": str(tmp_path),
        "SWITCHYARD_SIM_LATENCY_SCALE": "0",
        "SWITCHYARD_CALLER": "ops",  # the CLI's own variables do not stop the gateway
    }
    process = await asyncio.create_subprocess_exec(
        SWITCHYARD, "serve", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    match = BANNER.search(line.decode())
    assert match, line
    address = f"127.0.0.1:{match[1]}"
    code, out, _ = await switchyard("query", SIMPLE, "--address", address)
    assert code == 0 and out.startswith("Simulated answer")
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_serve_exits_2_on_bad_configuration_like_python_m_server():
    code, _, err = await switchyard("serve", env={"SWITCHYARD_LISTNE": "127.0.0.1:0"})
    assert code == 2 and "SWITCHYARD_LISTNE" in err


async def test_report_runs_on_the_example_workload(tmp_path):
    chart = tmp_path / "report.png"
    code, out, err = await switchyard(
        "report",
        str(ROOT / "clients/examples/workload.jsonl"),
        "--model",
        "claude-sonnet-4-20250514",
        "--png",
        str(chart),
    )
    assert code == 0, err
    assert "dry run: no model was called" in out
    assert "against sending everything to claude-sonnet-4-20250514" in out
    assert chart.read_bytes().startswith(b"\x89PNG\r\n")


async def test_usage_export_writes_every_call_as_csv_and_jsonl(gateway: Gateway):
    for n in range(3):
        await switchyard("query", f"export me {n} [[sim tokens=4]]", "--address", gateway.address,
                         "--caller", "billing")  # fmt: skip
    code, out, err = await switchyard(
        "usage", "export", "--since", "1h", "--format", "csv", "--address", gateway.address,
        "--caller", "billing", "--page-size", "2",
    )  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 and err == "exported 3 calls\n"
    assert {row["caller"] for row in rows} == {"billing"} and rows[0]["status"] == "OK"
    # 4 output tokens and "export me N [[sim tokens=4]]" (27 bytes: 7 + 4 input) on gemini
    assert {row["cost_usd"] for row in rows} == {"0.0000675"}
    code, out, _ = await switchyard(
        "usage", "export", "--since", "2000-01-01", "--address", gateway.address,
        "--caller", "billing",
    )  # fmt: skip
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 3
    assert lines[0]["attempts"][0]["model"] == "gemini-2.5-flash"
    code, _, err = await switchyard(
        "usage", "export", "--since", "yesterday", "--address", gateway.address
    )
    assert code == 64 and "is not a time" in err


async def test_db_upgrade_migrates_the_configured_database(tmp_path):
    code, out, err = await switchyard("db", "upgrade", env={"SWITCHYARD_DATA_DIR": str(tmp_path)})
    assert code == 0, err
    assert out == f"sqlite:///{tmp_path / 'ledger.db'}: schema at revision 0005\n"
    code, _, err = await switchyard(
        "db", "upgrade", env={"SWITCHYARD_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"}
    )
    assert code == 2 and "cannot migrate postgresql://u:***@127.0.0.1:1/x" in err
    assert "hunter2" not in err


WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TOOLS = [
    {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": WEATHER_PARAMETERS,
    },
    {"name": "get_time", "description": "The time now"},
]
TOOL_LINE = re.compile(r"tool call (get_weather|get_time) (\{.*\}) \(id ([A-Za-z0-9_-]+)\)")


@pytest.mark.parametrize("model", ["gpt-4.1", "claude-sonnet-4-20250514"])
async def test_tool_calls_are_printed_unary_and_as_they_complete(
    gateway: Gateway, tmp_path: Path, model: str
):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    prompt = "Weather and time in Lisbon? [[tools:get_weather,get_time:empty]]"
    argv = ["query", prompt, "--tools", str(tools), "--model", model, "--address", gateway.address]
    for stream in ([], ["--stream"]):  # streamed: each printed whole once it is complete
        code, out, err = await switchyard(*argv, *stream)
        assert code == 0, err
        weather, time = (TOOL_LINE.fullmatch(line) for line in out.splitlines())
        assert weather and time, out
        assert weather[1] == "get_weather" and weather[3] != time[3]  # in order, ids apart
        jsonschema.validate(json.loads(weather[2]), WEATHER_PARAMETERS)
        assert (time[1], time[2]) == ("get_time", "{}")  # the empty-arguments call
        assert err.startswith(f"model={model} ")


async def test_a_forced_tool_choice_reaches_the_model(gateway: Gateway, tmp_path: Path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    code, out, _ = await switchyard(
        "query", "What time is it?", "--tools", str(tools), "--tool-choice", "get_time",
        "--address", gateway.address,
    )  # fmt: skip
    called = TOOL_LINE.fullmatch(out.strip())
    assert code == 0 and called and called[1] == "get_time", out


async def test_json_schema_answers_say_whether_they_validate(gateway: Gateway, tmp_path: Path):
    person = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(person))
    argv = ["--json-schema", str(schema), "--address", gateway.address]
    code, out, err = await switchyard("query", "Who wrote Dom Casmurro?", *argv)
    assert code == 0, err
    jsonschema.validate(json.loads(out), person)
    assert err.rstrip().endswith("validation=VALID")
    # streamed, the end says the text did not validate: exit 65, and where it fails
    code, out, err = await switchyard("query", "Who? [[json:invalid]]", "--stream", *argv)
    assert code == 65, err
    assert "validation=INVALID" in err
    assert "switchyard: the answer does not fit the requested JSON format: $" in err
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(out), person)
    # unary, each model of the chain was tried and none fitted
    code, _, err = await switchyard("query", "Who? [[json:invalid]]", *argv)
    assert code == 14 and "INVALID_OUTPUT (the answer did not validate" in err


async def test_an_image_file_is_sent_and_a_model_without_images_refuses_it(
    gateway: Gateway, tmp_path: Path
):
    picture = tmp_path / "dot.png"
    picture.write_bytes(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806"))
    code, out, err = await switchyard(
        "query", "What is this?", "--image", str(picture), "--address", gateway.address
    )
    assert code == 0 and out.startswith("Simulated answer"), err
    code, _, err = await switchyard(
        "query", "What is this?", "--image", str(picture), "--model", "deepseek-v3.2",
        "--address", gateway.address,
    )  # fmt: skip
    assert code == 3 and "deepseek-v3.2" in err and "image" in err
