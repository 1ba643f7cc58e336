import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from server.catalog import default_catalog
from server.domain import Completion, FinishReason, Message, Request, Role, TextDelta, Usage
from server.errors import (
    RelayAuthError,
    RelayConnectError,
    RelayProtocolError,
    RelayTimeoutError,
    RelayUnavailableError,
)
from server.relay.client import RelayClient
from server.settings import RelaySettings

from .mock_relay import OPENAI_CHUNKS, MockRelay, streamed

CATALOG = default_catalog()
GPT = CATALOG.models["gpt-4.1"]
CLAUDE = CATALOG.models["claude-sonnet-4-20250514"]
REQUEST = Request(messages=(Message.of(Role.USER, "hello there"),))
KEY = "sk-test-key-123"


def client(relay: MockRelay) -> RelayClient:
    return RelayClient(
        "http://relay.test/v1/", RelaySettings(api_key=KEY), transport=relay.transport
    )


async def test_unary_openai_posts_to_chat_completions_with_bearer_key():
    relay = MockRelay(
        lambda r: httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 1},
            },
        )
    )
    completion = await client(relay).complete(GPT, REQUEST, 64, 5.0)
    assert completion == Completion(GPT, "hi", Usage(4, 1), FinishReason.STOP)
    sent = relay.requests[0]
    assert str(sent.url) == "http://relay.test/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert relay.body()["max_tokens"] == 64


