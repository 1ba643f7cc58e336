"""Recorded streams: the simulator's exact bytes for a few answers, in tests/fixtures/streams/.

The gateway's stream decoders are property-tested on these (any split of a
recording into chunks must decode to the same events), so they hold the
shapes that are hard to decode: parallel tool calls interleaved by index, an
empty-arguments call, thinking with its signature before a tool_use, JSON
split mid-token, reasoning usage. Each ``<name>.sse`` is one response body;
``requests.json`` holds the request that produced each one.

Response ids and ``created`` timestamps are pinned, so a recording is byte
for byte what the simulator sends for that request today, and
``test_recorded_streams`` fails when the simulator's output changes. Then
re-record::

    .venv/bin/python -m tests.unit.simulator.streams
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import orjson

from server.simulator import RelaySimulator, SimulatorSettings

from .helpers import GEMINI, GPT, SONNET, WEATHER_SCHEMA, anthropic_tools, openai_tools

DIRECTORY = Path(__file__).resolve().parents[2] / "fixtures" / "streams"
PINNED_CREATED = b'"created":1767225600'
_IDS = re.compile(rb"(chatcmpl-|msg_)[0-9a-f]{24}")
_CREATED = re.compile(rb'"created":\d+')

_OPENAI_TOOLS = [*openai_tools("get_weather"), *openai_tools("get_time", "get_date", schema=None)]
_ANTHROPIC_TOOLS = [
    *anthropic_tools("get_weather"),
    *anthropic_tools("get_time", "get_date", schema=None),
]
_USAGE = {"stream": True, "stream_options": {"include_usage": True}}


def _openai(prompt: str, model: str = GPT, **extra: Any) -> tuple[str, dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **_USAGE, **extra}
    return "/chat/completions", body


def _anthropic(prompt: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    body = {
        "model": SONNET,
        "max_tokens": 4096,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }
    return "/messages", body


THINKING = {"type": "enabled", "budget_tokens": 1024}
RECORDINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai_text": _openai("Tell me about relays [[sim tokens=6]]"),
    "openai_parallel_tools": _openai(
        "Weather in Lyon and Oslo, and the time [[tools:get_weather,get_weather,get_time]]",
        tools=_OPENAI_TOOLS,
    ),
    "openai_empty_args": _openai(
        "What time and date is it? [[tools:get_time:empty,get_date]]", tools=_OPENAI_TOOLS
    ),
    "openai_json_schema": _openai(
        "Weather in Lyon as JSON",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
        },
    ),
    "openai_reasoning": _openai(
        "Why is the sky blue? [[sim tokens=5]]", GEMINI, reasoning_effort="low"
    ),
    "anthropic_text": _anthropic("Tell me about relays [[sim tokens=6]]"),
    "anthropic_parallel_tools": _anthropic(
        "Weather in Lyon and Oslo, and the time [[tools:get_weather,get_weather,get_time]]",
        tools=_ANTHROPIC_TOOLS,
    ),
    "anthropic_empty_args": _anthropic(
        "What time and date is it? [[tools:get_time:empty,get_date]]", tools=_ANTHROPIC_TOOLS
    ),
    "anthropic_thinking_tool_use": _anthropic(
        "Weather in Lyon? [[tool:get_weather]] [[cache:write]]",
        tools=_ANTHROPIC_TOOLS,
        thinking=THINKING,
    ),
    "anthropic_redacted_thinking": _anthropic(
        "Why is the sky blue? [[thinking:redacted]] [[sim tokens=5]]", thinking=THINKING
    ),
}


def pin(data: bytes) -> bytes:
    """``data`` with its response ids and timestamps fixed, so recordings are reproducible."""
    data = _IDS.sub(lambda match: match.group(1) + b"0" * 24, data)
    return _CREATED.sub(PINNED_CREATED, data)


async def record_all() -> dict[str, bytes]:
    """Every recording, from a fresh simulator with no delays."""
    simulator = RelaySimulator(SimulatorSettings(latency_scale=0))
    await simulator.start()
    recorded = {}
    try:
        async with httpx.AsyncClient(base_url=simulator.url, timeout=10) as client:
            for name, (path, body) in RECORDINGS.items():
                response = await client.post(path, json=body)
                response.raise_for_status()
                recorded[name] = pin(response.content)
    finally:
        await simulator.stop()
    return recorded


def requests_json() -> bytes:
    """``requests.json``: the request behind each recording."""
    requests = {name: {"path": path, "body": body} for name, (path, body) in RECORDINGS.items()}
    return orjson.dumps(requests, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main() -> None:
    """Write every recording and the requests file."""
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    for name, data in asyncio.run(record_all()).items():
        (DIRECTORY / f"{name}.sse").write_bytes(data)
    (DIRECTORY / "requests.json").write_bytes(requests_json())
    print(f"wrote {len(RECORDINGS)} recordings to {DIRECTORY.name}/")


if __name__ == "__main__":
    main()
