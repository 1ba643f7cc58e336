"""The README's commands and code, run against a real gateway, so they stay true."""

import asyncio
import contextlib
import io
import os
import re
import textwrap
from pathlib import Path

import pytest

from .conftest import Gateway

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DEFAULT = "127.0.0.1:50051"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def commands() -> list[str]:
    """Every tool command of the sh blocks, continuation lines joined."""
    found = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith((".venv/bin/grpcurl", ".venv/bin/buf", ".venv/bin/switchyard")):
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
    assert len(blocks("python")) == 3
    assert any(command.startswith(".venv/bin/switchyard query") for command in commands())


@pytest.mark.parametrize(
    ("language", "path"),
    [("ts", "clients/node/src/example.ts"), ("go", "clients/go/example/main.go")],
)
def test_the_node_and_go_snippets_are_the_tested_examples(language, path):
    [snippet] = blocks(language)
    assert snippet.expandtabs(4) == region(path, "node" if language == "ts" else "go")


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


async def run_python(gateway: Gateway, code: str) -> str:
    """Run a README snippet against the gateway; what it printed."""
    code = code.replace(DEFAULT, gateway.address)
    printed = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})

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
