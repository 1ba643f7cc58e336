"""The benchmark relay: a minimal OpenAI-compatible chat server that costs almost nothing.

It answers ``POST .../chat/completions`` with a JSON completion, or with SSE when the
body says ``"stream": true`` (content chunks, a finish chunk, a usage chunk with
``"choices": []`` when ``stream_options.include_usage`` is set, then ``data: [DONE]``).
It is written on a raw :class:`asyncio.Protocol` over HTTP/1.1 keep-alive, with the
response bytes prebuilt per model, so that its CPU per request is a small fraction of
any gateway's and it never becomes the bottleneck (the harness reports its CPU too).

The shape of each answer is steered by a directive anywhere in the last message,
because every gateway forwards the prompt verbatim while headers and ``max_tokens``
may be rewritten on the way::

    [relay chunks=64 delay=0.005 first=0 burst=0]

``chunks`` is the number of content tokens (one SSE chunk each, or the length of the
JSON answer), ``delay`` the seconds between chunks, ``first`` the seconds before the
first chunk, and ``burst=1`` writes every chunk in one ``write`` (so a gateway reads
them together). Run it as ``python -m bench.relay --port 0``; it prints
``READY <port>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from dataclasses import dataclass
from typing import Any, cast

import orjson

_DIRECTIVE = re.compile(r"\[relay ([^\]]*)\]")
_TOKEN = " word"
_HEAD_END = b"\r\n\r\n"
_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_CHUNKED_END = b"0\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Shape:
    """How one answer is produced: its length and pacing."""

    chunks: int = 16
    delay: float = 0.0
    first: float = 0.0
    burst: bool = False


def parse_shape(text: str, default: Shape) -> Shape:
    """Read a ``[relay k=v ...]`` directive from a prompt; absent keys keep the default."""
    match = _DIRECTIVE.search(text)
    if match is None:
        return default
    values: dict[str, str] = dict(
        part.split("=", 1) for part in match.group(1).split() if "=" in part
    )
    return Shape(
        chunks=max(1, int(values.get("chunks", default.chunks))),
        delay=float(values.get("delay", default.delay)),
        first=float(values.get("first", default.first)),
        burst=values.get("burst", "1" if default.burst else "0") not in ("0", "false", ""),
    )


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of the chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Templates:
    """Prebuilt response bytes for one model name, so a request costs a few joins."""

    __slots__ = ("done", "finish", "first", "next", "usage_prefix")

    def __init__(self, model: str) -> None:
        def chunk(delta: dict[str, str], finish: str | None) -> bytes:
            event = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return _frame(b"data: " + orjson.dumps(event) + b"\n\n")

        self.first = chunk({"role": "assistant", "content": _TOKEN}, None)
        self.next = chunk({"content": _TOKEN}, None)
        self.finish = chunk({}, "stop")
        self.usage_prefix = orjson.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
            }
        )[:-1]
        self.done = _frame(b"data: [DONE]\n\n") + _CHUNKED_END

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The usage chunk (``"choices": []``) that include_usage asks for."""
        usage = _usage(prompt_tokens, completion_tokens)
        return _frame(b"data: " + self.usage_prefix + b',"usage":' + usage + b"}\n\n")


