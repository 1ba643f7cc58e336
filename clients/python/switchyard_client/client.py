"""The sync client: one blocking method per RPC, plus the standard health check.

Example::

    from switchyard_client import Client

    with Client("127.0.0.1:50051", caller="search") as client:
        answer = client.query("What is the capital of France?", task="fast")
        print(answer.text, answer.model, answer.cost)

Every method raises :class:`~switchyard_client.errors.SwitchyardError`
subclasses; the channel is safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Unpack

from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from switchyard_client.base import ClientBase, export_request, usage_request
from switchyard_client.conversation import ToolResults
from switchyard_client.errors import DeadlineExceededError, UnavailableError, translated
from switchyard_client.requests import QueryOptions, Turn, query_spec, reply_spec
from switchyard_client.results import Answer, Route
from switchyard_client.stream import TextStream


class Client(ClientBase):
    """A blocking client for switchyard.v1.GatewayService (see ClientBase for options)."""

    def _open(self) -> None:
        self._channel = self._connection.open()
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def query(
        self,
        prompt: str = "",
        /,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **options: Unpack[QueryOptions],
    ) -> Answer:
        """One complete answer: text (or tool calls), model, usage, exact cost and attempts."""
        return self._query(query_spec(prompt, options), timeout, metadata)

    def reply(
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
        return self._query(reply_spec(previous, results, prompt, overrides), timeout, metadata)

    def _query(
        self, spec: pb.QuerySpec, timeout: float | None, metadata: Mapping[str, str] | None
    ) -> Answer:
        with translated():
            response = self._stub.Query(
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
    ) -> TextStream:
        """The answer as an iterator of text deltas (`.events()` for tool calls and
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
    ) -> TextStream:
        """reply(), streamed."""
        return self._stream(reply_spec(previous, results, prompt, overrides), timeout, metadata)

    def _stream(
        self, spec: pb.QuerySpec, timeout: float | None, metadata: Mapping[str, str] | None
    ) -> TextStream:
        call = self._stub.StreamQuery(
            pb.StreamQueryRequest(query=spec),
            timeout=self._timeout(timeout),
            metadata=self._metadata(metadata),
        )
        return TextStream(call, spec)

    def route(
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
            response = self._stub.Route(
                request,
                timeout=self._timeout(timeout, control=True),
                metadata=self._metadata(metadata),
            )
        return Route.from_proto(response.route)

    def usage(
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
            return self._stub.GetUsage(
                usage_request(start, end, tenant),
                timeout=self._timeout(timeout, control=True),
                metadata=self._metadata(metadata),
            )

    def export(
        self,
        *,
        start: datetime,
        end: datetime | None = None,
        page_size: int = 0,
        tenant: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        retries: int = 3,
    ) -> Iterator[pb.CallRecord]:
        """Every call of this caller that ended in [start, end), oldest first.

        `tenant` exports another tenant's calls: only with the admin credential.

        Pages arrive as the gateway reads them; when the stream breaks with a
        retryable status, the export resumes after the last page received, so
        no call is lost or repeated (at most `retries` times in a row).
        """
        token, failures = "", 0
        while True:
            call = self._stub.ExportUsage(
                export_request(start, end, page_size, token, tenant),
                timeout=self._timeout(timeout),
                metadata=self._metadata(metadata),
            )
            try:
                with translated():
                    for page in call:
                        failures = 0
                        yield from page.calls
                        token = page.next_page_token
                return
            except (UnavailableError, DeadlineExceededError):
                failures += 1
                if failures > retries:
                    raise

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gateway's health as grpc.health.v1 names it, for example "SERVING"."""
        with translated():
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=self._timeout(timeout, control=True),
                metadata=self._metadata(None),
            )
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
