"""Build and run the example clients of clients/<language> the way a user does.

Each example prints the Query answer, a `query ...` summary line, the
streamed text and a `stream ...` summary line, in the same format, so one
check serves every language: the numbers must be exactly what the gateway
billed, and the streamed text exactly the unary answer.

The tool examples print the same lines too (`tool call ...`, `tool result ...`,
the final answer, then `ask ...` and `reply ...` summaries of their two calls),
checked by :func:`check_tool_round_trip` against what the gateway billed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import jsonschema
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard_client import TLS, AdminClient, Tool

from tests.certs import CertificateAuthority
from tests.leaks import SCAN

from .conftest import Gateway, StartGateway, nanos, query, usage_of

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"(query|stream) model=(\S+) tokens_in=(\d+) tokens_out=(\d+) cost_usd=(\S+) attempts=(\d+)"
)
# The tool the tool examples offer, exactly as they define it.
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER = Tool("get_weather", "The current weather in a city", WEATHER_PARAMETERS)
TOOL_PROMPT = "What is the weather in Lisbon? [[tool:get_weather]]"
TOOL_CALL = re.compile(r"tool call get_weather (\{.*\}) \(id ((?:call_|toolu_01)[A-Za-z0-9]+)\)")
TOOL_SUMMARY = re.compile(
    r"(ask|reply) model=(\S+) finish=(TOOL_CALLS|STOP) tokens_in=(\d+) tokens_out=(\d+)"
    r" cost_usd=(\S+) attempts=1"
)


def make(target: str) -> None:
    """Build with the Makefile target a user runs (toolchains install on first use)."""
    built = subprocess.run(
        ["make", "-s", target], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert built.returncode == 0, f"make {target} failed:\n{built.stdout}\n{built.stderr}"


async def run(*command: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run an example to its end, with `env` added to a clean environment; (code, out, err)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def dollars(money_nanos: int) -> str:
    """Nano-dollars as the examples print them: 0.000120000."""
    return f"{money_nanos // 10**9}.{money_nanos % 10**9:09d}"


async def check_answers(
    gateway: Gateway,
    prompt: str,
    out: str,
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub | None = None,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> None:
    """The example's output is the gateway's answer, twice, with exact usage and cost.

    The simulator's answers have no newlines, so the output is five lines:
    answer, query summary, streamed answer, stream summary, and the final newline.
    `stub` and `metadata` reach a gateway that serves TLS and wants a key.
    """
    expected = await (stub or gateway.stub).Query(
        pb.QueryRequest(query=query(prompt)), metadata=metadata
    )
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


@dataclass
class SecureGateway:
    """A gateway serving TLS with API keys on, and what a client needs to call it."""

    gateway: Gateway
    ca_file: Path  # the CA that signed its certificate
    key: str  # a tenant's API key
    channel: grpc.aio.Channel
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)


async def start_secure_gateway(start_gateway: StartGateway, folder: Path) -> SecureGateway:
    """TLS on a certificate for 127.0.0.1, SWITCHYARD_AUTH=api_key, a tenant and its key."""
    ca = CertificateAuthority("example clients' CA")
    cert, key_file = ca.issue("switchyard", ips=("127.0.0.1",)).write(folder / "server")
    admin_key = "adm-" + secrets.token_urlsafe(32)
    SCAN.secret(admin_key)
    gateway = await start_gateway(
        env={
            "SWITCHYARD_CACHE_ENABLED": "false",
            "SWITCHYARD_AUTH": "api_key",
            "SWITCHYARD_ADMIN_KEY": admin_key,
            "SWITCHYARD_TLS_CERT": str(cert),
            "SWITCHYARD_TLS_KEY": str(key_file),
        }
    )

    def make_key() -> str:
        with AdminClient(gateway.address, api_key=admin_key, tls=TLS(ca.pem)) as admin:
            admin.create_tenant("examples")
            return admin.create_key("examples", name="examples").secret

    api_key = await asyncio.to_thread(make_key)
    SCAN.secret(api_key)
    channel = grpc.aio.secure_channel(gateway.address, grpc.ssl_channel_credentials(ca.pem))
    return SecureGateway(
        gateway,
        ca.write(folder / "ca.pem"),
        api_key,
        channel,
        gateway_pb2_grpc.GatewayServiceStub(channel),
    )


async def check_tool_round_trip(gateway: Gateway, out: str, caller: str, model: str = "") -> None:
    """The tool example's output is one round trip: a call that fits the tool's schema,
    the result it sent, a final answer that quotes it, and the two calls' exact usage
    and cost, which must add up to what the gateway billed `caller`."""
    call_line, result_line, final_text, ask_line, reply_line, rest = out.split("\n")
    call = TOOL_CALL.fullmatch(call_line)
    assert call and rest == "", out
    arguments = json.loads(call[1])
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    assert result_line.startswith("tool result {"), out
    result = result_line.removeprefix("tool result ")
    assert json.loads(result) == {**arguments, "temperature": 21}  # what the tool returned
    # the model saw the result: the simulator quotes its first words (all of them here)
    assert f'given tool result "{result}":' in final_text, final_text
    summaries = [TOOL_SUMMARY.fullmatch(line) for line in (ask_line, reply_line)]
    assert all(summaries), out
    ask, reply = (summary.groups() for summary in summaries if summary)
    assert (ask[0], ask[2], reply[0], reply[2]) == ("ask", "TOOL_CALLS", "reply", "STOP")
    assert ask[1] == reply[1] == (model or "gemini-2.5-flash")  # short: FAST when routed
    billed = await usage_of(gateway, caller)
    assert billed.requests == 2 and billed.errors == 0
    total = billed.total
    assert (total.input_tokens, total.output_tokens) == (
        int(ask[3]) + int(reply[3]),
        int(ask[4]) + int(reply[4]),
    )
    assert dollars(total.cost) == dollars(sum(_nanos(summary[5]) for summary in (ask, reply)))


def _nanos(dollars_text: str) -> int:
    """ "0.000120000" as nano-dollars."""
    units, fraction = dollars_text.split(".")
    return int(units) * 10**9 + int(fraction)
