"""Bytes a caller sends that do not decode, and values at the edges: a precise status, one log line.

Against `python -m server` as its own process, so what it writes to its log is
read as an operator would read it: never a traceback for a caller's bad input,
one line with the request id, the method, the status and the reason.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.admin.v1 import admin_pb2  # noqa: F401 (its types, in the pool)
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.boundary import REQUEST_ID_HEADER
from server.simulator import RelaySimulator, SimulatorSettings
from tests.helpers import flood
from tests.leaks import SCAN

from .conftest import ENV, RELAY_KEY, start_gateway_process

ROOT = Path(__file__).resolve().parents[2]

NOT_PROTOBUF = b"\xff\xff\xff"  # no protobuf message at all: a tag that never ends


def bad_utf8(message_type: str) -> bytes:
    """The message with its first string field holding bytes that are not UTF-8
    (a nested message's, when the message itself has none: QueryRequest's prompt)."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(message_type)
    for field in descriptor.fields:
        if field.type == field.TYPE_STRING:
            return bytes([field.number << 3 | 2, 2]) + b"\xff\xfe"
    for field in descriptor.fields:
        if field.type == field.TYPE_MESSAGE and field.message_type is not None:
            inner = bad_utf8(field.message_type.full_name)
            return bytes([field.number << 3 | 2, len(inner)]) + inner
    raise AssertionError(f"{message_type} has no string field")


@dataclass
class Running:
    channel: grpc.aio.Channel
    log: Path

    def raw(self, path: str, streaming: bool = False) -> object:
        method = self.channel.unary_stream if streaming else self.channel.unary_unary
        return method(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    async def log_text(self) -> str:
        return await asyncio.to_thread(self.log.read_text)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0, api_key=RELAY_KEY))
    url = await sim.start()
    log = Path(tempfile.mkdtemp(prefix="switchyard-log-")) / "gateway.log"
    SCAN.watch(log)
    with log.open("wb") as stderr:
        process, port = await start_gateway_process(url, stderr=stderr)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(channel, log)
    finally:
        await channel.close()
        process.terminate()
        await process.wait()
        await sim.stop()


