"""The two wire translators: request bodies, answers, streams, usage."""

import orjson
import pytest

from server.catalog import default_catalog
from server.domain import FinishReason, Message, Request, Role, Usage
from server.errors import RelayProtocolError, RelayUnavailableError
from server.relay.sse import SSEDecoder
from server.relay.wires import WIRES, Answer

CATALOG = default_catalog()
GPT = CATALOG.models["gpt-4.1"]
CLAUDE = CATALOG.models["claude-sonnet-4-20250514"]
REQUEST = Request(
    messages=(Message.of(Role.SYSTEM, "be brief"), Message.of(Role.USER, "hi")),
    temperature=1.5,
    top_p=0.9,
    stop=("END",),
)


def sse(*frames: bytes) -> list:
    return SSEDecoder().feed(b"".join(frames))


def test_openai_request_body():
    body = orjson.loads(WIRES["openai"].encode(REQUEST, GPT, 256, stream=True))
    assert body == {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 256,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    unary = orjson.loads(
        WIRES["openai"].encode(Request(messages=REQUEST.messages[1:]), GPT, 9, stream=False)
    )
    assert "stream" not in unary and "temperature" not in unary


def test_openai_headers_use_bearer():
    assert WIRES["openai"].headers("k") == {"authorization": "Bearer k"}


def test_openai_answer():
    body = b'{"choices":[{"message":{"role":"assistant","content":"yo"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}'
    assert WIRES["openai"].decode(body) == Answer("yo", Usage(3, 4), FinishReason.LENGTH)
    no_usage = b'{"choices":[{"message":{"content":null},"finish_reason":"stop"}]}'
    assert WIRES["openai"].decode(no_usage) == Answer("", None, FinishReason.STOP)
    with pytest.raises(RelayProtocolError):
        WIRES["openai"].decode(b'{"choices": []}')
    with pytest.raises(RelayProtocolError):
        WIRES["openai"].decode(b"<html>")


def test_openai_stream_text_usage_and_done():
    decoder = WIRES["openai"].stream_decoder()
    text = decoder.feed(
        sse(
            b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
            b": ping\n\n",
            b'data: {"choices":[],"usage":null}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n',
        )
    )
    assert text == "Hello"
    assert decoder.usage is None and not decoder.done
    assert (
        decoder.feed(sse(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'))
        == ""
    )
    decoder.feed(
        sse(
            b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n',
            b"data: [DONE]\n\n",
        )
    )
    assert decoder.done
    assert decoder.usage == Usage(5, 2)
    assert decoder.finish_reason is FinishReason.STOP


def test_openai_stream_error_keeps_the_text_before_it():
    decoder = WIRES["openai"].stream_decoder()
    text = decoder.feed(
        sse(
            b'data: {"choices":[{"index":0,"delta":{"content":"partial"}}]}\n\n',
            b'data: {"error": {"message": "overloaded"}}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":"never"}}]}\n\n',
        )
    )
    assert text == "partial"
    assert isinstance(decoder.error, RelayUnavailableError) and decoder.error.retryable
    malformed = WIRES["openai"].stream_decoder()
    malformed.feed(sse(b"data: {not json\n\n"))
    assert isinstance(malformed.error, RelayProtocolError)


def test_anthropic_request_body_moves_system_and_clamps_temperature():
    body = orjson.loads(WIRES["anthropic"].encode(REQUEST, CLAUDE, 512, stream=True))
    assert body == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 512,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
    }
    headers = WIRES["anthropic"].headers("k")
    assert headers["x-api-key"] == "k" and headers["anthropic-version"]


def test_anthropic_answer_counts_cache_tokens_as_input_reads_and_writes_apart():
    body = b'{"content":[{"type":"text","text":"a"},{"type":"server_tool_use"},{"type":"text","text":"b"}],"stop_reason":"max_tokens","usage":{"input_tokens":3,"cache_creation_input_tokens":5,"cache_read_input_tokens":10,"output_tokens":2}}'
    # 3 uncached + 5 cache writes + 10 cache reads = 18 input tokens: 10 read, 5 written
    assert WIRES["anthropic"].decode(body) == Answer(
        "ab",
        Usage(18, 2, cached_input_tokens=10, cache_write_tokens=5),
        FinishReason.LENGTH,
    )


def test_anthropic_stream():
    decoder = WIRES["anthropic"].stream_decoder()
    text = decoder.feed(
        sse(
            b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}\n\n',
            b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
            b'event: ping\ndata: {"type": "ping"}\n\n',
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n',
        )
    )
    assert text == "Hi"
    assert decoder.input_tokens == 12
    assert decoder.usage == Usage(12, 1)  # message_start reports output 1 until message_delta
    decoder.feed(
        sse(
            b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}\n\n',
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
        )
    )
    assert decoder.done and decoder.usage == Usage(12, 7)
    assert decoder.finish_reason is FinishReason.STOP


def test_anthropic_stream_error_event():
    decoder = WIRES["anthropic"].stream_decoder()
    decoder.feed(
        sse(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n')
    )
    assert isinstance(decoder.error, RelayUnavailableError)


def test_openai_cached_prompt_tokens_are_part_of_the_input():
    body = b'{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920}}}'
    assert WIRES["openai"].decode(body)[1] == Usage(2006, 300, cached_input_tokens=1920)
    decoder = WIRES["openai"].stream_decoder()
    decoder.feed(
        sse(
            b'data: {"choices":[],"usage":{"prompt_tokens":50,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":32}}}\n\n'
        )
    )
    assert decoder.usage == Usage(50, 2, cached_input_tokens=32)
    assert decoder.cached_input_tokens == 32


def test_anthropic_stream_cache_reads_are_known_from_message_start():
    decoder = WIRES["anthropic"].stream_decoder()
    decoder.feed(
        sse(
            b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":4,"cache_read_input_tokens":100,"output_tokens":1}}}\n\n'
        )
    )
    assert (decoder.input_tokens, decoder.cached_input_tokens) == (104, 100)
