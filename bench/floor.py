"""The floor: a bare ``grpc.aio`` forwarder with no stages, to measure our stack's least cost.

It implements ``switchyard.v1.GatewayService`` Query and StreamQuery and does nothing
but translate: ``QueryRequest.query.prompt`` becomes one OpenAI chat request (``model``,
``messages``, ``max_tokens``) sent to the relay, and the answer comes back as a
``QueryResponse``; StreamQuery sends a ``start``, one ``delta`` per SSE content chunk
(never coalesced), then an ``end`` with the usage. There is no routing, limiting,
retry, pricing or tracing, so whatever Switchyard spends beyond this is its pipeline.

The HTTP client is a choice, so the same forwarder measures each transport:

* ``aiohttp``: raw aiohttp, one ``ClientSession`` (the floor the targets refer to);
* ``httpx-aiohttp``: httpx's API over the ``httpx-aiohttp`` transport;
* ``httpx``: httpx with its default transport (httpcore).

Run it as ``python -m bench.floor --relay-url http://127.0.0.1:PORT/v1 --client aiohttp``;
it prints ``READY <port>`` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import grpc
import httpx
import orjson
from switchyard.v1 import gateway_pb2, gateway_pb2_grpc

CLIENTS = ("aiohttp", "httpx-aiohttp", "httpx")
_HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-key"}
_FINISH: dict[str, gateway_pb2.FinishReason.ValueType] = {
    "stop": gateway_pb2.FINISH_REASON_STOP,
    "length": gateway_pb2.FINISH_REASON_LENGTH,
    "content_filter": gateway_pb2.FINISH_REASON_CONTENT_FILTER,
}
_UNKNOWN = gateway_pb2.FINISH_REASON_UNSPECIFIED
_DATA = b"data: "
_DONE = b"[DONE]"
DEFAULT_MAX_TOKENS = 1024


class Forwarder(Protocol):
    """One HTTP client's way of posting a chat request to the relay."""

    async def complete(self, body: bytes) -> dict[str, Any]:
        """POST a non-streaming request and return its decoded JSON answer."""
        ...

    def lines(self, body: bytes) -> AsyncIterator[bytes]:
        """POST a streaming request and yield the SSE lines of its answer."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class AiohttpForwarder:
    """Raw aiohttp: one session, unlimited connections (the gateway must not queue)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            headers=_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def complete(self, body: bytes) -> dict[str, Any]:
        async with self._session.post(self._url, data=body) as response:
            response.raise_for_status()
            answer: dict[str, Any] = orjson.loads(await response.read())
            return answer

    async def lines(self, body: bytes) -> AsyncIterator[bytes]:
        async with self._session.post(self._url, data=body) as response:
            response.raise_for_status()
            async for line in response.content:
                yield line

    async def close(self) -> None:
        await self._session.close()


