"""SIGTERM while a stream is running: drain, finish it, refuse new work, exit 0."""

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.simulator import RelaySimulator, SimulatorSettings

from .conftest import RELAY_KEY, query, start_gateway_process


@pytest.fixture
async def slow_relay():
    sim = RelaySimulator(
        SimulatorSettings(latency_scale=1.0, tokens_per_second=40, api_key=RELAY_KEY)
    )
    await sim.start()
    yield sim
    await sim.stop()


async def test_sigterm_during_a_stream_finishes_it_and_exits_zero(slow_relay):
    process, port = await start_gateway_process(slow_relay.url, {"SWITCHYARD_SHUTDOWN_GRACE": "20"})
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
