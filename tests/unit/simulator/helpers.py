"""Client-side helpers for simulator tests: an SSE parser written from the spec, and calls."""

from __future__ import annotations

import base64
import struct
import zlib
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


# A tool whose arguments exercise most of what the simulator's schema instances support.
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"},
        "at": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
            "required": ["lat", "lon"],
            "additionalProperties": False,
        },
        "fields": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["city", "unit", "days", "hourly", "at", "fields"],
    "additionalProperties": False,
}


def openai_tools(
    *names: str, schema: dict[str, Any] | None = WEATHER_SCHEMA
) -> list[dict[str, Any]]:
    """OpenAI function tools with the given names, all taking ``schema`` (None: no parameters)."""
    tools = []
    for name in names:
        function: dict[str, Any] = {"name": name, "description": f"the {name} tool"}
        if schema is not None:
            function["parameters"] = schema
        tools.append({"type": "function", "function": function})
    return tools


def anthropic_tools(
    *names: str, schema: dict[str, Any] | None = WEATHER_SCHEMA
) -> list[dict[str, Any]]:
    """Anthropic custom tools with the given names and ``input_schema``."""
    return [
        {
            "name": name,
            "description": f"the {name} tool",
            "input_schema": schema if schema is not None else {"type": "object"},
        }
        for name in names
    ]


def openai_stream_calls(events: list[Event]) -> list[dict[str, Any]]:
    """Tool calls reassembled from an OpenAI stream the way a client must: keyed by index."""
    calls: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.data is None or event.data == "[DONE]":
            continue
        for choice in event.json()["choices"]:
            for delta in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(delta["index"], {"arguments": ""})
                if "id" in delta:
                    assert "id" not in call, "a call's id and name come once, first"
                    call["id"], call["name"] = delta["id"], delta["function"]["name"]
                call["arguments"] += delta["function"].get("arguments", "")
    return [calls[index] for index in sorted(calls)]


def anthropic_stream_blocks(events: list[Event]) -> list[dict[str, Any]]:
    """Content blocks reassembled from an Anthropic stream, tool inputs as JSON text."""
    blocks: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.event == "content_block_start":
            payload = event.json()
            block = dict(payload["content_block"])
            if block["type"] == "tool_use":
                assert block["input"] == {}
                block["partial_json"] = ""
            blocks[payload["index"]] = block
        elif event.event == "content_block_delta":
            payload = event.json()
            block, delta = blocks[payload["index"]], payload["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] += delta["signature"]
            elif kind == "input_json_delta":
                block["partial_json"] += delta["partial_json"]
            else:
                raise AssertionError(f"unexpected delta {kind}")
    return [blocks[index] for index in sorted(blocks)]


def png_bytes(padding: int = 0) -> bytes:
    """A valid 1x1 PNG, optionally grown with a private ancillary chunk of ``padding`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x00")
    extra = chunk(b"ruSt", b"\x00" * padding) if padding else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def png_base64(padding: int = 0) -> str:
    return base64.b64encode(png_bytes(padding)).decode()