class HttpxForwarder:
    """httpx's client API over a chosen transport (its default one, or httpx-aiohttp)."""

    def __init__(self, url: str, transport: str) -> None:
        self._url = url
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        timeout = httpx.Timeout(None)
        if transport == "httpx-aiohttp":
            from httpx_aiohttp import HttpxAiohttpClient  # noqa: PLC0415 - only this variant

            self._client: httpx.AsyncClient = HttpxAiohttpClient(
                headers=_HEADERS, limits=limits, timeout=timeout
            )
        else:
            self._client = httpx.AsyncClient(headers=_HEADERS, limits=limits, timeout=timeout)

    async def complete(self, body: bytes) -> dict[str, Any]:
        response = await self._client.post(self._url, content=body)
        response.raise_for_status()
        answer: dict[str, Any] = orjson.loads(response.content)
        return answer

    async def lines(self, body: bytes) -> AsyncIterator[bytes]:
        async with self._client.stream("POST", self._url, content=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                yield line.encode()

    async def close(self) -> None:
        await self._client.aclose()


def make_forwarder(client: str, relay_url: str) -> Forwarder:
    """The forwarder for one of :data:`CLIENTS`."""
    url = relay_url.rstrip("/") + "/chat/completions"
    if client == "aiohttp":
        return AiohttpForwarder(url)
    if client in ("httpx", "httpx-aiohttp"):
        return HttpxForwarder(url, client)
    raise ValueError(f"unknown client {client!r}; choose from {', '.join(CLIENTS)}")


def _body(query: gateway_pb2.QuerySpec, stream: bool) -> bytes:
    request: dict[str, Any] = {
        "model": query.model,
        "messages": [{"role": "user", "content": query.prompt}],
        "max_tokens": query.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return orjson.dumps(request)


def _usage(usage: dict[str, Any] | None) -> gateway_pb2.Usage:
    usage = usage or {}
    return gateway_pb2.Usage(
        input_tokens=usage.get("prompt_tokens", 0),
        output_tokens=usage.get("completion_tokens", 0),
    )


class FloorServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Query and StreamQuery, forwarded and translated; the other RPCs are not the floor's."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    async def Route(
        self, request: gateway_pb2.RouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.RouteResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the floor does not route")
        raise AssertionError("abort raises")

    async def GetUsage(
        self, request: gateway_pb2.GetUsageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GetUsageResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the floor keeps no usage")
        raise AssertionError("abort raises")

    async def ExportUsage(
        self, request: gateway_pb2.ExportUsageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.ExportUsageResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the floor keeps no ledger")
        yield gateway_pb2.ExportUsageResponse()  # pragma: no cover (abort raises)

    async def Query(
        self, request: gateway_pb2.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.QueryResponse:
        answer = await self._forwarder.complete(_body(request.query, stream=False))
        choice = answer["choices"][0]
        return gateway_pb2.QueryResponse(
            content=choice["message"]["content"],
            model=request.query.model,
            provider="openai",
            usage=_usage(answer.get("usage")),
            finish_reason=_FINISH.get(choice.get("finish_reason") or "", _UNKNOWN),
        )

    async def StreamQuery(
        self, request: gateway_pb2.StreamQueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.StreamQueryResponse]:
        model = request.query.model
        started = False
        finish: gateway_pb2.FinishReason.ValueType = gateway_pb2.FINISH_REASON_UNSPECIFIED
        usage = gateway_pb2.Usage()
        async for line in self._forwarder.lines(_body(request.query, stream=True)):
            if not line.startswith(_DATA):
                continue
            data = line[len(_DATA) :].strip()
            if data == _DONE:
                break
            event = orjson.loads(data)
            if event.get("usage"):
                usage = _usage(event["usage"])
            for choice in event.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    if not started:
                        started = True
                        yield gateway_pb2.StreamQueryResponse(
                            start=gateway_pb2.StreamStart(model=model, provider="openai")
                        )
                    yield gateway_pb2.StreamQueryResponse(delta=gateway_pb2.TextDelta(text=text))
                if choice.get("finish_reason"):
                    finish = _FINISH.get(choice["finish_reason"], _UNKNOWN)
        yield gateway_pb2.StreamQueryResponse(
            end=gateway_pb2.StreamEnd(usage=usage, finish_reason=finish)
        )


@asynccontextmanager
async def _forwarder(client: str, relay_url: str) -> AsyncIterator[Forwarder]:
    forwarder = make_forwarder(client, relay_url)
    try:
        yield forwarder
    finally:
        await forwarder.close()


async def serve(listen: str, relay_url: str, client: str) -> None:
    """Serve until SIGTERM or SIGINT, printing ``READY <port>`` once bound."""
    async with _forwarder(client, relay_url) as forwarder:
        server = grpc.aio.server()
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(FloorServicer(forwarder), server)
        port = server.add_insecure_port(listen)
        await server.start()
        print(f"READY {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(grace=1)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m bench.floor --relay-url URL [--client NAME] [--listen ADDR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--relay-url", required=True)
    parser.add_argument("--client", choices=CLIENTS, default="aiohttp")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.relay_url, args.client))


if __name__ == "__main__":
    main()
