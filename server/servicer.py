"""The four RPCs of switchyard.v1.GatewayService.

Each handler is thin: inside the RPC boundary (``boundary.py``: span,
draining, identity, every failure mapped to a status), proto -> domain
(convert.py), the pipeline facade, domain -> proto. No handler catches an
exception or reads metadata itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import assert_never

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server import convert
from server.boundary import Context, RpcBoundary
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import (
    Completion,
    ReasoningDelta,
    Request,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from server.pipeline import Pipeline
from server.pipeline.router import (
    LARGE_CALL_CHARS,
    LONG_CALL_MESSAGES,
    SLICE_MESSAGES,
    in_slices,
)
from server.settings import LimitSettings


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Serves Route, Query and StreamQuery through the pipeline, and GetUsage from the ledger."""

    def __init__(
        self,
        pipeline: Pipeline,
        boundary: RpcBoundary,
        clock: Clock = SYSTEM_CLOCK,
        limits: LimitSettings = convert.DEFAULT_LIMITS,
    ) -> None:
        self._pipeline = pipeline
        self._boundary = boundary
        self._clock = clock
        self._limits = limits  # the per-call bounds convert checks first
        # Large calls convert one at a time, one per loop turn (see `_request`).
        self._large = asyncio.Lock()

    async def _request(self, spec: pb.QuerySpec) -> Request:
        """The query as a Request; a large one converted in the large calls' lane.

        Converting a call at the bounds costs a few milliseconds. Several at once would
        all run in the same loop turn, and a health check, which needs a few turns,
        would wait for each of them in each turn: a large call converts while holding
        the lane, `SLICE_MESSAGES` messages a turn, and lets a turn pass before giving
        it up, so a turn holds at most one slice of a large conversion. Small calls
        never touch the lane, and convert in one step as before.
        """
        if len(spec.messages) <= LONG_CALL_MESSAGES and len(spec.prompt) <= LARGE_CALL_CHARS:
            return convert.request_from_proto(spec, self._limits)
        async with self._large:
            request = await in_slices(convert.request_steps(spec, SLICE_MESSAGES, self._limits))
            await asyncio.sleep(0)
            return request

    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:
        """Decide where the query would go and whether its budget admits it; call nothing."""
        async with self._boundary.enter("Route", context) as rpc:
            query = await self._request(request.query)
            preview = await self._pipeline.preview(query, rpc.identity)
            return pb.RouteResponse(route=convert.preview_to_proto(preview))

    async def Query(self, request: pb.QueryRequest, context: Context) -> pb.QueryResponse:
        """Answer the query in one response."""
        async with self._boundary.enter("Query", context) as rpc:
            call = rpc.open_call(await self._request(request.query))
            completion = await self._pipeline.handler.query(call)
            return convert.query_response(call, completion, self._clock.monotonic())

    async def StreamQuery(
        self,
        request: pb.StreamQueryRequest,
        context: Context,
    ) -> AsyncIterator[pb.StreamQueryResponse]:
        """Answer the query as a stream: start, deltas, end."""
        async with self._boundary.enter("StreamQuery", context) as rpc:
            call = rpc.open_call(await self._request(request.query))
            async with aclosing(self._pipeline.handler.stream(call)) as events:
                async for event in events:
                    match event:
                        case TextDelta(text=text):
                            yield convert.text_delta(text)
                        case StreamStart(model=model):
                            yield convert.stream_start(call, model)
                        case Completion():
                            yield convert.stream_end(call, event, self._clock.monotonic())
                        case ToolCallStart() | ToolCallDelta() | ToolCallEnd() | ReasoningDelta():
                            yield convert.stream_event(event)
                        case _:
                            assert_never(event)

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:
        """The calling tenant's spend, tokens, cache savings and budgets over a window."""
        async with self._boundary.enter("GetUsage", context) as rpc:
            start, end = convert.usage_window(request, self._clock.wall())
            tenant = await self._pipeline.tenant_of(rpc.identity, request.caller)
            report = await self._pipeline.usage(tenant, start, end)
            return convert.usage_response(report)

    async def ExportUsage(
        self, request: pb.ExportUsageRequest, context: Context
    ) -> AsyncIterator[pb.ExportUsageResponse]:
        """The calling tenant's calls of a window, oldest first, a page a message."""
        async with self._boundary.enter("ExportUsage", context) as rpc:
            start, end, size, after = convert.export_window(request, self._clock.wall())
            tenant = await self._pipeline.tenant_of(rpc.identity, request.caller)
            while True:
                rows = await self._pipeline.export(tenant, start, end, after, size)
                if not rows:
                    return
                after = (rows[-1].ended_at_us, rows[-1].request_id)
                yield pb.ExportUsageResponse(
                    calls=[convert.call_record(row) for row in rows],
                    next_page_token=convert.page_token(*after),
                )
                if len(rows) < size:
                    return
