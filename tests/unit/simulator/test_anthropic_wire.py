"""The Anthropic Messages wire over real sockets: shapes, usage, validation."""

from __future__ import annotations

import httpx
import pytest

from server.tokens import conversation_tokens

from .helpers import DEEPSEEK, SONNET, anthropic_body, anthropic_tokens, parse_sse

PATH = "/messages"


async def test_unary_shape_and_usage(client: httpx.AsyncClient) -> None:
    body = {
        "model": SONNET,
        "max_tokens": 256,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "Explain relays please [[sim tokens=9]]"},
        ],
        "temperature": 0.5,
    }
    response = await client.post(PATH, json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    message = response.json()
    text = message["content"][0]["text"]
    contents = ["You are terse.", "first", "ok", "Explain relays please [[sim tokens=9]]"]
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "model": SONNET,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": conversation_tokens(contents), "output_tokens": 9},
    }
    assert message["id"].startswith("msg_")
    assert text.startswith(f'Simulated answer from {SONNET} to "Explain relays please": ')


async def test_stream_event_sequence(client: httpx.AsyncClient) -> None:
    content = "stream me [[sim tokens=3]]"
    response = await client.post(PATH, json=anthropic_body(content, stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for event in events:
        assert event.json()["type"] == event.event  # data repeats the event name
    start = events[0].json()["message"]
    assert start == {
        "id": start["id"],
        "type": "message",
        "role": "assistant",
        "model": SONNET,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": conversation_tokens([content]), "output_tokens": 1},
    }
    assert events[1].json() == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3].json() == {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Simulated "},
    }
    assert anthropic_tokens(events) == ["Simulated ", "answer ", "from "]
    assert events[6].json() == {"type": "content_block_stop", "index": 0}
    assert events[7].json() == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    }


async def test_max_tokens_and_stop_sequences(client: httpx.AsyncClient) -> None:
    capped = await client.post(PATH, json=anthropic_body("x [[sim tokens=30]]", max_tokens=4))
    assert capped.json()["stop_reason"] == "max_tokens"
    assert capped.json()["usage"]["output_tokens"] == 4
    stopped = await client.post(
        PATH, json=anthropic_body("x [[sim tokens=30]]", stop_sequences=["nope", "answer"])
    )
    assert stopped.json()["stop_reason"] == "stop_sequence"
    assert stopped.json()["stop_sequence"] == "answer"
    assert stopped.json()["content"] == [{"type": "text", "text": "Simulated "}]
    events = parse_sse(
        (
            await client.post(
                PATH,
                json=anthropic_body("x [[sim tokens=30]]", stop_sequences=["from"], stream=True),
            )
        ).text
    )
    delta = next(e.json() for e in events if e.event == "message_delta")
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "from"}
    assert delta["usage"] == {"output_tokens": 2}


async def test_any_model_on_this_wire(client: httpx.AsyncClient) -> None:
    response = await client.post(PATH, json=anthropic_body("hi", model=DEEPSEEK))
    assert response.status_code == 200
    assert response.json()["model"] == DEEPSEEK


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{oops", "Malformed JSON"),
        (b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "gpt-4.1", "max_tokens": 5}', "messages"),
        (
            b'{"model": "gpt-4.1", "max_tokens": 5, "messages": [{"role": "system", '
            b'"content": "x"}]}',
            "role",
        ),
        (
            b'{"model": "gpt-4.1", "max_tokens": 5, "stop_sequences": "x", '
            b'"messages": [{"role": "user", "content": "x"}]}',
            "stop_sequences",
        ),
    ],
)
async def test_invalid_requests_are_400(
    client: httpx.AsyncClient, body: bytes, fragment: str
) -> None:
    response = await client.post(PATH, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert fragment in payload["error"]["message"]


async def test_unknown_model_is_404_not_found_error(client: httpx.AsyncClient) -> None:
    response = await client.post(PATH, json=anthropic_body("hi", model="claude-9"))
    assert response.status_code == 404
    assert response.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-9"},
    }
