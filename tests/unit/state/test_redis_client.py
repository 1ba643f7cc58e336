"""The small Redis client: replies in order, errors as errors, reconnects, never a reply mixed up."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.state.redis.client import RedisClient, ReplyError, encode
from tests.redis_server import TempRedis


def test_commands_are_encoded_as_resp_bulk_strings():
    assert encode(("SET", "k", 1, 0.5, b"\x00")) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n0.5\r\n$1\r\n\x00\r\n"
    )
    with pytest.raises(TypeError):
        encode(("SET", None))


async def test_replies_errors_and_pipelines(redis_url: str):
    client = RedisClient(redis_url)
    try:
        assert await client.call("SET", "k", "v") == b"OK"
        assert await client.call("GET", "k") == b"v"
        assert await client.call("EVAL", "return {1, 'two', ARGV[1]}", 0, 3.5) == [
            1,
            b"two",
            b"3.5",
        ]
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            await client.call("LPUSH", "k", "x")
        replies = await client.pipeline([("INCR", "n"), ("HGET", "k", "f"), ("INCR", "n")])
        assert replies[0] == 1 and isinstance(replies[1], ReplyError) and replies[2] == 2
        together = await asyncio.gather(*(client.call("INCR", "c") for _ in range(50)))
        assert together == list(range(1, 51))  # one connection, answers in order
    finally:
        await client.aclose()


async def test_the_database_of_the_url_is_selected(redis_server: TempRedis, redis_url: str):
    other = RedisClient(redis_url.rsplit("/", 1)[0] + "/3")
    zero = RedisClient(redis_url)
    try:
        await other.call("SET", "only-in-3", "x")
        assert await zero.call("GET", "only-in-3") is None
        assert await other.call("GET", "only-in-3") == b"x"
    finally:
        await other.call("FLUSHDB")
        await other.aclose()
        await zero.aclose()


async def test_a_reply_that_comes_after_its_caller_gave_up_goes_to_no_one_else(
    redis_server: TempRedis, redis_url: str
):
    client = RedisClient(redis_url)
    try:
        await client.call("SET", "a", "first")
        redis_server.pause()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.call("GET", "a")
        redis_server.resume()
        await client.call("SET", "b", "second")
        assert await client.call("GET", "b") == b"second"  # not the late reply to GET a
    finally:
        await client.aclose()


async def test_a_lost_connection_fails_what_was_in_flight_and_the_next_call_reconnects(
    redis_server: TempRedis, redis_url: str
):
    client = RedisClient(redis_url)
    try:
        await client.call("PING")
        redis_server.kill()
        with pytest.raises((ConnectionError, OSError)):
            await client.call("PING")
        redis_server.restart()
        assert await client.call("PING") == b"PONG"
    finally:
        await client.aclose()


async def test_a_reply_that_arrived_while_the_process_was_busy_is_not_a_timeout(
    redis_server: TempRedis, redis_url: str
):
    client = RedisClient(redis_url, timeout=0.05)
    try:
        await client.call("PING")
        pending = asyncio.ensure_future(client.call("SET", "k", "v"))
        for _ in range(2):  # queued, then written at the end of the turn
            await asyncio.sleep(0)
        time.sleep(0.2)  # noqa: ASYNC251 (the point: a loop blocked past the timeout)
        assert await pending == b"OK"  # the reply was there: taken, not timed out
        redis_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.call("GET", "k")  # really not answering: a timeout
            assert time.monotonic() - started < 0.5
        finally:
            redis_server.resume()
    finally:
        await client.aclose()


async def test_a_command_queued_while_the_process_is_busy_has_its_whole_timeout_once_written(
    redis_url: str,
):
    # Commands are written at the end of the loop turn that queued them: a turn held up
    # past the timeout must not spend the command's time before Redis has even seen it.
    client = RedisClient(redis_url, timeout=0.05)
    try:
        await client.call("PING")
        pending = asyncio.ensure_future(client.call("SET", "k", "v"))
        await asyncio.sleep(0)  # queued, not written: the turn is not over
        time.sleep(0.2)  # noqa: ASYNC251 (the point: the turn outlasts the timeout)
        assert await pending == b"OK"
    finally:
        await client.aclose()


async def test_a_server_that_does_not_speak_redis_is_a_lost_connection_not_a_crash():
    async def http2(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00")  # an HTTP/2 SETTINGS frame
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(http2, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RedisClient(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(ConnectionError):
            await client.pipeline([("PING",), ("PING",), ("PING",)])
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
