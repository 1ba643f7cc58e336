"""The README's commands and code, run against a real gateway, so they stay true."""

import ast
import asyncio
import contextlib
import io
import itertools
import json
import os
import re
import signal
import socket
import textwrap
from pathlib import Path

import pytest

from .conftest import ENV, Gateway, StartGateway
from .example_clients import start_secure_gateway

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DEFAULT = "127.0.0.1:50051"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def block(language: str, needle: str) -> str:
    """The one block of `language` whose code holds `needle`."""
    [found] = [code for code in blocks(language) if needle in code]
    return found


def commands() -> list[str]:
    """Every tool command of the sh blocks, continuation lines joined, each with the
    here-document it reads (`<<'EOF'`, its lines, `EOF`)."""
    found = []
    for block in blocks("sh"):
        lines = iter(block.replace("\\\n", " ").splitlines())
        for line in lines:
            command = line.split("  #")[0].strip()
            if command.startswith((".venv/bin/grpcurl", ".venv/bin/buf", ".venv/bin/switchyard")):
                if command.endswith("<<'EOF'"):
                    body = itertools.takewhile(lambda text: text != "EOF", lines)
                    command = "\n".join((command, *body, "EOF"))
                found.append(command)
    return found


def region(path: str, name: str) -> str:
    """The lines between `[readme:name]` and `[/readme:name]` markers, dedented."""
    source = (ROOT / path).read_text()
    found = re.search(rf"\n[^\n]*\[readme:{name}\]\n(.*?)\n[^\n]*\[/readme:{name}\]", source, re.S)
    assert found, f"{path} has no [readme:{name}] region"
    return textwrap.dedent(found[1].expandtabs(4)) + "\n"


def test_the_readme_has_commands_to_run():
    assert len(commands()) >= 10
    assert len(blocks("python")) == 9  # each is run by a test below
    assert len(blocks("ts")) == len(blocks("go")) == 2  # each is an example's region
    assert any(command.startswith(".venv/bin/switchyard query") for command in commands())


@pytest.mark.parametrize(
    ("language", "path", "name"),
    [
        ("ts", "clients/node/src/example.ts", "node"),
        ("go", "clients/go/example/main.go", "go"),
        ("ts", "clients/node/src/tools.ts", "node-tools"),
        ("go", "clients/go/example/tools.go", "go-tools"),
    ],
)
def test_the_node_and_go_snippets_are_the_tested_examples(language, path, name):
    assert region(path, name) in [snippet.expandtabs(4) for snippet in blocks(language)]


async def test_every_grpcurl_and_buf_command_works(gateway: Gateway):
    # The CLI's default address comes from its environment.
    env = {**os.environ, "SWITCHYARD_ADDRESS": gateway.address}
    for command in commands():
        process = await asyncio.create_subprocess_shell(
            command.replace(DEFAULT, gateway.address),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, f"{command}\n{err.decode()}"
        assert out.strip(), command


async def run_python(gateway: Gateway, code: str, namespace: dict | None = None) -> str:
    """Run a README snippet against the gateway; what it printed. Snippets that
    continue another one share its `namespace`."""
    code = code.replace(DEFAULT, gateway.address)
    printed = io.StringIO()
    names = {"__name__": "readme"} if namespace is None else namespace

    def run() -> None:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), names)

    await asyncio.to_thread(run)
    return printed.getvalue()


async def test_the_python_client_snippet_works(gateway: Gateway):
    lines = (await run_python(gateway, blocks("python")[0])).splitlines()
    assert lines[0].startswith("gemini-2.5-flash ")  # task="fast"
    assert lines[1].startswith("Simulated answer from gpt-4.1")  # the stream, "compare": CREATIVE
    assert lines[2].startswith("gpt-4.1 0.") and lines[2].endswith(" 1")


async def test_the_async_client_snippet_works(gateway: Gateway):
    lines = (await run_python(gateway, blocks("python")[1])).splitlines()
    assert lines[0].startswith("claude-sonnet-4-20250514 ")  # complex: REASONING
    assert lines[1].startswith("InvalidRequestError INVALID_ARGUMENT ")


