"""A fake GatewayService on a real loopback socket: the gRPC seam of the client.

It answers with canned messages or a canned failure, and records what each
call carried (metadata, deadline), so the client and the CLI are tested on
exactly what crosses the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc


@dataclass
class Failure:
    """A status to end calls with, and its trailing metadata."""

    code: grpc.StatusCode
    message: str
    request_id: str | None = None
    details: list[any_pb2.Any] = field(default_factory=list)

    def trailers(self) -> tuple[tuple[str, str | bytes], ...]:
        pairs: list[tuple[str, str | bytes]] = []
        if self.request_id:
            pairs.append(("x-switchyard-request-id", self.request_id))
        if self.details:
            status = status_pb2.Status(
                code=self.code.value[0], message=self.message, details=self.details
            )
            pairs.append(("grpc-status-details-bin", status.SerializeToString()))
        return tuple(pairs)


@dataclass
class Seen:
    """What one call carried."""

    method: str
    request: object
    metadata: dict[str, str]
    time_remaining: float | None


class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Answers every RPC with `answers[method]`, or ends it with `failure`."""

    def __init__(self) -> None:
        self.answers: dict[str, object] = {}
        self.failure: Failure | None = None
        self.seen: list[Seen] = []

    def _serve(self, method: str, request: object, context: grpc.ServicerContext) -> object:
        metadata = {key: str(value) for key, value in context.invocation_metadata()}
        self.seen.append(Seen(method, request, metadata, context.time_remaining()))
        if self.failure is not None:
            context.set_trailing_metadata(self.failure.trailers())
            context.abort(self.failure.code, self.failure.message)
        return self.answers[method]

    def Route(self, request, context):
        return self._serve("Route", request, context)

    def Query(self, request, context):
        return self._serve("Query", request, context)

    def StreamQuery(self, request, context) -> Iterator[pb.StreamQueryResponse]:
        yield from self._serve("StreamQuery", request, context)  # type: ignore[misc]

    def GetUsage(self, request, context):
        return self._serve("GetUsage", request, context)

    def ExportUsage(self, request, context) -> Iterator[pb.ExportUsageResponse]:
        """Pages from `answers["ExportUsage"]`, resumed after `page_token` (the index of
        the page it came with); `break_after` pages, then UNAVAILABLE, once."""
        pages = self._serve("ExportUsage", request, context)
        first = int(request.page_token) + 1 if request.page_token else 0
        for index in range(first, len(pages)):  # type: ignore[arg-type]
            if index == self.answers.get("ExportUsage.break_at"):
                del self.answers["ExportUsage.break_at"]
                context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway went away")
            yield pb.ExportUsageResponse(calls=pages[index], next_page_token=str(index))  # type: ignore[index]


@dataclass
class RunningFake:
    """A started fake, its health service and its address."""

    gateway: FakeGateway
    health: health.HealthServicer
    server: grpc.Server
    address: str


def start_fake(credentials: grpc.ServerCredentials | None = None) -> RunningFake:
    """Serve a FakeGateway on a free loopback port (TLS when given credentials)."""
    gateway = FakeGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(gateway, server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return RunningFake(gateway, checker, server, f"127.0.0.1:{port}")


def packed(message) -> any_pb2.Any:
    """A message packed for google.rpc.Status details."""
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def retry_info(seconds: float) -> any_pb2.Any:
    """RetryInfo with the given delay, packed."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return packed(error_details_pb2.RetryInfo(retry_delay=delay))
