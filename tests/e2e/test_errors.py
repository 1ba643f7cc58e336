"""The error table of the README, end to end: status, message, and what was (not) sent."""

import socket

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from switchyard.v1 import gateway_pb2 as pb

from server.simulator import SimulatorSettings

from .conftest import RELAY_KEY, Gateway, details, query


async def rpc_error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value


def rich_details(error: grpc.aio.AioRpcError) -> list:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            return list(status.details)
    return []


@pytest.mark.parametrize("rpc", ["Route", "Query"])
async def test_unknown_model_lists_the_served_models_without_calling_the_relay(
    gateway: Gateway, rpc
):
    request = {"Route": pb.RouteRequest, "Query": pb.QueryRequest}[rpc](
        query=query("hi", model="gpt-5")
    )
    error = await rpc_error(getattr(gateway.stub, rpc)(request))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'gpt-5' is not served" in details(error)
    for name in ("claude-sonnet-4-20250514", "gpt-4.1", "gemini-2.5-flash", "deepseek-v3.2"):
        assert name in details(error)
    assert gateway.sim.stats.requests == 0


async def test_unknown_model_on_a_stream_is_refused_before_anything_is_sent(gateway: Gateway):
    call = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=query("hi", model="gpt-5")))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            received.append(message)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert received == []


async def test_empty_prompt_is_invalid_argument(gateway: Gateway):
    error = await rpc_error(gateway.stub.Query(pb.QueryRequest(query=pb.QuerySpec())))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "set prompt" in details(error)


async def test_wrong_relay_key_is_unauthenticated_and_never_shown(start_gateway):
    gateway = await start_gateway(env={"SWITCHYARD_RELAY_API_KEY": "wrong-key-abcdef"})
    error = await rpc_error(gateway.stub.Query(pb.QueryRequest(query=query("hi"))))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "SWITCHYARD_RELAY_API_KEY" in details(error) and "SWITCHYARD_RELAY_URL" in details(error)
    assert "wrong-key-abcdef" not in details(error)
    assert gateway.sim.stats.requests == 1  # final: no fallback to another model


async def test_relay_403_is_permission_denied(gateway: Gateway):
    error = await rpc_error(
        gateway.stub.Query(pb.QueryRequest(query=query("hi [[sim fault=403]]")))
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_unreachable_relay_is_unavailable_naming_the_models_tried(start_gateway):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        gateway = await start_gateway(relay_url=dead)
        error = await rpc_error(
            gateway.stub.Query(pb.QueryRequest(query=query("hi", model="gemini-2.5-flash")))
        )
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "gemini-2.5-flash" in details(error) and "gpt-4.1" in details(error)
    assert "could not be reached" in details(error)


async def test_5xx_on_every_model_is_unavailable_naming_them(gateway: Gateway):
    error = await rpc_error(
        gateway.stub.Query(
            pb.QueryRequest(query=query("hi [[sim fault=503]]", model="claude-sonnet-4-20250514"))
        )
    )
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    for name in ("claude-sonnet-4-20250514", "gpt-4.1", "gemini-2.5-flash"):
        assert f"{name}: HTTP 503" in details(error)
    assert "hi [[sim" not in details(error)  # the prompt never appears


async def test_exhausted_limiter_is_resource_exhausted_with_retry_info(start_gateway):
    gateway = await start_gateway(env={"SWITCHYARD_RELAY_RPM": "1", "SWITCHYARD_RELAY_BURST": "1"})
    await gateway.stub.Query(pb.QueryRequest(query=query("hi")))
    # a different prompt: a repeat of "hi" would be answered by the response cache
    error = await rpc_error(
        gateway.stub.Query(pb.QueryRequest(query=query("hi there")), timeout=2.0)
    )
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in" in details(error)
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in rich_details(error))
    assert 50 <= retry.retry_delay.seconds <= 60  # one request a minute: the next fits within 60 s
    assert gateway.sim.stats.requests == 1


async def test_blank_caller_metadata_is_refused(gateway: Gateway):
    error = await rpc_error(
        gateway.stub.Query(
            pb.QueryRequest(query=query("hi")), metadata=(("x-switchyard-caller", ""),)
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "x-switchyard-caller" in details(error)


async def test_a_bug_is_internal_with_a_request_id_and_nothing_else(gateway: Gateway, caplog):
    class Broken:
        async def query(self, call):
            raise RuntimeError("secret prompt text in a bug")

        def stream(self, call):
            raise RuntimeError("secret prompt text in a bug")

    object.__setattr__(gateway.app.pipeline, "handler", Broken())
    error = await rpc_error(gateway.stub.Query(pb.QueryRequest(query=query("hi"))))
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "request id" in details(error)
    assert "secret" not in details(error) and "Traceback" not in details(error)
    assert "secret" not in caplog.text


async def test_stream_of_a_relay_key_error(start_gateway):
    gateway = await start_gateway(sim_settings=SimulatorSettings(latency_scale=0, api_key="other"))
    call = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=query("hi")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert RELAY_KEY not in details(caught.value)
