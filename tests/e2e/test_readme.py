"""The README's commands and code, run against a real gateway, so they stay true."""

import asyncio
import contextlib
import io
import re
from pathlib import Path

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
            if command.startswith((".venv/bin/grpcurl", ".venv/bin/buf")):
                found.append(command)
    return found


def test_the_readme_has_commands_to_run():
    assert len(commands()) >= 6
    assert len(blocks("python")) == 1


async def test_every_grpcurl_and_buf_command_works(gateway: Gateway):
    for command in commands():
        process = await asyncio.create_subprocess_shell(
            command.replace(DEFAULT, gateway.address),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, f"{command}\n{err.decode()}"
        assert out.strip(), command


async def test_the_python_snippet_works(gateway: Gateway):
    code = blocks("python")[0].replace(DEFAULT, gateway.address)
    printed = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {})

    await asyncio.to_thread(run)
    assert printed.getvalue().startswith("gpt-4.1 ")  # "compare" routes to the CREATIVE model
