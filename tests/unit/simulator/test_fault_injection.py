"""Every fault directive, over real sockets, on both wires: exactly what it promises."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from server.simulator import RelaySimulator

from .helpers import (
    GEMINI,
    GPT,
    SONNET,
    anthropic_body,
    anthropic_tokens,
    openai_body,
    openai_tokens,
    parse_sse,
    read_stream_until_error,
)

OPENAI = "/chat/completions"
ANTHROPIC = "/messages"


def body_for(path: str, content: str, **extra: Any) -> dict[str, Any]:
    return openai_body(content, **extra) if path == OPENAI else anthropic_body(content, **extra)


def tokens_of(path: str, text: str) -> list[str]:
    events = parse_sse(text)
    return openai_tokens(events) if path == OPENAI else anthropic_tokens(events)


# fault, status, OpenAI (type, code), Anthropic error type
ERROR_FAULTS = [
    ("400", 400, ("invalid_request_error", None), "invalid_request_error"),
    ("401", 401, ("invalid_request_error", "invalid_api_key"), "authentication_error"),
    ("403", 403, ("invalid_request_error", "permission_denied"), "permission_error"),
    ("404", 404, ("invalid_request_error", "model_not_found"), "not_found_error"),
    ("408", 408, ("timeout", "request_timeout"), "api_error"),
    ("409", 409, ("invalid_request_error", "conflict"), "invalid_request_error"),
    ("413", 413, ("invalid_request_error", "request_too_large"), "request_too_large"),
    ("422", 422, ("invalid_request_error", "unprocessable_entity"), "invalid_request_error"),
    ("429", 429, ("requests", "rate_limit_exceeded"), "rate_limit_error"),
    ("500", 500, ("server_error", None), "api_error"),
    ("502", 502, ("server_error", "bad_gateway"), "api_error"),
    ("503", 503, ("server_error", "service_unavailable"), "overloaded_error"),
    ("529", 529, ("server_error", "overloaded"), "overloaded_error"),
    (
        "context_length",
        400,
        ("invalid_request_error", "context_length_exceeded"),
        "invalid_request_error",
    ),
    ("spend_limit", 429, ("insufficient_quota", "insufficient_quota"), "rate_limit_error"),
]


@pytest.mark.parametrize(("fault", "status", "openai", "anthropic"), ERROR_FAULTS, ids=str)
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_error_faults(
    client: httpx.AsyncClient,
    fault: str,
    status: int,
    openai: tuple[str, str | None],
    anthropic: str,
    stream: bool,
) -> None:
    content = f"please fail [[sim fault={fault}]]"
    response = await client.post(OPENAI, json=openai_body(content, stream=stream))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == openai
    assert "retry-after" not in response.headers  # only when asked for

    response = await client.post(ANTHROPIC, json=anthropic_body(content, stream=stream))
    assert response.status_code == status
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == anthropic


async def test_context_length_and_spend_limit_say_so(client: httpx.AsyncClient) -> None:
    ctx = await client.post(ANTHROPIC, json=anthropic_body("long [[sim fault=context_length]]"))
    assert ctx.json()["error"]["message"].startswith("prompt is too long")
    ctx = await client.post(OPENAI, json=openai_body("long [[sim fault=context_length]]"))
    assert "maximum context length" in ctx.json()["error"]["message"]
    spend = await client.post(ANTHROPIC, json=anthropic_body("$$ [[sim fault=spend_limit]]"))
    assert "spend limit" in spend.json()["error"]["message"]
    spend = await client.post(OPENAI, json=openai_body("$$ [[sim fault=spend_limit]]"))
    assert "quota" in spend.json()["error"]["message"]


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_retry_after_headers(client: httpx.AsyncClient, path: str) -> None:
    seconds = await client.post(path, json=body_for(path, "a [[sim fault=429 retry_after=7]]"))
    assert seconds.headers["retry-after"] == "7"
    assert "retry-after-ms" not in seconds.headers
    millis = await client.post(
        path, json=body_for(path, "b [[sim fault=503 retry_after_ms=1500 retry_after=2]]")
    )
    assert millis.status_code == 503
    assert millis.headers["retry-after-ms"] == "1500"
    assert millis.headers["retry-after"] == "2"
    dated = await client.post(path, json=body_for(path, "c [[sim fault=529 retry_after_date=30]]"))
    assert dated.status_code == 529
    when = parsedate_to_datetime(dated.headers["retry-after"])
    assert dated.headers["retry-after"].endswith(" GMT")
    assert 28 <= (when - datetime.now(UTC)).total_seconds() <= 31


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_stall_sends_nothing_until_the_client_gives_up(
    client: httpx.AsyncClient, simulator: RelaySimulator, path: str
) -> None:
    for stream in (False, True):
        body = body_for(path, "wait [[sim fault=stall]]", stream=stream)
        with pytest.raises(httpx.ReadTimeout):  # raised while waiting for the headers
            await client.post(path, json=body, timeout=httpx.Timeout(5, read=0.2))
    stats = await simulator.wait_idle()
    assert stats.in_flight == 0  # the client hanging up ended the stall
    assert stats.output_tokens == 0


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_stall_mid_stream_after_n_tokens(
    client: httpx.AsyncClient, simulator: RelaySimulator, path: str
) -> None:
    body = body_for(path, "go [[sim fault=stall_mid after=3 tokens=10]]", stream=True)
    status, text, error = await read_stream_until_error(
        client, path, body, timeout=httpx.Timeout(5, read=0.3)
    )
    assert status == 200
    assert isinstance(error, httpx.ReadTimeout)
    assert tokens_of(path, text) == ["Simulated ", "answer ", "from "]
    assert (await simulator.wait_idle()).model(GPT if path == OPENAI else SONNET).tokens_sent == 3


async def test_stall_mid_unary_sends_headers_then_no_body(client: httpx.AsyncClient) -> None:
    body = openai_body("go [[sim fault=stall_mid]]")
    async with client.stream(
        "POST", OPENAI, json=body, timeout=httpx.Timeout(5, read=0.2)
    ) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) > 0
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("after", [0, 4])
async def test_reset_after_n_tokens_breaks_the_connection(
    client: httpx.AsyncClient, simulator: RelaySimulator, path: str, after: int
) -> None:
    body = body_for(path, f"go [[sim fault=reset after={after} tokens=10]]", stream=True)
    status, text, error = await read_stream_until_error(client, path, body)
    assert status == 200
    assert isinstance(error, httpx.ReadError | httpx.RemoteProtocolError)
    assert len(tokens_of(path, text)) == after
    assert "[DONE]" not in text
    assert "message_stop" not in text
    await simulator.wait_idle()


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_reset_unary_aborts_before_responding(client: httpx.AsyncClient, path: str) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post(path, json=body_for(path, "go [[sim fault=reset]]"))
    # the pool recovers: the next request on this client succeeds
    assert (await client.post(path, json=body_for(path, "fine"))).status_code == 200


async def test_no_done_openai(client: httpx.AsyncClient) -> None:
    body = openai_body(
        "go [[sim fault=no_done tokens=4]]", stream=True, stream_options={"include_usage": True}
    )
    status, text, error = await read_stream_until_error(client, OPENAI, body)
    assert (status, error) == (200, None)  # the body ended cleanly
    events = parse_sse(text)
    assert events[-1].json()["usage"]["completion_tokens"] == 4  # usage still sent...
    assert all(e.data != "[DONE]" for e in events)  # ...but no [DONE]
    assert len(openai_tokens(events)) == 4


async def test_no_done_anthropic_closes_the_connection_cleanly(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    body = anthropic_body("go [[sim fault=no_done tokens=4]]", stream=True)
    async with client.stream("POST", ANTHROPIC, json=body) as response:
        assert response.headers["connection"] == "close"
        text = (await response.aread()).decode()
    events = parse_sse(text)
    assert [e.event for e in events][-2:] == ["content_block_stop", "message_delta"]
    assert events[-1].json()["usage"] == {"output_tokens": 4}
    assert (await simulator.wait_disconnected()).open_connections == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_no_usage_openai(
    client: httpx.AsyncClient, simulator: RelaySimulator, stream: bool
) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    body = openai_body("go [[sim fault=no_usage tokens=6]]", stream=stream, **extra)
    response = await client.post(OPENAI, json=body)
    if stream:
        events = parse_sse(response.text)
        assert events[-1].data == "[DONE]"
        assert all(e.json().get("usage") is None for e in events[:-1])
        assert len(openai_tokens(events)) == 6
    else:
        assert "usage" not in response.json()
    stats = (await simulator.wait_idle()).model(GPT)
    assert (stats.input_tokens, stats.output_tokens, stats.tokens_sent) == (0, 0, 6)


async def test_no_usage_anthropic_omits_it_from_message_delta(
    client: httpx.AsyncClient, simulator: RelaySimulator
) -> None:
    body = anthropic_body("go [[sim fault=no_usage tokens=6]]", stream=True)
    events = parse_sse((await client.post(ANTHROPIC, json=body)).text)
    delta = next(e.json() for e in events if e.event == "message_delta")
    assert "usage" not in delta
    assert events[-1].event == "message_stop"
    start_usage = events[0].json()["message"]["usage"]
    stats = (await simulator.wait_idle()).model(SONNET)
    assert (stats.input_tokens, stats.output_tokens) == (start_usage["input_tokens"], 1)


async def test_sse_error_openai_after_tokens(client: httpx.AsyncClient) -> None:
    body = openai_body("go [[sim fault=sse_error after=2 tokens=9]]", stream=True)
    response = await client.post(OPENAI, json=body)
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert len(openai_tokens(events)) == 2
    last = events[-1].json()
    assert set(last) == {"error"}
    assert last["error"]["type"] == "server_error"
    assert all(e.data != "[DONE]" for e in events)


async def test_sse_error_anthropic_before_first_token(client: httpx.AsyncClient) -> None:
    body = anthropic_body("go [[sim fault=sse_error]]", stream=True)
    response = await client.post(ANTHROPIC, json=body)
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert [e.event for e in events] == ["message_start", "content_block_start", "ping", "error"]
    assert events[-1].json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_ping_openai_comments_between_tokens(client: httpx.AsyncClient) -> None:
    body = openai_body("go [[sim fault=ping tokens=5]]", stream=True)
    events = parse_sse((await client.post(OPENAI, json=body)).text)
    assert sum(1 for e in events if e.comment == "ping") == 6  # before each token and the end
    assert len(openai_tokens(events)) == 5
    assert events[-1].data == "[DONE]"
    kinds = ["c" if e.comment else "d" for e in events]
    assert "".join(kinds).startswith("dcdcd")  # role, ping, token, ping, token


async def test_ping_anthropic_events_between_tokens(client: httpx.AsyncClient) -> None:
    body = anthropic_body("go [[sim fault=ping tokens=5]]", stream=True)
    events = parse_sse((await client.post(ANTHROPIC, json=body)).text)
    assert sum(1 for e in events if e.event == "ping") == 1 + 6
    assert len(anthropic_tokens(events)) == 5
    assert events[-1].event == "message_stop"


@pytest.mark.parametrize("include_usage", [False, True])
async def test_empty_choices_are_not_tokens(
    client: httpx.AsyncClient, simulator: RelaySimulator, include_usage: bool
) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    body = openai_body("go [[sim fault=empty_choices tokens=4]]", stream=True, **extra)
    events = parse_sse((await client.post(OPENAI, json=body)).text)
    chunks = [e.json() for e in events if e.data != "[DONE]"]
    empty = [c for c in chunks if c["choices"] == [] and c.get("usage") is None]
    assert len(empty) == 5  # before each token and before the finish chunk
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == (1 if include_usage else 0)
    assert len(openai_tokens(events)) == 4
    assert (await simulator.wait_idle()).model(GPT).output_tokens == (4 if include_usage else 0)


@pytest.mark.parametrize(
    ("path", "content", "stream", "fragment"),
    [
        (OPENAI, "[[sim fault=no_done]]", False, "streaming"),
        (ANTHROPIC, "[[sim fault=sse_error]]", False, "streaming"),
        (ANTHROPIC, "[[sim fault=empty_choices]]", True, "OpenAI"),
        (OPENAI, "[[sim fault=teapot]]", False, "'teapot'"),
        (ANTHROPIC, "[[sim flavour=mint]]", True, "'flavour'"),
    ],
)
async def test_directive_mistakes_are_400_naming_them(
    client: httpx.AsyncClient, path: str, content: str, stream: bool, fragment: str
) -> None:
    response = await client.post(path, json=body_for(path, content, stream=stream))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "simulator directive" in message
    assert fragment in message


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_times_then_success_counted_per_conversation(
    client: httpx.AsyncClient, path: str
) -> None:
    mine = body_for(path, "retry me [[sim fault=429 times=2]]")
    other = body_for(path, "another test [[sim fault=429 times=2]]")
    assert (await client.post(path, json=mine)).status_code == 429
    assert (await client.post(path, json=other)).status_code == 429  # its own counter
    assert (await client.post(path, json=mine)).status_code == 429
    assert (await client.post(path, json=mine)).status_code == 200
    assert (await client.post(path, json=mine)).status_code == 200
    assert (await client.post(path, json=other)).status_code == 429


async def test_faults_in_sequence(client: httpx.AsyncClient) -> None:
    body = openai_body("seq [[sim fault=503 times=1]] [[sim fault=429 times=2]]")
    codes = [(await client.post(OPENAI, json=body)).status_code for _ in range(5)]
    assert codes == [503, 429, 429, 200, 200]


async def test_model_filter_storms_the_primary_only(client: httpx.AsyncClient) -> None:
    content = f"storm [[sim fault=429 model={GPT}]]"
    assert (await client.post(OPENAI, json=openai_body(content, model=GPT))).status_code == 429
    assert (await client.post(OPENAI, json=openai_body(content, model=GEMINI))).status_code == 200
    assert (
        await client.post(ANTHROPIC, json=anthropic_body(content, model=GPT))
    ).status_code == 429


async def test_times_is_shared_across_models_without_a_filter(client: httpx.AsyncClient) -> None:
    content = "fallback [[sim fault=500 times=1]]"
    assert (await client.post(OPENAI, json=openai_body(content, model=GPT))).status_code == 500
    assert (await client.post(OPENAI, json=openai_body(content, model=GEMINI))).status_code == 200


async def test_latency_ms_is_absolute_even_at_scale_zero(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post(OPENAI, json=openai_body("slow [[sim latency_ms=250]]"))
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.25
    assert response.headers["x-simulator-ttft-ms"] == "250.000"
    started = time.monotonic()
    error = await client.post(OPENAI, json=openai_body("slow [[sim fault=500 latency_ms=200]]"))
    assert error.status_code == 500
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_tokens_forces_the_length(client: httpx.AsyncClient, path: str) -> None:
    text = (await client.post(path, json=body_for(path, "[[sim tokens=37]]", stream=True))).text
    assert len(tokens_of(path, text)) == 37
