"""Client-side helpers for simulator tests: an SSE parser written from the spec, and calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

SONNET = "claude-sonnet-4-20250514"
GPT = "gpt-4.1"
GEMINI = "gemini-2.5-flash"
DEEPSEEK = "deepseek-v3.2"


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event: its name (if any), its data (if any), or a comment line."""

    event: str | None = None
    data: str | None = None
    comment: str | None = None

    def json(self) -> Any:
        assert self.data is not None
        return orjson.loads(self.data)


def parse_sse(text: str) -> list[Event]:
    """Split an event stream into events; comments (": ...") become their own events."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = data = None
        for line in block.split("\n"):
            if line.startswith(":"):
                events.append(Event(comment=line[1:].strip()))
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        if name is not None or data is not None:
            events.append(Event(event=name, data=data))
    return events


def openai_body(content: str, model: str = GPT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def anthropic_body(content: str, model: str = SONNET, **extra: Any) -> dict[str, Any]:
    extra.setdefault("max_tokens", 1024)
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def openai_tokens(events: list[Event]) -> list[str]:
    """The content deltas of an OpenAI stream, skipping role, finish, usage and empty chunks."""
    tokens = []
    for event in events:
        if event.data is None or event.data == "[DONE]":
            continue
        chunk = event.json()
        for choice in chunk.get("choices", []):
            if choice["delta"].get("content"):
                tokens.append(choice["delta"]["content"])
    return tokens


def anthropic_tokens(events: list[Event]) -> list[str]:
    return [e.json()["delta"]["text"] for e in events if e.event == "content_block_delta"]


async def read_stream_until_error(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], **kwargs: Any
) -> tuple[int, str, BaseException | None]:
    """Stream a request; return status, the text received, and the error that ended it."""
    received = []
    async with client.stream("POST", path, json=body, **kwargs) as response:
        try:
            async for text in response.aiter_text():
                received.append(text)
        except httpx.TransportError as exc:
            return response.status_code, "".join(received), exc
    return response.status_code, "".join(received), None
