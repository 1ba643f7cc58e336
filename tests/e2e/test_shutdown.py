"""SIGTERM while a stream is running: drain, finish it, refuse new work, exit 0."""

import asyncio
import os
import re
import signal
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.simulator import RelaySimulator, SimulatorSettings

from .conftest import RELAY_KEY, query

BANNER = re.compile(r"serving switchyard\.v1\.GatewayService on 127\.0\.0\.1:(\d+)")


@pytest.fixture
async def slow_relay():
    sim = RelaySimulator(
        SimulatorSettings(latency_scale=1.0, tokens_per_second=40, api_key=RELAY_KEY)
    )
    await sim.start()
    yield sim
    await sim.stop()


async def start_process(relay_url: str) -> tuple[asyncio.subprocess.Process, int]:
    env = {
        **os.environ,
        "SWITCHYARD_LISTEN": "127.0.0.1:0",
        "SWITCHYARD_RELAY_URL": relay_url,
        "SWITCHYARD_RELAY_API_KEY": RELAY_KEY,
        "SWITCHYARD_SHUTDOWN_GRACE": "20",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    match = BANNER.search(line.decode())
    assert match, line
    return process, int(match.group(1))


async def test_sigterm_during_a_stream_finishes_it_and_exits_zero(slow_relay):
    process, port = await start_process(slow_relay.url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        stream = stub.StreamQuery(pb.StreamQueryRequest(query=query("tell me [[sim tokens=30]]")))
        messages: list = [await stream.read(), await stream.read()]
        assert messages[0].HasField("start") and messages[1].HasField("delta")

        process.send_signal(signal.SIGTERM)
        assert (
            await asyncio.wait_for(watch.read(), 10)
        ).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Query(pb.QueryRequest(query=query("new work")))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

        while (message := await stream.read()) is not grpc.aio.EOF:  # runs to its end
            messages.append(message)
        assert messages[-1].HasField("end")
        assert messages[-1].end.usage.output_tokens == 30
    assert await asyncio.wait_for(process.wait(), 30) == 0
