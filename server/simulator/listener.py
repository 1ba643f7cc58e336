"""aiohttp's low-level server, adapted to what a fault-injecting relay needs.

Three things differ from aiohttp's defaults, each for a test's sake:

* every connection is counted as it opens and closes (aiohttp's own map
  drops a connection only once its handler ends), so "no connection leaked"
  is an exact assertion;
* a handler is cancelled as soon as its client hangs up, so a stall ends and
  in-flight drops back to zero when the client gives up;
* request bodies may be large (long-context tests send big prompts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler

from server.simulator.stats import StatsBook

MAX_BODY_BYTES = 32 * 1024 * 1024
SHUTDOWN_GRACE_S = 1.0  # stop() aborts connections first, so handlers end well within this

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Listener(web.Server):
    """An aiohttp server that reports connections to the stats and can drop them all."""

    def __init__(self, book: StatsBook, handler: Handler) -> None:
        super().__init__(
            handler,
            handler_cancellation=True,
            request_factory=self._make_request,
            access_log=None,
        )
        self._book = book
        self._transports: dict[RequestHandler, asyncio.Transport] = {}
        self._runner = web.ServerRunner(self, shutdown_timeout=SHUTDOWN_GRACE_S)

    async def listen(self, host: str, port: int) -> int:
        """Bind and accept; returns the bound port (useful when ``port`` is 0)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return site.port

    async def close(self) -> None:
        """Stop accepting, abort every connection (cancelling its handler), clean up."""
        for site in self._runner.sites:
            await site.stop()
        for transport in list(self._transports.values()):
            transport.abort()
        await self._runner.cleanup()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        """Count the connection."""
        super().connection_made(handler, transport)
        self._transports[handler] = transport
        self._book.connection_opened()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        """Uncount the connection, whichever side closed it."""
        super().connection_lost(handler, exc)
        if self._transports.pop(handler, None) is not None:
            self._book.connection_closed()

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        loop = asyncio.get_running_loop()
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY_BYTES
        )
