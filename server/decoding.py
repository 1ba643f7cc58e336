"""Requests that do not decode: INVALID_ARGUMENT with a reason, never UNKNOWN and a traceback.

grpc decodes each request with the message's `FromString` before any handler
runs; a `DecodeError` there (bytes that are not the message, a string field
holding invalid UTF-8) would end the call as UNKNOWN and log a traceback at
ERROR, so any client could fill the log. Every handler gets a decoder that turns the error into an
`Undecodable` value, and a handler in front that answers it with
INVALID_ARGUMENT, a request id in the `x-switchyard-request-id` trailer and
one log line (request id, method, status, reason), as the RPC boundary does
for every other refusal. The bytes themselves never reach the log. The
handlers are wrapped once, when the services are registered (`add_service`),
so a call that decodes pays nothing for it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.boundary import REQUEST_ID_HEADER

log = logging.getLogger("switchyard")

_UTF8 = "UTF-8"


class Undecodable:
    """A request grpc could not decode, and why (said without its bytes)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _decoder(decode: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError as error:
            if _UTF8 in str(error):
                return Undecodable(
                    f"the request is not a valid {type_name}: a string field holds invalid"
                    " UTF-8; send text as UTF-8 (binary data belongs in bytes fields)"
                )
            return Undecodable(
                f"the request is not a valid {type_name}: its bytes do not decode as that"
                " message; send one serialized from the published .proto"
            )

    return tolerant


async def _refuse(
    request: Undecodable, context: grpc.aio.ServicerContext[Any, Any], method: str
) -> None:
    request_id = secrets.token_hex(8)
    log.info("call %s %s refused: INVALID_ARGUMENT (%s)", request_id, method, request.reason)
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, request.reason, ((REQUEST_ID_HEADER, request_id),)
    )


def tolerant_handler(handler: Any, method: str) -> Any:
    """`handler` with a decoder that never raises and a refusal of what it could not decode."""
    if handler.request_streaming or handler.request_deserializer is None:
        return handler  # a client stream decodes message by message, inside the handler
    decode = handler.request_deserializer
    owner = getattr(decode, "__self__", None)  # FromString is bound to the message class
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = descriptor.full_name if descriptor is not None else "request message"
    tolerant = _decoder(decode, type_name)
    if handler.response_streaming:
        behaviour: Any = handler.unary_stream

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _refuse(request, context, method)
                return
            answer = behaviour(request, context)
            if hasattr(answer, "__aiter__"):  # an async generator, as the gateway's
                async for response in answer:
                    yield response
            else:  # a coroutine that writes with context.write, as health's Watch
                await answer

        return handler._replace(request_deserializer=tolerant, unary_stream=streaming)
    unary: Any = handler.unary_unary

    async def single(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            await _refuse(request, context, method)
        return await unary(request, context)

    return handler._replace(request_deserializer=tolerant, unary_unary=single)


class _Registration:
    """What generated `add_*Servicer_to_server` functions call, keeping the handlers."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the same handlers come again, by name, just after."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        tolerant = {name: tolerant_handler(h, name) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, tolerant),)
        )
        self._server.add_registered_method_handlers(service, tolerant)


def add_service(server: grpc.aio.Server, add: Callable[[Any, Any], None], servicer: object) -> None:
    """Register `servicer` with a generated `add_*Servicer_to_server`, its handlers made
    tolerant (decided once, at start-up: nothing is added to each call's path)."""
    add(servicer, _Registration(server))