async def test_unary_request_carries_its_host_and_length_and_a_gzip_answer_is_decoded():
    answer = orjson.dumps(
        {
            "choices": [{"message": {"content": "packed"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1},
        }
    )
    relay = MockRelay(
        lambda r: httpx.Response(
            200, headers={"content-encoding": "gzip"}, content=gzip.compress(answer)
        )
    )
    completion = await client(relay).complete(GPT, REQUEST, 64, 5.0)
    assert completion.content == "packed"
    sent = relay.requests[0]
    assert sent.headers["host"] == "relay.test"
    assert int(sent.headers["content-length"]) == len(sent.content)


async def test_unary_anthropic_posts_to_messages_with_x_api_key():
    relay = MockRelay(
        lambda r: httpx.Response(
            200,
            json={
                "content": [{"type": "text", "text": "yo"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        )
    )
    completion = await client(relay).complete(CLAUDE, REQUEST, 64, 5.0)
    assert completion.content == "yo"
    assert str(relay.requests[0].url) == "http://relay.test/v1/messages"
    assert relay.requests[0].headers["x-api-key"] == KEY
    assert "authorization" not in relay.requests[0].headers


async def test_missing_usage_is_estimated_and_flagged():
    relay = MockRelay(
        lambda r: httpx.Response(
            200, json={"choices": [{"message": {"content": "abcdefgh"}, "finish_reason": "stop"}]}
        )
    )
    completion = await client(relay).complete(GPT, REQUEST, 64, 5.0)
    # "hello there" = 11 bytes -> 3 tokens + 4 per message; "abcdefgh" -> 2 tokens
    assert completion.usage == Usage(7, 2, estimated=True)


async def test_error_statuses_are_classified_and_our_key_is_scrubbed():
    relay = MockRelay(
        lambda r: httpx.Response(400, json={"error": {"message": f"bad request with key {KEY}"}})
    )
    with pytest.raises(Exception) as caught:
        await client(relay).complete(GPT, REQUEST, 64, 5.0)
    assert KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)
    relay = MockRelay(lambda r: httpx.Response(401, json={}))
    with pytest.raises(RelayAuthError):
        await client(relay).complete(GPT, REQUEST, 64, 5.0)
    relay = MockRelay(lambda r: httpx.Response(503, headers={"retry-after": "7"}))
    with pytest.raises(RelayUnavailableError) as unavailable:
        await client(relay).complete(GPT, REQUEST, 64, 5.0)
    assert unavailable.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (httpx.ConnectError("refused"), RelayConnectError),
        (httpx.ConnectTimeout("slow"), RelayConnectError),
        (httpx.ReadTimeout("silent"), RelayTimeoutError),
        (httpx.PoolTimeout("busy"), RelayTimeoutError),
        (httpx.RemoteProtocolError("reset"), RelayProtocolError),
        (httpx.ReadError("reset"), RelayProtocolError),
    ],
)
async def test_transport_failures_become_retryable_relay_errors(exception, expected):
    def fail(request: httpx.Request) -> httpx.Response:
        raise exception

    with pytest.raises(expected) as caught:
        await client(MockRelay(fail)).complete(GPT, REQUEST, 64, 5.0)
    assert caught.value.retryable


async def test_stream_yields_text_then_completion_with_reported_usage():
    relay = MockRelay(lambda r: httpx.Response(200, content=streamed(OPENAI_CHUNKS)))
    stream = client(relay).stream(GPT, REQUEST, 64, 5.0)
    events = [event async for event in stream]
    assert events[:2] == [TextDelta("Hello "), TextDelta("world")]
    assert events[2] == Completion(GPT, "", Usage(9, 2), FinishReason.STOP)
    assert relay.body()["stream_options"] == {"include_usage": True}


async def test_stream_without_done_is_an_error_but_usage_is_estimated():
    relay = MockRelay(lambda r: httpx.Response(200, content=streamed(OPENAI_CHUNKS[:3])))
    stream = client(relay).stream(GPT, REQUEST, 64, 5.0)
    received = []
    with pytest.raises(RelayProtocolError, match="without its final event"):
        async for event in stream:
            received.append(event)
    assert received == [TextDelta("Hello "), TextDelta("world")]
    # "Hello world" = 11 bytes -> 3 tokens, flagged as an estimate
    assert stream.usage == Usage(7, 3, estimated=True)


async def test_stream_broken_mid_body_is_a_protocol_error():
    relay = MockRelay(
        lambda r: httpx.Response(
            200, content=streamed(OPENAI_CHUNKS[:2], then=httpx.ReadError("reset"))
        )
    )
    stream = client(relay).stream(GPT, REQUEST, 64, 5.0)
    with pytest.raises(RelayProtocolError):
        async for _ in stream:
            pass


async def test_stream_error_status_is_classified_before_any_text():
    relay = MockRelay(lambda r: httpx.Response(529, content=streamed([b'{"type":"error"}'])))
    stream = client(relay).stream(CLAUDE, REQUEST, 64, 5.0)
    with pytest.raises(RelayUnavailableError) as caught:
        async for _ in stream:
            pass
    assert caught.value.http_status == 529
    assert stream.usage == Usage()


ANTHROPIC_START = b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":40,"output_tokens":1}}}\n\n'


def anthropic_delta(text: str) -> bytes:
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
        + text.encode()
        + b'"}}\n\n'
    )


async def test_usage_of_a_cut_stream_follows_what_was_received():
    # Cut after message_start and 12 bytes of text: reported input, estimated output (12 / 4).
    relay = MockRelay(
        lambda r: httpx.Response(
            200,
            content=streamed(
                [ANTHROPIC_START, anthropic_delta("abcdefghijkl")], then=httpx.ReadError("cut")
            ),
        )
    )
    stream = client(relay).stream(CLAUDE, REQUEST, 64, 5.0)
    with pytest.raises(RelayProtocolError):
        async for _ in stream:
            pass
    assert stream.usage == Usage(40, 3, estimated=True)
    # Cut right after message_start: its provisional report is what the relay billed.
    relay = MockRelay(
        lambda r: httpx.Response(
            200, content=streamed([ANTHROPIC_START], then=httpx.ReadError("cut"))
        )
    )
    stream = client(relay).stream(CLAUDE, REQUEST, 64, 5.0)
    with pytest.raises(RelayProtocolError):
        async for _ in stream:
            pass
    assert stream.usage == Usage(40, 1)


async def test_a_closing_usage_report_is_billed_as_is_even_without_done():
    relay = MockRelay(lambda r: httpx.Response(200, content=streamed(OPENAI_CHUNKS[:-1])))
    stream = client(relay).stream(GPT, REQUEST, 64, 5.0)
    with pytest.raises(RelayProtocolError):
        async for _ in stream:
            pass
    assert stream.usage == Usage(9, 2)  # the relay's count, not an estimate of the text


async def test_nothing_received_bills_nothing():
    relay = MockRelay(
        lambda r: httpx.Response(
            200, content=streamed([b'data: {"error": {"message": "overloaded"}}\n\n'])
        )
    )
    stream = client(relay).stream(GPT, REQUEST, 64, 5.0)
    with pytest.raises(RelayUnavailableError):
        async for _ in stream:
            pass
    assert stream.usage == Usage()


async def test_text_before_an_error_event_is_delivered_then_the_error_raised():
    relay = MockRelay(
        lambda r: httpx.Response(
            200,
            content=streamed(
                [OPENAI_CHUNKS[1] + b'data: {"error": {"message": "overloaded"}}\n\n']
            ),
        )
    )
    received = []
    with pytest.raises(RelayUnavailableError):
        async for event in client(relay).stream(GPT, REQUEST, 64, 5.0):
            received.append(event)
    assert received == [TextDelta("Hello ")]


def _stalling(chunks: list[bytes], gap: float = 0.0) -> AsyncIterator[bytes]:
    """The chunks, `gap` s apart, then silence."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(gap)
        await asyncio.sleep(30)

    return body()


def _impatient(relay: MockRelay) -> RelayClient:
    settings = RelaySettings(api_key=KEY, read_timeout=0.2)
    return RelayClient("http://relay.test/v1/", settings, transport=relay.transport)


async def test_a_stream_that_goes_silent_times_out_after_the_read_timeout():
    relay = MockRelay(lambda r: httpx.Response(200, content=_stalling(OPENAI_CHUNKS[:3])))
    received = []
    started = asyncio.get_running_loop().time()
    with pytest.raises(RelayTimeoutError, match=r"sent nothing for 0\.2s"):
        async for event in _impatient(relay).stream(GPT, REQUEST, 64, 5.0):
            received.append(event)
    assert [e.text for e in received if isinstance(e, TextDelta)] == ["Hello ", "world"]
    assert len(received) == 2
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_a_slow_caller_is_not_the_relay_going_silent():
    # Each event waits 0.4 s with the caller, twice the relay's allowed silence: the
    # relay was not silent (its chunks were there), so nothing times out.
    relay = MockRelay(lambda r: httpx.Response(200, content=streamed(OPENAI_CHUNKS)))
    events = []
    async for event in _impatient(relay).stream(GPT, REQUEST, 64, 5.0):
        events.append(event)
        await asyncio.sleep(0.4)
    assert isinstance(events[-1], Completion)
    assert events[-1].usage == Usage(9, 2)


async def test_a_unary_answer_that_goes_silent_times_out_after_the_read_timeout():
    relay = MockRelay(lambda r: httpx.Response(200, content=_stalling([b'{"choices": '])))
    with pytest.raises(RelayTimeoutError, match=r"sent nothing for 0\.2s"):
        await _impatient(relay).complete(GPT, REQUEST, 64, 5.0)


async def test_a_unary_try_that_outlasts_its_limit_times_out_whatever_the_relay_sends():
    chunks = [b" "] * 100  # a byte every 20 ms: never silent for 0.2 s, never done in 0.3 s
    relay = MockRelay(lambda r: httpx.Response(200, content=_stalling(chunks, gap=0.02)))
    with pytest.raises(RelayTimeoutError, match=r"did not answer within 0\.3s"):
        await _impatient(relay).complete(GPT, REQUEST, 64, 0.3)


async def test_keep_alive_comments_keep_a_thinking_stream_alive():
    # Nothing to pass on for 0.6 s, three times the allowed silence, but a comment every
    # 0.1 s says the relay is there (as aiohttp's read timeout counted any data).
    async def body() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b": keep-alive\n\n"
            await asyncio.sleep(0.1)
        for chunk in OPENAI_CHUNKS:
            yield chunk

    relay = MockRelay(lambda r: httpx.Response(200, content=body()))
    events = [event async for event in _impatient(relay).stream(GPT, REQUEST, 64, 5.0)]
    assert isinstance(events[-1], Completion)
