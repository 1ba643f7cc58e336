"""A scripted relay at the httpx transport seam (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import orjson

OPENAI_CHUNKS = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"Hello "}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"world"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\n',
    b"data: [DONE]\n\n",
]


def streamed(chunks: list[bytes], then: Exception | None = None) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if then is not None:
            raise then

    return body()


class MockRelay:
    """Records requests and answers with `respond(request) -> httpx.Response`."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def body(self, index: int = -1) -> dict:
        return orjson.loads(self.requests[index].content)