async def test_the_raw_stub_snippet_works(gateway: Gateway):
    printed = await run_python(gateway, blocks("python")[2])
    assert printed.startswith("gpt-4.1 ")  # "compare" routes to the CREATIVE model


async def test_the_tls_and_key_snippet_works(
    start_gateway: StartGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    secure = await start_secure_gateway(start_gateway, tmp_path)
    try:
        monkeypatch.setenv("SWITCHYARD_API_KEY", secure.key)
        code = block("python", '"tls.crt"').replace('"tls.crt"', repr(str(secure.ca_file)))
        printed = await run_python(secure.gateway, code)
    finally:
        await secure.channel.close()
    model, cost, tenant = printed.split()
    assert model == "gemini-2.5-flash" and cost.startswith("0.") and tenant == "examples"


@pytest.mark.timeout(180)
async def test_the_keys_walkthrough_runs_from_bootstrap_to_authenticated_calls(tmp_path: Path):
    """The README's `shell` block, as a newcomer pastes it, in an empty directory."""
    walkthrough = blocks("shell")[0]
    port = free_port()
    script = "set -e; trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + walkthrough.replace(
        ".venv/bin/", f"{ROOT}/.venv/bin/"
    ).replace(DEFAULT, f"127.0.0.1:{port}")
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=tmp_path,
        env={
            **ENV,
            "SWITCHYARD_LISTEN": f"127.0.0.1:{port}",
            "SWITCHYARD_ADDRESS": f"127.0.0.1:{port}",
            "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
            "SWITCHYARD_SIM_LATENCY_SCALE": "0",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: the gateway goes with it
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = await process.communicate()
        raise AssertionError(
            f"the walkthrough did not finish:\n{out.decode()}\n{err.decode()}"
        ) from None
    text, errors = out.decode(), err.decode()
    assert process.returncode == 0, errors
    assert "(TLS)" in text and "search: daily budget $20.00" in text
    assert '"model": "gemini-2.5-flash"' in text or '"model": "gpt-4.1"' in text  # buf curl
    assert "caller     search" in text and "requests   2 (0 failed)" in text
    assert "shown this once" in errors
    assert not re.search(r"sy-[0-9a-f]{12}-[A-Za-z0-9_-]{43}", text + errors)  # never echoed


@pytest.mark.timeout(240)
async def test_the_replicas_walkthrough_shares_one_cache_and_one_ledger(
    tmp_path: Path, redis_url: str, postgres_url: str
):
    """The README's second `shell` block: three replicas, Redis, PostgreSQL and nginx."""
    script = blocks("shell")[1].replace(".venv/bin/", f"{ROOT}/.venv/bin/")
    ports = {port: str(free_port()) for port in ("8090", "50061", "50062", "50063", "50051")}
    # The README's ports become free ones, all at once, and before the URLs go in (whose
    # own ports must stay as they are).
    script = re.sub("|".join(ports), lambda m: ports[m.group(0)], script)
    script = script.replace("redis://redis.internal/0", redis_url)
    script = script.replace("postgresql://switchyard@db.internal/switchyard", postgres_url)
    assert (
        redis_url in script and postgres_url in script
    )  # the tests' own servers, not the README's
    script = "set -e; trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=tmp_path,
        env={
            **ENV,
            "PATH": f"{ENV.get('PATH', '')}:/usr/sbin",
            "SWITCHYARD_ADDRESS": f"127.0.0.1:{ports['50051']}",  # the CLI's default, moved
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 180)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = await process.communicate()
        logs = await asyncio.to_thread(read_logs, tmp_path, "*.log")
        raise AssertionError(
            f"the walkthrough did not finish:\n{out.decode()}\n{err.decode()}\n{logs}"
        ) from None
    text, errors = out.decode(), err.decode()
    logs = await asyncio.to_thread(read_logs, tmp_path, "replica-*.log")
    assert process.returncode == 0, errors + logs
    answers = [line for line in (text + errors).splitlines() if line.startswith("model=")]
    assert len(answers) == 3 and "cached=yes" not in answers[0], text
    assert all("cached=yes" in line for line in answers[1:]), text  # from Redis, whichever replica
    assert "requests   3 (0 failed)" in text, text  # all three, read back from PostgreSQL
    assert logs.count("redis: shared state in") == 3, logs


def read_logs(folder: Path, pattern: str) -> str:
    return "".join(path.read_text() for path in sorted(folder.glob(pattern)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The "Tools, structured output and images" section, run as written.
WEATHER_ENUM = {"celsius", "fahrenheit"}


async def test_the_tool_round_trip_snippets_work_unary_streamed_and_with_thinking(
    gateway: Gateway,
):
    namespace = {"__name__": "readme"}
    *calls, final = (
        await run_python(gateway, block("python", "while answer.tool_calls"), namespace)
    ).splitlines()
    name, arguments = calls[0].split(" ", 1)
    assert name == "get_weather" and ast.literal_eval(arguments)["unit"] in WEATHER_ENUM
    assert final.startswith("STOP Simulated answer from gemini-2.5-flash given tool result")

    streamed = await run_python(gateway, block("python", "stream.events()"), namespace)
    calling, completed, finished, text = streamed.splitlines()
    assert (calling, finished) == ("calling get_weather", "TOOL_CALLS")
    assert set(ast.literal_eval(completed.removeprefix("get_weather "))) == {"city", "unit"}
    assert text.startswith("Simulated answer from gemini-2.5-flash given tool result")

    thinking = await run_python(gateway, block("python", "thinking_budget=2048"), namespace)
    thought, reply = thinking.splitlines()
    kind, *_, signature = thought.split(" ")
    assert kind == "Reasoning" and signature  # the signature came, and went back
    assert reply.startswith("STOP ")  # the next turn was accepted


async def test_the_json_schema_snippet_validates_and_falls_back(gateway: Gateway):
    printed = await run_python(gateway, block("python", "response_format=person"))
    valid, invalid, success, final = printed.splitlines()
    assert valid.startswith("VALID {")
    assert set(ast.literal_eval(valid.removeprefix("VALID "))) == {"name", "born"}
    assert invalid.startswith("gemini-2.5-flash INVALID_OUTPUT the answer did not validate: $")
    assert success.strip() == "gpt-4.1 SUCCESS"
    assert final.startswith("gpt-4.1 VALID {")


async def test_the_image_snippet_works_and_routing_skips_the_model_without_images(
    gateway: Gateway, tmp_path: Path
):
    picture = tmp_path / "chart.png"
    picture.write_bytes(bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000"))
    code = block("python", "Image.from_file").replace('"chart.png"', repr(str(picture)))
    answer, route = (await run_python(gateway, code)).splitlines()
    assert answer.startswith("gemini-2.5-flash Simulated answer")
    assert route == "gemini-2.5-flash (('deepseek-v3.2', 'it does not take images'),)"


async def test_the_buf_curl_tool_round_trip_sends_back_the_call_the_answer_gave(
    gateway: Gateway,
):
    [ask] = [command for command in commands() if "TOOL_CHOICE_MODE_REQUIRED" in command]
    [answer] = [command for command in commands() if "ROLE_TOOL" in command]

    async def run(command: str) -> dict:
        process = await asyncio.create_subprocess_shell(
            command.replace(DEFAULT, gateway.address),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        return json.loads(out)

    first = await run(ask)
    assert first["finishReason"] == "FINISH_REASON_TOOL_CALLS"
    [call] = first["toolCalls"]
    sent = json.loads(answer.split("<<'EOF'\n", 1)[1].removesuffix("\nEOF"))
    _, assistant, results = sent["query"]["messages"]
    # The README's second call sends back a call of the shape the first answer gave (the
    # id is the provider's, different per process), and its result under the same id.
    [part] = assistant["parts"]
    shown = part["toolCall"]
    assert (shown["name"], set(shown["arguments"])) == (call["name"], set(call["arguments"]))
    for call_id in (shown["id"], call["id"]):
        assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call_id), call_id
    assert results["parts"][0]["toolResult"]["toolCallId"] == shown["id"]
    final = await run(answer)
    assert final["finishReason"] == "FINISH_REASON_STOP"
    assert 'given tool result "21 degrees celsius, clear sky"' in final["content"]
