"""An httpx transport on aiohttp's connection pool.

httpx is the client API of Switchyard; its default transport (httpcore) is
its slow path, so requests run on one pooled `aiohttp.ClientSession`
instead. Unlike the `httpx-aiohttp` package, this transport maps every
aiohttp failure onto the httpx exception that means the same thing (a reset
mid-body is a ReadError, not a ConnectTimeout), because Switchyard decides
retries from those exceptions. Bodies are streamed as they arrive, so a
stream's tokens are never held back waiting for a buffer to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import aiohttp
import httpx
from aiohttp import hdrs

_SKIPPED_HEADERS = frozenset({b"host", b"content-length", b"connection", b"transfer-encoding"})
# Request extension: the caller wants the whole body (a unary answer), so the
# transport reads it at once instead of handing out a stream to be read chunk by
# chunk through httpx's wrappers. Transports that do not know it just ignore it.
READ_BODY = "switchyard.read_body"
# Request extension: a function called as each part of a READ_BODY answer arrives (the
# status and headers, then every chunk of the body), so the caller can time the relay's
# silence without a timer per read (see watch.py). Other transports may ignore it.
HEARD = "switchyard.heard"
_KEPT_TIMEOUTS = 64  # distinct timeouts kept for reuse (near deadlines make new ones)


def _translated(exc: BaseException) -> httpx.TransportError | None:
    """The httpx exception that means what aiohttp's `exc` means (None: not aiohttp's)."""
    if isinstance(exc, aiohttp.ClientConnectorError):  # before ClientOSError, its base
        return httpx.ConnectError(type(exc).__name__)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # before ServerTimeoutError, its base
        return httpx.ConnectTimeout("connect timed out")
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return httpx.ReadTimeout("read timed out")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(type(exc).__name__)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError("malformed HTTP response")
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol("invalid relay URL")
    if isinstance(exc, (aiohttp.ClientOSError, aiohttp.ClientConnectionError)):
        return httpx.ReadError(type(exc).__name__)
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(type(exc).__name__)
    return None


class _MapExceptions:
    """Translate aiohttp's exceptions into httpx's, the transport contract.

    A class rather than a `contextlib.contextmanager` generator: entered on every
    request and every chunk read, where a generator's set-up cost shows.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            translated = _translated(exc)
            if translated is not None:
                raise translated from exc


_map_exceptions = _MapExceptions()


class _ReadBody(httpx.AsyncByteStream):
    """A READ_BODY answer's body, read whole by the transport (its connection is back in
    the pool): `read_body` hands it out as it is, without an iteration or a close."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body


def read_body(response: httpx.Response) -> bytes | None:
    """The body this transport already read for a READ_BODY request (None: the response
    is to be read as any httpx response is, with its stream, then closed)."""
    stream = response.stream
    return stream.body if type(stream) is _ReadBody else None


class _ResponseStream(httpx.AsyncByteStream):
    """The body of one aiohttp response, yielded chunk by chunk as it arrives."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _map_exceptions:
            content = self._response.content
            while chunk := await content.readany():
                yield chunk

    async def aclose(self) -> None:
        # A body read to its end returns the connection to the pool; a body
        # abandoned half-way (cancel, error) must close it: it cannot be reused.
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


async def _read_heard(content: aiohttp.StreamReader, heard: Callable[[], None]) -> bytes:
    """The whole body, calling `heard` as each chunk arrives."""
    first = await content.readany()
    if not first:
        return first
    heard()
    parts = [first]
    while chunk := await content.readany():
        heard()
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one lazily created aiohttp session.

    Timeouts come from httpx's per-request timeout: `connect` bounds the TCP
    connect, `pool` the wait for a free connection, and `read` the silence
    allowed between two reads (an idle timeout, so a long stream that keeps
    producing is never cut).
    """

    __slots__ = ("_keepalive", "_max_connections", "_session", "_timeouts")

    def __init__(self, max_connections: int = 256, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        # Timeouts made for earlier requests: most requests have one of a few (unary
        # and streamed tries differ; only a near deadline makes new ones).
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; return as soon as the status and headers arrive."""
        session = self._get_session()
        timeouts = request.extensions.get("timeout", {})
        limits = (timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(limits)
        if timeout is None:
            if len(self._timeouts) >= _KEPT_TIMEOUTS:
                self._timeouts.clear()
            timeout = self._timeouts[limits] = aiohttp.ClientTimeout(
                total=None, connect=limits[0], sock_connect=limits[1], sock_read=limits[2]
            )
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _SKIPPED_HEADERS
        ]
        # A body given as bytes (a SyncByteStream, as ByteStream is) is read without an
        # async generator (each one started registers with the loop's asyncgen hooks).
        stream = request.stream
        content = request.read() if isinstance(stream, httpx.SyncByteStream) else None
        with _map_exceptions:
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=await request.aread() if content is None else content,
                allow_redirects=False,
                timeout=timeout,
            )
            extensions = request.extensions
            if extensions.get(READ_BODY):
                heard = extensions.get(HEARD)
                try:
                    if heard is None:
                        body = await response.read()
                    else:
                        heard()
                        body = await _read_heard(response.content, heard)
                finally:
                    response.release()
                # `stream=`: `content=` would add a Content-Length the relay already
                # sent and read the body through httpx's decoders once more. A body that
                # is content-encoded after all (the client asks for identity) is left to
                # httpx to decode, on `aread`.
                encoded = hdrs.CONTENT_ENCODING in response.headers
                return httpx.Response(
                    status_code=response.status,
                    headers=response.raw_headers,
                    stream=httpx.ByteStream(body) if encoded else _ReadBody(body),
                    request=request,
                    extensions={"http_version": b"HTTP/1.1"},
                )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        """Close the pool and every connection in it."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            # Let the connector's transports finish closing before the loop may end.
            await asyncio.sleep(0)
