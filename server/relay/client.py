"""The relay client: one pooled httpx transport shared by every call.

Requests are httpx Requests sent straight through the transport (httpx's
transport API): `AsyncClient.send` would add cookie-jar extraction,
redirect and auth handling that a single relay never needs, measured at about
100 us of CPU per call (15% of the gateway's cost per request).

This module is the single point where transport failures (httpx exceptions)
and non-2xx answers become Switchyard's RelayErrors; nothing above it ever
sees an httpx exception. It knows nothing of retries or fallback: it sends
one request and reports exactly what came back, including the usage of an
answer that broke off half-way, so that every billed token is accounted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from server.domain import Completion, Request, StreamEvent, TextDelta, Usage
from server.errors import (
    RelayConnectError,
    RelayError,
    RelayProtocolError,
    RelayTimeoutError,
    classify,
)
from server.relay.sse import SSEDecoder
from server.relay.transport import HEARD, READ_BODY, AiohttpTransport, read_body
from server.relay.watch import EXPIRED_SILENT, RequestWatch, Watched
from server.relay.wires import WIRES, StreamDecoder
from server.tokens import request_tokens, text_tokens

if TYPE_CHECKING:
    from server.domain import ModelSpec
    from server.settings import RelaySettings

_UNREACHABLE = "the relay could not be reached; the operator should check SWITCHYARD_RELAY_URL"


def _silent(seconds: float) -> str:
    return f"the relay sent nothing for {seconds:g}s; it may be stalled"


class relay_errors:  # noqa: N801 - used as a function: `with relay_errors(timeout):`
    """Translate httpx's exceptions into RelayErrors: the one place it happens.

    A class rather than a `contextlib.contextmanager` generator: it is entered for
    every relay request, where a generator's set-up cost shows.
    """

    __slots__ = ("_read_timeout",)

    def __init__(self, read_timeout: float) -> None:
        self._read_timeout = read_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, httpx.TransportError):
            return
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)):
            raise RelayConnectError(_UNREACHABLE) from None
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            raise RelayTimeoutError(_silent(self._read_timeout)) from None
        if isinstance(exc, httpx.PoolTimeout):
            raise RelayTimeoutError("no connection to the relay came free in time") from None
        raise RelayProtocolError(
            "the relay closed the connection before the answer was complete"
        ) from None


class RelayClient:
    """Sends completions to the relay in the wire format of each model."""

    __slots__ = ("_base_url", "_headers", "_settings", "_transport", "_urls", "_watch")

    def __init__(
        self,
        base_url: str,
        settings: RelaySettings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._base_url = base_url.rstrip("/")
        self._transport = transport or AiohttpTransport(settings.max_connections)
        self._watch = RequestWatch()  # the time limits of the requests in flight
        common = {
            "content-type": "application/json",
            "accept-encoding": "identity",  # streams must not wait on a compressor
            "user-agent": "switchyard",
        }
        self._urls = {name: httpx.URL(self._base_url + wire.path) for name, wire in WIRES.items()}
        # Built once per wire, with the Host header httpx would add: httpx copies an
        # `httpx.Headers` without normalising each header again, and a request built
        # from a stream (see `_request`) skips httpx's header defaulting altogether.
        self._headers = {
            name: httpx.Headers(
                {"host": self._urls[name].netloc.decode("ascii"), **common}
                | wire.headers(settings.api_key)
            )
            for name, wire in WIRES.items()
        }

    @property
    def base_url(self) -> str:
        """The relay's base URL, for logs and traces (it holds no credential)."""
        return self._base_url

    def _request(
        self,
        model: ModelSpec,
        request: Request,
        max_tokens: int,
        *,
        stream: bool,
        time_limit: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        wire = WIRES[model.wire]
        connect = min(self._settings.connect_timeout, time_limit)
        # No read timeout for the transport: the client's watch keeps the relay's silence
        # (and a unary try's limit in all) for every request (watch.py).
        extensions: dict[str, object] = {
            "timeout": {"connect": connect, "read": None, "write": None, "pool": connect}
        }
        if not stream:
            extensions[READ_BODY] = True
        body = wire.encode(request, model, max_tokens, stream)
        headers = httpx.Headers(self._headers[model.wire])
        headers["content-length"] = str(len(body))
        if extra_headers:
            # One by one: `Headers.update` builds a Headers of them first (5 us, against
            # 1.4 us a header set).
            for name, value in extra_headers.items():
                headers[name] = value
        # `stream=` rather than `content=`: the same request, with the Host and
        # Content-Length headers set here instead of by httpx's defaulting, which
        # looked each header up again (measured: 11 us of a request's 14).
        return httpx.Request(
            "POST",
            self._urls[model.wire],
            stream=httpx.ByteStream(body),
            headers=headers,
            extensions=extensions,
        )

    async def complete(
        self,
        model: ModelSpec,
        request: Request,
        max_tokens: int,
        time_limit: float,
        *,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Completion:
        """One unary completion, bounded by `time_limit` seconds in all.

        `extra_headers` go along with the request (trace context, for one).
        """
        http_request = self._request(
            model,
            request,
            max_tokens,
            stream=False,
            time_limit=time_limit,
            extra_headers=extra_headers,
        )
        # Both limits are kept by the client's watch, not a timer each (see watch.py).
        silence = min(self._settings.read_timeout, time_limit)
        watched = self._watch.watch(silence, time_limit)
        http_request.extensions[HEARD] = watched.heard
        try:
            with relay_errors(silence):
                response = await self._transport.handle_async_request(http_request)
                watched.heard()
                body = read_body(response)  # the aiohttp transport's: read and released
                if body is None:
                    try:
                        body = await _body(response, watched)
                    finally:
                        await response.aclose()
        except asyncio.CancelledError:
            if not watched.timed_out():
                raise
            if watched.expired == EXPIRED_SILENT:
                raise RelayTimeoutError(_silent(silence)) from None
            raise RelayTimeoutError(f"the relay did not answer within {time_limit:.3g}s") from None
        finally:
            self._watch.done(watched)
        if response.status_code >= 300:
            raise self._refusal(response.status_code, response.headers, body)
        answer = WIRES[model.wire].decode(body)
        usage = answer.usage
        if usage is None:
            usage = _estimate(request_tokens(request), answer.text)
        return Completion(
            model, answer.text, usage, answer.finish_reason, answer.tool_calls, answer.reasoning
        )

    def stream(
        self,
        model: ModelSpec,
        request: Request,
        max_tokens: int,
        time_limit: float,
        *,
        extra_headers: Mapping[str, str] | None = None,
    ) -> RelayStream:
        """One streamed completion; iterate it for text, then one Completion."""
        return RelayStream(
            self, model, request, max_tokens, time_limit=time_limit, extra_headers=extra_headers
        )

    def _refusal(self, status: int, headers: httpx.Headers, body: bytes) -> RelayError:
        """Classify a non-2xx answer, first scrubbing our key from its body."""
        key = self._settings.api_key.encode()
        if key and key in body:
            body = body.replace(key, b"[redacted]")
        return classify(status, headers, body)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self._watch.close()
        await self._transport.aclose()


class RelayStream:
    """One streamed answer from the relay.

    Iterating yields TextDeltas (each the text of one socket read), the
    tool-call and reasoning events in the order they came, and finally one
    Completion holding the complete tool calls and reasoning. Whether the
    stream completes, fails or is cancelled, `usage` afterwards says what the
    relay billed: its reported usage, or an estimate from what was received
    (flagged `estimated`).
    """

    __slots__ = (
        "_client",
        "_decoder",
        "_extra_headers",
        "_max_tokens",
        "_model",
        "_request",
        "_text",
        "_time_limit",
    )

    def __init__(
        self,
        client: RelayClient,
        model: ModelSpec,
        request: Request,
        max_tokens: int,
        *,
        time_limit: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._client = client
        self._model = model
        self._request = request
        self._max_tokens = max_tokens
        self._time_limit = time_limit
        self._extra_headers = extra_headers
        self._decoder: StreamDecoder | None = None
        self._text: list[str] = []

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._text)

    @property
    def usage(self) -> Usage:
        """Tokens billed for what was received so far.

        The relay's closing usage report is billed as it is, even when the
        stream broke after it. A provisional report (Anthropic's message_start)
        counts unless more text arrived than it covers; then, or with no report
        at all, the received text is estimated and flagged. Nothing received,
        nothing billed.
        """
        decoder = self._decoder
        if decoder is None:
            return Usage()
        reported = decoder.usage
        if reported is not None and (decoder.done or decoder.usage_final):
            return reported
        received = text_tokens("".join(self._text)) if self._text else 0
        if reported is not None:
            if received <= reported.output_tokens:
                return reported
            return dataclasses.replace(reported, output_tokens=received, estimated=True)
        input_tokens = decoder.input_tokens
        if input_tokens is None:
            if not received:
                return Usage()
            return Usage(request_tokens(self._request), received, estimated=True)
        return Usage(
            input_tokens,
            received,
            estimated=True,
            cached_input_tokens=decoder.cached_input_tokens,
        )

    async def __aiter__(self) -> AsyncGenerator[StreamEvent, None]:
        client = self._client
        http_request = client._request(
            self._model,
            self._request,
            self._max_tokens,
            stream=True,
            time_limit=self._time_limit,
            extra_headers=self._extra_headers,
        )
        # The relay's silence is kept by the client's watch, as a unary try's (watch.py):
        # between two reads, not while an event is with the caller.
        silence = min(client._settings.read_timeout, self._time_limit)
        watched = client._watch.watch(silence, math.inf)
        try:
            with relay_errors(silence):
                response = await client._transport.handle_async_request(http_request)
            watched.heard()
            try:
                if response.status_code >= 300:
                    with relay_errors(silence):
                        body = await response.aread()
                    raise client._refusal(response.status_code, response.headers, body)
                decoder = self._decoder = WIRES[self._model.wire].stream_decoder()
                sse = SSEDecoder()
                text = self._text
                with relay_errors(silence):
                    # The transport's byte stream itself: with identity encoding, httpx's
                    # decoding and re-chunking wrappers would only add work per chunk.
                    async for chunk in response.stream:  # type: ignore[union-attr]
                        watched.heard()  # any chunk, a keep-alive comment as well
                        delta = decoder.feed(sse.feed(chunk))
                        # An event with the caller is the caller's time, not the relay's
                        # silence: unwatched until the caller asks for the next.
                        if delta:
                            text.append(delta)
                            watched.away()
                            yield TextDelta(delta)
                            watched.heard()
                        elif decoder.events:  # tool calls or reasoning: in order, with text
                            pending = decoder.events[:]
                            decoder.events.clear()
                            for event in pending:
                                if type(event) is TextDelta:
                                    text.append(event.text)
                                watched.away()
                                yield event
                                watched.heard()
                        if decoder.error is not None:
                            raise decoder.error
                if not decoder.done:
                    raise RelayProtocolError(
                        "the relay ended the stream without its final event; the answer may be cut"
                    )
                client._watch.done(watched)
                yield Completion(
                    self._model,
                    "",
                    self.usage,
                    decoder.finish_reason,
                    decoder.tool_calls,
                    decoder.reasoning,
                )
            finally:
                await response.aclose()
        except asyncio.CancelledError:
            if not watched.timed_out():
                raise
            raise RelayTimeoutError(_silent(silence)) from None
        finally:
            client._watch.done(watched)


async def _body(response: httpx.Response, watched: Watched) -> bytes:
    """A unary answer's body, each part heard by the watch as it comes.

    Read from the transport's byte stream itself, as a stream's chunks are: httpx's
    decoding and re-chunking wrappers cost more than the read (measured: 8 us of a
    call's 10). An answer that is content-encoded after all (the request asks for
    identity) is decoded by httpx. (The aiohttp transport reads a unary body itself,
    calling the watch as it does, and `read_body` hands it over: this reads the answers
    of other transports, and the aiohttp transport's content-encoded ones.)
    """
    if "content-encoding" in response.headers:
        return await response.aread()
    parts = []
    async for part in response.stream:  # type: ignore[union-attr]
        watched.heard()
        parts.append(part)
    return b"".join(parts)


def _estimate(input_tokens: int, content: str) -> Usage:
    return Usage(input_tokens, text_tokens(content), estimated=True)
