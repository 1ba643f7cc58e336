"""The README's commands and code, run against a real gateway, so they stay true."""

import asyncio
import contextlib
import io
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
    assert len(blocks("python")) == 4
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


async def test_the_tls_and_key_snippet_works(
    start_gateway: StartGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    secure = await start_secure_gateway(start_gateway, tmp_path)
    try:
        monkeypatch.setenv("SWITCHYARD_API_KEY", secure.key)
        code = blocks("python")[3].replace('"tls.crt"', repr(str(secure.ca_file)))
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