def _usage(prompt_tokens: int, completion_tokens: int) -> bytes:
    return orjson.dumps(
        {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    )


class RelayProtocol(asyncio.Protocol):
    """One client connection: parses requests, writes answers, honours keep-alive."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        self._transport = cast(asyncio.Transport, transport)
        self._relay.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.open_connections -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        # A keep-alive client sends its next request only after the answer; while a
        # stream is still being written, the bytes simply wait in the buffer.
        while not self._streaming and self._transport is not None:
            end = self._buffer.find(_HEAD_END)
            if end < 0:
                return
            head = self._buffer[:end].lower()
            length = _content_length(head)
            if length < 0:
                self._transport.write(_BAD_REQUEST)
                self._transport.close()
                return
            start = end + len(_HEAD_END)
            if len(self._buffer) < start + length:
                return
            body = self._buffer[start : start + length]
            self._buffer = self._buffer[start + length :]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self._transport is not None
        line_end = head.find(b"\r\n")
        request_line = head[:line_end] if line_end >= 0 else head
        if not request_line.startswith(b"post ") or b"/chat/completions" not in request_line:
            self._transport.write(_NOT_FOUND)
            return
        self._relay.requests += 1
        try:
            request: dict[str, Any] = orjson.loads(body)
            prompt = str(request["messages"][-1]["content"])
            model = str(request.get("model", "bench"))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            self._transport.write(_BAD_REQUEST)
            self._transport.close()
            return
        shape = self._relay.shape_of(prompt)
        prompt_tokens = len(prompt) // 4 + 4
        if request.get("stream"):
            options = request.get("stream_options") or {}
            with_usage = bool(options.get("include_usage"))
            self._stream(self._relay.templates(model), shape, prompt_tokens, with_usage)
        else:
            self._transport.write(self._relay.completion(model, shape.chunks, prompt_tokens))

    def _stream(self, tpl: _Templates, shape: Shape, prompt_tokens: int, with_usage: bool) -> None:
        assert self._transport is not None
        tail = (tpl.usage(prompt_tokens, shape.chunks) if with_usage else b"") + tpl.done
        tail = tpl.finish + tail
        if shape.burst:
            body = tpl.first + tpl.next * (shape.chunks - 1) + tail
            self._transport.write(_SSE_HEAD + body)
            return
        if shape.delay <= 0 and shape.first <= 0:
            # One write per chunk: separate segments, as a model producing tokens quickly.
            self._transport.write(_SSE_HEAD + tpl.first)
            for _ in range(shape.chunks - 1):
                self._transport.write(tpl.next)
            self._transport.write(tail)
            return
        self._streaming = True
        self._transport.write(_SSE_HEAD)
        loop = asyncio.get_running_loop()
        remaining = shape.chunks

        def send() -> None:
            nonlocal remaining
            self._timer = None
            if self._transport is None:
                return
            self._transport.write(tpl.first if remaining == shape.chunks else tpl.next)
            remaining -= 1
            if remaining > 0:
                self._timer = loop.call_later(shape.delay, send)
                return
            self._transport.write(tail)
            self._streaming = False
            if self._buffer:
                self.data_received(b"")

        if shape.first > 0:
            self._timer = loop.call_later(shape.first, send)
        else:
            send()


def _content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased header block; -1 for chunked bodies."""
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return -1 if b"transfer-encoding: chunked" in head else 0
    end = head.find(b"\r\n", at + 2)
    value = head[at + len(b"\r\ncontent-length:") : end if end >= 0 else None]
    try:
        return int(value.strip())
    except ValueError:
        return -1


class Relay:
    """Shared state of the relay: default shape, response caches and counters."""

    def __init__(self, default: Shape) -> None:
        self.default = default
        self.requests = 0
        self.open_connections = 0
        self._shapes: dict[str, Shape] = {}
        self._templates: dict[str, _Templates] = {}
        self._completions: dict[tuple[str, int, int], bytes] = {}

    def shape_of(self, prompt: str) -> Shape:
        """The shape a prompt asks for; directives are cached by their text."""
        match = _DIRECTIVE.search(prompt)
        key = match.group(0) if match else ""
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = parse_shape(key, self.default)
        return shape

    def templates(self, model: str) -> _Templates:
        """The prebuilt SSE chunks of one model name."""
        tpl = self._templates.get(model)
        if tpl is None:
            tpl = self._templates[model] = _Templates(model)
        return tpl

    def completion(self, model: str, tokens: int, prompt_tokens: int) -> bytes:
        """The whole JSON answer (head and body) of a non-streaming request."""
        key = (model, tokens, prompt_tokens)
        cached = self._completions.get(key)
        if cached is None:
            body = orjson.dumps(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": _TOKEN * tokens},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": orjson.loads(_usage(prompt_tokens, tokens)),
                }
            )
            cached = _JSON_HEAD % len(body) + body
            if len(self._completions) < 4096:
                self._completions[key] = cached
        return cached


async def serve(host: str, port: int, default: Shape) -> None:
    """Listen until SIGTERM or SIGINT, printing ``READY <port>`` once bound."""
    relay = Relay(default)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: RelayProtocol(relay), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m bench.relay [--port N] [--chunks N] [--delay S]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--first", type=float, default=0.0)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args(argv)
    default = Shape(chunks=args.chunks, delay=args.delay, first=args.first, burst=args.burst)
    runner: Any = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: PLC0415 - optional accelerator, from the bench extra

            runner = uvloop.run
    try:
        runner(serve(args.host, args.port, default))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
