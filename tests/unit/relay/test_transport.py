"""The aiohttp-backed httpx transport, against a real HTTP server on loopback."""

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiohttp import web

from server.catalog import default_catalog
from server.domain import Message, Request, Role
from server.errors import RelayTimeoutError
from server.relay.client import RelayClient
from server.relay.transport import AiohttpTransport, read_body
from server.settings import RelaySettings


class Server:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.peers: set[tuple] = set()
        self.disconnected = asyncio.Event()
        app = web.Application()
        app.router.add_post("/stream", self.stream)
        app.router.add_post("/stall", self.stall)
        app.router.add_post("/stalled/chat/completions", self.stall)  # a relay at /stalled
        app.router.add_post("/trickle/chat/completions", self.trickle)
        app.router.add_post("/reset", self.reset)
        app.router.add_post("/json", self.json)
        app.router.add_post("/gzip", self.gzip)
        app.router.add_post("/encoded/chat/completions", self.encoded_answer)
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

    async def gzip(self, request: web.Request) -> web.Response:
        response = web.json_response({"echo": (await request.read()).decode()})
        response.enable_compression(web.ContentCoding.gzip)  # whatever the request accepts
        return response

    async def encoded_answer(self, request: web.Request) -> web.Response:
        """An OpenAI chat answer, gzip-encoded although the request asks for identity."""
        response = web.json_response(
            {
                "choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        )
        response.enable_compression(web.ContentCoding.gzip, strategy=None)
        return response

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

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(600):  # a byte every 50 ms for 30 s: never silent, never done
            await response.write(b" ")
            await asyncio.sleep(0.05)
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


async def test_a_shorter_timeout_after_a_longer_one_is_applied(server, client):
    """The transport keeps the last request's timeouts; a request with others gets its own."""
    _, url = server
    await client.post(url + "/json", content=b"hi", timeout=httpx.Timeout(5.0, read=30.0))
    with pytest.raises(httpx.ReadTimeout):
        await client.post(url + "/stall", content=b"", timeout=httpx.Timeout(5.0, read=0.2))
    response = await client.post(url + "/json", content=b"again", timeout=5.0)
    assert response.json()["echo"] == "again"


async def test_the_relay_client_reads_a_unary_answer_over_the_transport(server):
    """The body comes back whole, and the request carries the body and its length."""
    _, url = server
    relay = RelayClient(url, RelaySettings(api_key="k"))
    model = default_catalog().models["gpt-4.1"]
    request = relay._request(
        model, Request(messages=(Message.of(Role.USER, "hi"),)), 8, stream=False, time_limit=5.0
    )
    assert request.headers["host"] == url.removeprefix("http://")
    assert int(request.headers["content-length"]) == len(request.read())
    transport = AiohttpTransport()
    try:
        request.url = httpx.URL(url + "/json")
        response = await transport.handle_async_request(request)
        body = read_body(response)  # read whole by the transport, handed over as it is
        assert body is not None
        assert b"".join([part async for part in response.stream]) == body  # type: ignore[union-attr]
        assert orjson.loads(orjson.loads(body)["echo"])["max_tokens"] == 8
        request.url = httpx.URL(url + "/gzip")
        compressed = await transport.handle_async_request(request)
        assert compressed.headers["content-encoding"] == "gzip"
        assert read_body(compressed) is None  # encoded: to be read (and decoded) by httpx
        assert orjson.loads(await compressed.aread())["echo"] == request.read().decode()
    finally:
        await transport.aclose()
        await relay.aclose()


async def test_a_content_encoded_unary_answer_is_decoded(server):
    """A relay that compresses although asked for identity is still understood."""
    _, url = server
    relay = RelayClient(url + "/encoded", RelaySettings(api_key="k"))
    model = default_catalog().models["gpt-4.1"]
    try:
        completion = await relay.complete(
            model, Request(messages=(Message.of(Role.USER, "hi"),)), 8, 5.0
        )
    finally:
        await relay.aclose()
    assert completion.content == "hello"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (3, 1)


async def test_a_relay_that_stalls_a_unary_answer_times_out(server):
    _, url = server
    relay = RelayClient(url + "/stalled", RelaySettings(api_key="k", read_timeout=0.2))
    model = default_catalog().models["gpt-4.1"]
    try:
        # the read timeout's doing (0.2 s of silence), not the try's 5 s limit
        with pytest.raises(RelayTimeoutError, match=r"sent nothing for 0\.2s"):
            await relay.complete(model, Request(messages=(Message.of(Role.USER, "hi"),)), 8, 5.0)
    finally:
        await relay.aclose()


async def test_a_unary_answer_that_never_ends_is_cut_at_the_try_limit(server):
    _, url = server
    # A byte every 50 ms: each is heard (the transport reports every chunk of a unary
    # body to the client's watch), so the relay is never 0.2 s silent; it is the try's
    # 0.6 s that runs out.
    relay = RelayClient(url + "/trickle", RelaySettings(api_key="k", read_timeout=0.2))
    model = default_catalog().models["gpt-4.1"]
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(RelayTimeoutError, match=r"did not answer within 0\.6s"):
            await relay.complete(model, Request(messages=(Message.of(Role.USER, "hi"),)), 8, 0.6)
        assert asyncio.get_running_loop().time() - started < 2.0
    finally:
        await relay.aclose()


async def test_a_caller_that_goes_away_cancels_the_unary_try_not_times_it_out(server):
    _, url = server
    relay = RelayClient(url + "/stalled", RelaySettings(api_key="k", read_timeout=5.0))
    model = default_catalog().models["gpt-4.1"]
    request = Request(messages=(Message.of(Role.USER, "hi"),))
    try:
        task = asyncio.create_task(relay.complete(model, request, 8, 5.0))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert relay._watch.watching == 0
    finally:
        await relay.aclose()
