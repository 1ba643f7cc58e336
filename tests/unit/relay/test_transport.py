"""The aiohttp-backed httpx transport, against a real HTTP server on loopback."""

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from server.relay.transport import AiohttpTransport


class Server:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.peers: set[tuple] = set()
        self.disconnected = asyncio.Event()
        app = web.Application()
        app.router.add_post("/stream", self.stream)
        app.router.add_post("/stall", self.stall)
        app.router.add_post("/reset", self.reset)
        app.router.add_post("/json", self.json)
        self.runner = web.AppRunner(app, handler_cancellation=True)

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def json(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        body = await request.read()
        return web.json_response(
            {"echo": body.decode(), "ua": request.headers.get("user-agent", "")}
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        try:
            await self.release.wait()
            await response.write(b"second")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response

    async def stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x")
        await asyncio.sleep(30)
        return response

    async def reset(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.abort()
        return response


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    url = await srv.start()
    yield srv, url
    srv.release.set()
    await srv.runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5.0) as c:
        yield c


async def test_body_chunks_arrive_as_they_are_sent(server, client):
    srv, url = server
    async with client.stream("POST", url + "/stream", content=b"{}") as response:
        chunks = response.aiter_raw()
        assert await anext(chunks) == b"first"  # arrives while the server still holds "second"
        srv.release.set()
        assert await anext(chunks) == b"second"


async def test_completed_bodies_reuse_one_connection(server, client):
    srv, url = server
    for _ in range(3):
        response = await client.post(url + "/json", content=b"hi")
        assert response.json()["echo"] == "hi"
    assert len(srv.peers) == 1


async def test_abandoned_body_closes_its_connection(server, client):
    srv, url = server
    async with client.stream("POST", url + "/stream", content=b"{}") as response:
        assert await anext(response.aiter_raw()) == b"first"
    await asyncio.wait_for(srv.disconnected.wait(), 5)


async def test_refused_connection_is_connect_error(client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/json", content=b"")


async def test_silence_longer_than_read_timeout_is_read_timeout(server, client):
    _, url = server
    with pytest.raises(httpx.ReadTimeout):
        await client.post(url + "/stall", content=b"", timeout=httpx.Timeout(5.0, read=0.2))


async def test_reset_mid_body_is_a_protocol_or_read_error(server, client):
    _, url = server
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.post(url + "/reset", content=b"")
