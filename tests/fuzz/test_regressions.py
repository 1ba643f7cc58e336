"""What the fuzzer found, each with its exact input, against `python -m server` as its own process.

Each was an answer outside the documented statuses, with the exception's
Python type in the message and a traceback at ERROR in the gateway's log for
every call, so any client could fill the log:

* reflection (a client stream, which the RPC boundary's decoding did not
  cover) answered bytes that do not decode with
  `UNKNOWN: Unexpected <class 'google.protobuf.message.DecodeError'>`;
* health's List, which grpcio-health-checking's asyncio servicer does not
  implement, answered `UNIMPLEMENTED: Unexpected <class 'NotImplementedError'>`;
* a method nobody serves, called with a deadline that passed as grpc
  answered UNIMPLEMENTED, logged the same traceback from grpc's own
  refusal: unknown methods are now refused by the gateway, like the rest;
* a refusal whose call ended while it was being sent (Route, a string field
  holding invalid UTF-8, a deadline of a few milliseconds; once in 12,000
  calls) logged `ExecuteBatchError raised in core` with a traceback: grpc
  had not yet noticed the deadline. That race cannot be replayed on demand,
  so its test gives the boundary what grpc gives it then;
* the same race met a streamed answer (reflection's, the deadline passing
  as its first message was written; once in a full fuzzing run): streams
  are now written by the boundary, which lets such a call go the same way.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc._cython.cygrpc import ExecuteBatchError  # type: ignore[import-not-found]
from grpc_reflection.v1alpha import reflection_pb2

from server.boundary import REQUEST_ID_HEADER, send_messages, send_status
from tests.fuzz.conftest import FuzzedGateway
from tests.helpers import until

REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
LIST_SERVICES = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()


@pytest.fixture
async def channel(fuzzed_gateway: FuzzedGateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(fuzzed_gateway.address) as channel:
        yield channel


async def _one_log_line(gateway: FuzzedGateway, error: grpc.aio.AioRpcError) -> str:
    """The one line the gateway logged for the refused call (it is written before the status
    is sent; the file may lag behind it)."""
    trailers = dict(error.trailing_metadata() or ())
    request_id = str(trailers[REQUEST_ID_HEADER])

    async def logged() -> bool:
        return request_id in await gateway.log_text()

    await until(logged)
    text = await gateway.log_text()
    assert "Traceback" not in text and " ERROR " not in text, text
    lines = [line for line in text.splitlines() if request_id in line]
    assert len(lines) == 1, lines
    return lines[0]


async def test_reflection_refuses_a_message_that_does_not_decode_after_answering_the_good_ones(
    fuzzed_gateway: FuzzedGateway, channel: grpc.aio.Channel
):
    call: Any = channel.stream_stream(REFLECTION)  # bytes as they are, both ways
    for payload, why in (
        (b"\xff\xff\xff", "do not decode"),  # a tag whose varint never ends
        (b"\x1a\x02\xff\xfe", "invalid UTF-8"),  # file_by_filename holding 0xff 0xfe
    ):
        answers: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for answer in call(iter([LIST_SERVICES, payload]), timeout=10):
                answers.append(answer)
        error = caught.value
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert why in (error.details() or "")
        assert "grpc.reflection.v1alpha.ServerReflectionRequest" in (error.details() or "")
        # The message before the bad one was answered: decoding goes message by message.
        [first] = answers
        listed = reflection_pb2.ServerReflectionResponse.FromString(first).list_services_response
        assert "switchyard.v1.GatewayService" in [service.name for service in listed.service]
        line = await _one_log_line(fuzzed_gateway, error)
        assert re.search(r"ServerReflectionInfo refused: INVALID_ARGUMENT \(", line), line


async def test_health_list_which_nobody_implements_is_unimplemented_said_plainly(
    fuzzed_gateway: FuzzedGateway, channel: grpc.aio.Channel
):
    health_list: Any = channel.unary_unary("/grpc.health.v1.Health/List")
    for payload in (b"", b"\xff\xff\xff"):  # its request is not even decoded
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_list(payload, timeout=10)
        error = caught.value
        assert error.code() is grpc.StatusCode.UNIMPLEMENTED
        assert error.details() == "grpc.health.v1.Health/List is not served by this gateway"
        line = await _one_log_line(fuzzed_gateway, error)
        assert "List refused: UNIMPLEMENTED (grpc.health.v1.Health/List is not served" in line


class EndedCall:
    """A servicer context whose call's deadline passed in grpc's core a moment ago."""

    async def abort(self, code: grpc.StatusCode, details: str, metadata: object) -> None:
        raise ExecuteBatchError('Failed "execute_batch"')


async def test_a_status_for_a_call_that_just_ended_lets_the_call_go_quietly():
    # Cancelled is what grpc logs at DEBUG; the ExecuteBatchError it logged with a traceback.
    with pytest.raises(asyncio.CancelledError):
        await send_status(EndedCall(), grpc.StatusCode.INVALID_ARGUMENT, "bad request", ())  # type: ignore[arg-type]


class EndedStream:
    """A servicer context whose stream's deadline passed in grpc's core as it was written."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def write(self, message: str) -> None:
        if self.written:
            raise ExecuteBatchError('Failed "execute_batch"')
        self.written.append(message)


async def test_a_stream_whose_call_just_ended_lets_the_call_go_quietly_and_is_closed():
    closed: list[bool] = []

    async def answers() -> AsyncIterator[str]:
        try:
            for number in range(5):
                yield f"answer {number}"
        finally:
            closed.append(True)

    context = EndedStream()
    with pytest.raises(asyncio.CancelledError):
        await send_messages(context, answers())  # type: ignore[arg-type]
    assert context.written == ["answer 0"]
    assert closed == [True]  # given back at once, not when the collector finds it


async def test_a_method_nobody_serves_is_unimplemented_naming_it_with_one_log_line(
    fuzzed_gateway: FuzzedGateway, channel: grpc.aio.Channel
):
    for shape in ("unary_unary", "unary_stream", "stream_stream"):
        call: Any = getattr(channel, shape)("/switchyard.v1.GatewayService/db")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if shape == "unary_unary":
                await call(b"\xff\xff\xff", timeout=10)
            else:
                request = iter([b"\xff"]) if shape == "stream_stream" else b"\xff"
                async for _ in call(request, timeout=10):
                    pass
        error = caught.value
        assert error.code() is grpc.StatusCode.UNIMPLEMENTED, shape
        assert (error.details() or "").startswith(
            "'/switchyard.v1.GatewayService/db' is not a method of this gateway; it serves"
            " switchyard.v1.GatewayService, switchyard.admin.v1.AdminService"
        )
        line = await _one_log_line(fuzzed_gateway, error)
        assert "(unknown method) refused: UNIMPLEMENTED ('/switchyard.v1.GatewayService/db'" in line
