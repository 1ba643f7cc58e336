"""End-to-end fixtures: the real gateway on a free loopback port, the relay
simulator as a real HTTP server, and gRPC clients over real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.app import App, create_server
from server.domain import Identity
from server.settings import load_settings
from server.simulator import RelaySimulator, SimulatorSettings
from server.state.ledger import UsageSummary
from tests.leaks import SCAN

RELAY_KEY = "e2e-relay-key-0123456789"
SWITCHYARD = str(Path(sys.executable).parent / "switchyard")  # the console script
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}


async def switchyard(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the `switchyard` command as a person would: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        SWITCHYARD,
        *args,
        env={**ENV, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


BANNER = re.compile(r"serving switchyard\.v1\.GatewayService on 127\.0\.0\.1:(\d+)")


async def start_gateway_process(
    relay_url: str, env: dict[str, str] | None = None, **spawn: Any
) -> tuple[asyncio.subprocess.Process, int]:
    """`python -m server` as its own process, as users start it; returns it and its port.

    The environment is this one without any SWITCHYARD_* or OTEL_* variable, plus
    the relay, its key, a free port, a data directory of its own (unless `env`
    names one) and `env`. `spawn` goes to create_subprocess_exec (stderr=...).
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OTEL_"))}
    log_file = None
    if "stderr" not in spawn:  # its log, to a file the secret scan reads at the end
        log = Path(tempfile.mkdtemp(prefix="switchyard-log-")) / "gateway.log"
        spawn["stderr"] = log_file = log.open("wb")
        SCAN.watch(log)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        env={
            **clean,
            "SWITCHYARD_LISTEN": "127.0.0.1:0",
            "SWITCHYARD_RELAY_URL": relay_url,
            "SWITCHYARD_RELAY_API_KEY": RELAY_KEY,
            "SWITCHYARD_DATA_DIR": tempfile.mkdtemp(prefix="switchyard-e2e-"),
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE,
        **spawn,
    )
    if log_file is not None:
        log_file.close()  # the child has its own copy
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    match = BANNER.search(line.decode())
    assert match, line
    return process, int(match.group(1))


@dataclass
class Gateway:
    """A running gateway, its simulator and a connected stub."""

    app: App
    sim: RelaySimulator
    channel: grpc.aio.Channel
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.port}"


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StartGateway]:
    """Start gateways with extra SWITCHYARD_* settings; all are stopped after the test.

    Each runs on the default ledger (SQLite) in a data directory of its own,
    unless `env` says otherwise.
    """
    running: list[Gateway] = []

    async def start(
        env: dict[str, str] | None = None,
        sim_settings: SimulatorSettings | None = None,
        relay_url: str | None = None,
    ) -> Gateway:
        sim = RelaySimulator(sim_settings or SimulatorSettings(latency_scale=0, api_key=RELAY_KEY))
        url = await sim.start()
        settings = load_settings(
            {
                "SWITCHYARD_LISTEN": "127.0.0.1:0",
                "SWITCHYARD_RELAY_URL": relay_url or url,
                "SWITCHYARD_RELAY_API_KEY": RELAY_KEY,
                "SWITCHYARD_DATA_DIR": str(tmp_path_factory.mktemp("data")),
                **(env or {}),
            }
        )
        app = await create_server(settings)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        gateway = Gateway(app, sim, channel, gateway_pb2_grpc.GatewayServiceStub(channel))
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        await gateway.channel.close()
        await gateway.app.stop(0)
        await gateway.sim.stop()


@pytest.fixture
async def gateway(start_gateway: StartGateway, request: pytest.FixtureRequest) -> Gateway:
    """A gateway on an instant simulator: default settings, plus those of a
    `@pytest.mark.gateway_env(NAME="value")` marker on the test or its module."""
    marker = request.node.get_closest_marker("gateway_env")
    return await start_gateway(env=dict(marker.kwargs) if marker else None)


def query(prompt: str, **fields: object) -> pb.QuerySpec:
    return pb.QuerySpec(prompt=prompt, **fields)  # type: ignore[arg-type]


async def stream_all(
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub, spec: pb.QuerySpec
) -> list[pb.StreamQueryResponse]:
    return [message async for message in stub.StreamQuery(pb.StreamQueryRequest(query=spec))]


def details(error: grpc.aio.AioRpcError) -> str:
    """The status message of a failed call ('' when it had none)."""
    return error.details() or ""


def nanos(money: object) -> int:
    """google.type.Money as integer nano-dollars."""
    return money.units * 1_000_000_000 + money.nanos  # type: ignore[attr-defined]


def caller(name: str) -> tuple[tuple[str, str]]:
    """Metadata naming the calling service."""
    return (("x-switchyard-caller", name),)


async def usage_of(gateway: Gateway, who: str = "anonymous", seconds: float = 3600) -> UsageSummary:
    """The ledger's figures for tenant `who` over the last `seconds`, as GetUsage reads them."""
    now = time.time()
    report = await gateway.app.pipeline.usage(Identity(who), now - seconds, now + 60)
    return report.summary
