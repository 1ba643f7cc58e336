"""Build and run the example clients of clients/<language> the way a user does.

Each example prints the Query answer, a `query ...` summary line, the
streamed text and a `stream ...` summary line, in the same format, so one
check serves every language: the numbers must be exactly what the gateway
billed, and the streamed text exactly the unary answer.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard_client import TLS, AdminClient

from tests.certs import CertificateAuthority
from tests.leaks import SCAN

from .conftest import Gateway, StartGateway, nanos, query

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
