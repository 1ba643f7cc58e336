"""The asyncio client: the same methods as the sync client, awaited.

Example::

    from switchyard_client import AsyncClient

    async with AsyncClient("127.0.0.1:50051", caller="search") as client:
        answer = await client.query("What is the capital of France?", task="fast")
        async with client.stream("Explain CRDTs") as stream:
            async for text in stream:
                print(text, end="", flush=True)
        print(stream.summary.cost)

Create the client inside the event loop that uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Unpack

from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from switchyard_client.base import ClientBase, usage_request
from switchyard_client.conversation import ToolResults
from switchyard_client.errors import translated
from switchyard_client.requests import QueryOptions, Turn, query_spec, reply_spec
from switchyard_client.results import Answer, Route
from switchyard_client.stream import AsyncTextStream


class AsyncClient(ClientBase):
    """An asyncio client for switchyard.v1.GatewayService (see ClientBase for options)."""

    def _open(self) -> None:
        self._channel = self._connection.open_aio()
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)  # typed as the async stub
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def query(
        self,
        prompt: str = "",
        /,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **options: Unpack[QueryOptions],
    ) -> Answer:
        """One complete answer: text (or tool calls), model, usage, exact cost and attempts."""
        return await self._query(query_spec(prompt, options), timeout, metadata)

    async def reply(
        self,
        previous: Turn,
        results: ToolResults | None = None,
        /,
        *,
        prompt: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **overrides: Unpack[QueryOptions],
    ) -> Answer:
        """Follow an answer up: the same query with the answer, the tool `results` (by
        call id) and `prompt` appended; `overrides` change options (e.g. tool_choice)."""
        spec = reply_spec(previous, results, prompt, overrides)
        return await self._query(spec, timeout, metadata)

    async def _query(
        self, spec: pb.QuerySpec, timeout: float | None, metadata: Mapping[str, str] | None
    ) -> Answer:
        with translated():
            response = await self._stub.Query(
                pb.QueryRequest(query=spec),
                timeout=self._timeout(timeout),
                metadata=self._metadata(metadata),
            )
        return Answer.from_proto(response, spec)

    def stream(
        self,
        prompt: str = "",
        /,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **options: Unpack[QueryOptions],
    ) -> AsyncTextStream:
        """The answer as an async iterator of text deltas (`.events()` for tool calls and
        reasoning too); `.summary` once it is read to the end."""
        return self._stream(query_spec(prompt, options), timeout, metadata)

    def stream_reply(
        self,
        previous: Turn,
        results: ToolResults | None = None,
        /,
        *,
        prompt: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **overrides: Unpack[QueryOptions],
    ) -> AsyncTextStream:
        """reply(), streamed."""
        return self._stream(reply_spec(previous, results, prompt, overrides), timeout, metadata)

    def _stream(
        self, spec: pb.QuerySpec, timeout: float | None, metadata: Mapping[str, str] | None
    ) -> AsyncTextStream:
        call = self._stub.StreamQuery(
            pb.StreamQueryRequest(query=spec),
            timeout=self._timeout(timeout),
            metadata=self._metadata(metadata),
        )
        return AsyncTextStream(call, spec)

    async def route(
        self,
        prompt: str = "",
        /,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **options: Unpack[QueryOptions],
    ) -> Route:
        """Where the query would go and its cost range; no model is called."""
        request = pb.RouteRequest(query=query_spec(prompt, options))
        with translated():
            response = await self._stub.Route(
                request,
                timeout=self._timeout(timeout, control=True),
                metadata=self._metadata(metadata),
            )
        return Route.from_proto(response.route)

    async def usage(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        tenant: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> pb.GetUsageResponse:
        """This caller's usage over [start, end) (default: the last 24 hours).

        `tenant` reads another tenant's: only with the admin credential.
        """
        with translated():
            return await self._stub.GetUsage(
                usage_request(start, end, tenant),
                timeout=self._timeout(timeout, control=True),
                metadata=self._metadata(metadata),
            )

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gateway's health as grpc.health.v1 names it, for example "SERVING"."""
        with translated():
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=self._timeout(timeout, control=True),
                metadata=self._metadata(None),
            )
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
