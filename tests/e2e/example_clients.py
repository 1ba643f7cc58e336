"""Build and run the example clients of clients/<language> the way a user does.

Each example prints the Query answer, a `query ...` summary line, the
streamed text and a `stream ...` summary line, in the same format, so one
check serves every language: the numbers must be exactly what the gateway
billed, and the streamed text exactly the unary answer.
"""

import asyncio
import re
import subprocess
from pathlib import Path

from switchyard.v1 import gateway_pb2 as pb

from .conftest import Gateway, nanos, query

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"(query|stream) model=(\S+) tokens_in=(\d+) tokens_out=(\d+) cost_usd=(\S+) attempts=(\d+)"
)


def make(target: str) -> None:
    """Build with the Makefile target a user runs (toolchains install on first use)."""
    built = subprocess.run(
        ["make", "-s", target], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert built.returncode == 0, f"make {target} failed:\n{built.stdout}\n{built.stderr}"


async def run(*command: str) -> tuple[int, str, str]:
    """Run an example to its end; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def dollars(money_nanos: int) -> str:
    """Nano-dollars as the examples print them: 0.000120000."""
    return f"{money_nanos // 10**9}.{money_nanos % 10**9:09d}"


async def check_answers(gateway: Gateway, prompt: str, out: str) -> None:
    """The example's output is the gateway's answer, twice, with exact usage and cost.

    The simulator's answers have no newlines, so the output is five lines:
    answer, query summary, streamed answer, stream summary, and the final newline.
    """
    expected = await gateway.stub.Query(pb.QueryRequest(query=query(prompt)))
    unary_text, query_line, streamed, stream_line, rest = out.split("\n")
    assert unary_text == expected.content and streamed == expected.content and rest == "", out
    for kind, line in (("query", query_line), ("stream", stream_line)):
        summary = SUMMARY.fullmatch(line)
        assert summary, line
        _, model, tokens_in, tokens_out, cost, attempts = summary.groups()
        assert summary[1] == kind and model == expected.model
        assert (int(tokens_in), int(tokens_out)) == (
            expected.usage.input_tokens,
            expected.usage.output_tokens,
        )
        assert cost == dollars(nanos(expected.cost))
        assert int(attempts) == len(expected.attempts)
