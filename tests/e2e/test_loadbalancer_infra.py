"""The gRPC load balancer the multi-gateway tests will run behind (tests/loadbalancer.py):
nginx's grpc_pass spreads calls round robin, skips a stopped backend without an error
to the caller, and carries a server stream that stays open.

The backends are two bare grpc.aio servers with the standard health service, told
apart by the status each reports for the service "whoami"."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from tests.helpers import until
from tests.loadbalancer import TempNginx, nginx_bin

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WHOAMI = "whoami"


@dataclass
class Backend:
    name: str
    status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    server: grpc.aio.Server
    health: HealthServicer
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_backend(
    name: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
) -> Backend:
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set(WHOAMI, status)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Backend(name, status, server, health, port)


@dataclass
class Balanced:
    backends: list[Backend]
    lb: TempNginx
    channel: grpc.aio.Channel
    stub: health_pb2_grpc.HealthStub

    async def whoami(self) -> str:
        """Which backend answered one call through nginx."""
        reply = await self.stub.Check(health_pb2.HealthCheckRequest(service=WHOAMI), timeout=5)
        return next(b.name for b in self.backends if b.status == reply.status)


@pytest.fixture
async def balanced() -> AsyncIterator[Balanced]:
    if nginx_bin() is None:
        message = "nginx is not installed: run `make lb-deps`"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    backends = [await start_backend("a", SERVING), await start_backend("b", NOT_SERVING)]
    lb = TempNginx([b.address for b in backends])
    await asyncio.to_thread(lb.start)
    channel = grpc.aio.insecure_channel(lb.address)
    try:
        yield Balanced(backends, lb, channel, health_pb2_grpc.HealthStub(channel))
    finally:
        await channel.close()
        for backend in backends:
            await backend.server.stop(None)
        await asyncio.to_thread(lb.close)


async def test_calls_through_nginx_reach_both_backends_round_robin(balanced: Balanced):
    seen = Counter([await balanced.whoami() for _ in range(10)])
    assert seen.keys() == {"a", "b"}, seen
    assert abs(seen["a"] - seen["b"]) <= 2, seen  # round robin, one worker: alternating
    # nginx writes a call's log line after its response went out: wait for the tenth.
    await until(lambda: len(balanced.lb.access_lines()) >= 10, within=5)
    logged = balanced.lb.access_lines()
    assert len(logged) == 10
    assert all("grpc-status=0" in line for line in logged), logged


async def test_a_stopped_backend_is_skipped_without_an_error(balanced: Balanced):
    assert {await balanced.whoami() for _ in range(4)} == {"a", "b"}  # connections to both
    await balanced.backends[1].server.stop(None)
    answered = [await balanced.whoami() for _ in range(10)]
    assert answered == ["a"] * 10
    # nginx saw b refuse (or drop a cached connection) and moved the call to a.
    assert any("upstream=" in line and "," in line for line in balanced.lb.access_lines()[4:])


async def test_a_server_stream_stays_open_through_nginx(balanced: Balanced):
    watch = balanced.stub.Watch(health_pb2.HealthCheckRequest(service=WHOAMI), timeout=30)
    first = await watch.read()
    assert first.status in {SERVING, NOT_SERVING}
    backend = next(b for b in balanced.backends if b.status == first.status)
    await asyncio.sleep(0.5)  # the stream is idle for a while, and stays open
    flipped = NOT_SERVING if first.status == SERVING else SERVING
    await backend.health.set(WHOAMI, flipped)
    second = await asyncio.wait_for(watch.read(), 5)
    assert second.status == flipped
    watch.cancel()