@pytest.mark.parametrize(
    ("path", "streaming", "message_type"),
    [
        ("/switchyard.v1.GatewayService/Query", False, "switchyard.v1.QueryRequest"),
        ("/switchyard.v1.GatewayService/StreamQuery", True, "switchyard.v1.StreamQueryRequest"),
        ("/switchyard.v1.GatewayService/Route", False, "switchyard.v1.RouteRequest"),
        ("/switchyard.v1.GatewayService/GetUsage", False, "switchyard.v1.GetUsageRequest"),
        (
            "/switchyard.admin.v1.AdminService/DeleteTenant",
            False,
            "switchyard.admin.v1.DeleteTenantRequest",
        ),
        ("/grpc.health.v1.Health/Check", False, "grpc.health.v1.HealthCheckRequest"),
    ],
)
async def test_undecodable_requests_are_invalid_argument_with_one_log_line_and_no_traceback(
    running: Running, path: str, streaming: bool, message_type: str
):
    call = running.raw(path, streaming)
    for payload, why in (
        (bad_utf8(message_type), "invalid UTF-8"),
        (NOT_PROTOBUF, "do not decode"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if streaming:
                async for _ in call(payload, timeout=5):  # type: ignore[operator]
                    pass
            else:
                await call(payload, timeout=5)  # type: ignore[operator]
        error = caught.value
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert message_type in (error.details() or "") and why in (error.details() or "")
        trailers = dict(await_trailers(error))
        request_id = trailers[REQUEST_ID_HEADER]
        method = path.rsplit("/", 1)[1]
        await asyncio.sleep(0.05)  # the log line is written before the status is sent
        text = await running.log_text()
        lines = [line for line in text.splitlines() if request_id in line]
        assert len(lines) == 1, text
        assert re.search(rf"call {request_id} {method} refused: INVALID_ARGUMENT \(", lines[0])
        assert "Traceback" not in text and "DecodeError" not in text, text


# The report's 500,000 one-letter messages; the three query methods' requests share
# the shape (a QuerySpec as field 1).
FLOOD = flood(500_000, pb.Message(role=pb.ROLE_USER, content="x"))


@pytest.mark.parametrize(
    ("path", "streaming"),
    [
        ("/switchyard.v1.GatewayService/Query", False),
        ("/switchyard.v1.GatewayService/StreamQuery", True),
        ("/switchyard.v1.GatewayService/Route", False),
    ],
)
async def test_a_flood_of_messages_is_refused_on_the_wire_by_every_method_taking_a_query(
    running: Running, path: str, streaming: bool
):
    """The report's 500,000 messages: counted before decoding (server/screening.py), and
    refused as any call over the bound is, with one log line."""
    call = running.raw(path, streaming)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            async for _ in call(FLOOD, timeout=10):  # type: ignore[operator]
                pass
        else:
            await call(FLOOD, timeout=10)  # type: ignore[operator]
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (error.details() or "").startswith(
        "the query has more than 1000 messages; at most 1000 are allowed per call"
        " (SWITCHYARD_MAX_MESSAGES)"
    ), error.details()
    request_id = dict(await_trailers(error))[REQUEST_ID_HEADER]
    await asyncio.sleep(0.05)
    text = await running.log_text()
    [line] = [x for x in text.splitlines() if request_id in x]
    assert f"{path.rsplit('/', 1)[1]} refused: INVALID_ARGUMENT (the query has more than" in line
    assert "Traceback" not in text


def await_trailers(error: grpc.aio.AioRpcError) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in error.trailing_metadata() or () if isinstance(v, str))


async def test_the_last_valid_timestamp_is_a_window_and_past_it_the_field_is_named(
    running: Running,
):
    stub = gateway_pb2_grpc.GatewayServiceStub(running.channel)
    request = pb.GetUsageRequest()
    request.end.FromJsonString("9999-12-31T23:59:59Z")
    answer = await stub.GetUsage(request, timeout=5)  # was INTERNAL: the window's end
    assert answer.end.ToJsonString() == "9999-12-31T23:59:59.999999Z"
    request.end.seconds += 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUsage(request, timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("end is not a valid timestamp")
    assert "Traceback" not in await running.log_text()


async def test_a_refused_call_logs_its_request_id_method_status_and_reason(running: Running):
    stub = gateway_pb2_grpc.GatewayServiceStub(running.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Query(
            pb.QueryRequest(query=pb.QuerySpec(prompt="a distinctive prompt", model="gpt-9"))
        )
    request_id = dict(await_trailers(caught.value))[REQUEST_ID_HEADER]
    await asyncio.sleep(0.05)
    [line] = [x for x in (await running.log_text()).splitlines() if request_id in x]
    assert f"call {request_id} Query refused: INVALID_ARGUMENT (" in line
    assert "gpt-9" in line  # the reason: the unknown model, and what is served
    assert "distinctive" not in line  # never the prompt


async def test_credentials_in_the_relay_url_are_never_printed(tmp_path: Path):
    sim = RelaySimulator(SimulatorSettings(latency_scale=0, api_key=RELAY_KEY))
    url = await sim.start()
    with_password = url.replace("http://", "http://svc:hunter2-in-the-url@")
    log = tmp_path / "gateway.log"
    with log.open("wb") as stderr:
        process, _ = await start_gateway_process(with_password, stderr=stderr)
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.read(2000), 5)).decode()
    finally:
        process.terminate()
        await process.wait()
        await sim.stop()
    text = await asyncio.to_thread(log.read_text)
    assert "svc:***@" in text and "svc:***@" in banner, (banner, text)
    assert "hunter2" not in text + banner


async def test_a_server_stream_written_with_context_write_still_streams(running: Running):
    """Health's Watch writes with context.write instead of yielding: still served."""
    watch = health_pb2_grpc.HealthStub(running.channel).Watch(health_pb2.HealthCheckRequest())
    first = await asyncio.wait_for(watch.read(), 5)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def test_python_m_server_help_prints_help_and_starts_nothing():
    for argument, code in (("--help", 0), ("--listen", 2)):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            argument,
            env={**ENV, "SWITCHYARD_LISTEN": "127.0.0.1:1"},  # would fail to bind, if started
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == code, err
        assert "SWITCHYARD_" in (out if code == 0 else err).decode()
        assert b"serving" not in out + err


async def test_the_banners_buf_curl_works_when_pasted(tmp_path: Path):
    sim = RelaySimulator(SimulatorSettings(latency_scale=0, api_key=RELAY_KEY))
    url = await sim.start()
    process, _ = await start_gateway_process(url, cwd=ROOT)
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.read(4000), 5)).decode()
        [command] = [line.strip() for line in banner.splitlines() if " curl " in line]
        assert command.startswith(".venv/bin/buf curl"), command  # make run's buf, pasteable
        pasted = await asyncio.create_subprocess_shell(
            command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(pasted.communicate(), 60)
        assert pasted.returncode == 0, err
        assert b'"end"' in out or b'"delta"' in out, out
    finally:
        process.terminate()
        await process.wait()
        await sim.stop()
