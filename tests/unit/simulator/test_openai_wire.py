"""The OpenAI Chat Completions wire over real sockets: shapes, usage, validation."""

from __future__ import annotations

import httpx
import pytest

from server.simulator import RelaySimulator
from server.tokens import conversation_tokens

from .helpers import GEMINI, GPT, openai_body, openai_tokens, parse_sse

PATH = "/chat/completions"


async def test_unary_shape_and_usage(client: httpx.AsyncClient) -> None:
    body = {
        "model": GPT,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Tell me about relays [[sim tokens=12]]"},
        ],
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 1,
    }
    response = await client.post(PATH, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["id"].startswith("chatcmpl-")
    assert isinstance(answer["created"], int)
    text = answer["choices"][0]["message"]["content"]
    prompt = conversation_tokens(["You are terse.", "Tell me about relays [[sim tokens=12]]"])
    assert answer == {
        "id": answer["id"],
        "object": "chat.completion",
        "created": answer["created"],
        "model": GPT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": 12, "total_tokens": prompt + 12},
    }
    assert text.startswith('Simulated answer from gpt-4.1 to "Tell me about relays": ')
    assert len(text.split(" ")) - 1 == 12


async def test_stream_shape_without_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(PATH, json=openai_body("hi [[sim tokens=3]]", stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    chunks = [e.json() for e in events[:-1]]
    assert events[-1].data == "[DONE]"
    ids = {chunk["id"] for chunk in chunks}
    assert len(ids) == 1
    assert ids.pop().startswith("chatcmpl-")
    assert [c["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        [{"index": 0, "delta": {"content": "Simulated "}, "finish_reason": None}],
        [{"index": 0, "delta": {"content": "answer "}, "finish_reason": None}],
        [{"index": 0, "delta": {"content": "from "}, "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    ]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == GPT
        assert "usage" not in chunk  # include_usage was not asked for


async def test_stream_with_include_usage(client: httpx.AsyncClient) -> None:
    content = "count this [[sim tokens=5]]"
    body = openai_body(content, stream=True, stream_options={"include_usage": True})
    events = parse_sse((await client.post(PATH, json=body)).text)
    assert events[-1].data == "[DONE]"
    chunks = [e.json() for e in events[:-1]]
    usage_chunk = chunks[-1]
    prompt = conversation_tokens([content])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
    }
    assert all(chunk["usage"] is None for chunk in chunks[:-1])  # as documented
    assert len(openai_tokens(events)) == 5


async def test_max_tokens_and_stop(client: httpx.AsyncClient) -> None:
    capped = await client.post(PATH, json=openai_body("x [[sim tokens=30]]", max_tokens=4))
    assert capped.json()["choices"][0]["finish_reason"] == "length"
    assert capped.json()["usage"]["completion_tokens"] == 4
    newer = await client.post(
        PATH, json=openai_body("x [[sim tokens=30]]", max_completion_tokens=2, max_tokens=9)
    )
    assert newer.json()["usage"]["completion_tokens"] == 2
    stopped = await client.post(PATH, json=openai_body("x [[sim tokens=30]]", stop="from"))
    choice = stopped.json()["choices"][0]
    assert choice["message"]["content"] == "Simulated answer "
    assert choice["finish_reason"] == "stop"
    assert stopped.json()["usage"]["completion_tokens"] == 2


async def test_content_parts_are_accepted(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "part one "}, {"type": "text", "text": "part two"}]
    response = await client.post(
        PATH, json={"model": GEMINI, "messages": [{"role": "user", "content": parts}]}
    )
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == conversation_tokens(["part one part two"])
    assert '"part one part two":' in response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "Malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4.1"}', "messages"),
        (b'{"model": "gpt-4.1", "messages": []}', "messages"),
        (b'{"model": "gpt-4.1", "messages": [{"role": "tool", "content": "x"}]}', "role"),
        (b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": 5}]}', "content"),
        (
            b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": 0}',
            "max_tokens",
        ),
        (
            b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": 3}',
            "temperature",
        ),
        (
            b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], '
            b'"stream_options": {"include_usage": true}}',
            "stream_options",
        ),
        (
            b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], '
            b'"stop": ["a", "b", "c", "d", "e"]}',
            "stop",
        ),
    ],
)
async def test_invalid_requests_are_400(
    client: httpx.AsyncClient, body: bytes, fragment: str
) -> None:
    response = await client.post(PATH, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


async def test_unknown_model_is_404_model_not_found(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    response = await client.post(PATH, json=openai_body("hi", model="gpt-9"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "gpt-9" in response.json()["error"]["message"]
    assert simulator.stats.model("gpt-9").requests == 1
    assert simulator.stats.model("gpt-9").in_flight == 0
