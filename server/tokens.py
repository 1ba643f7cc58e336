"""Token estimates used before a model has counted anything.

Switchyard never tokenizes: each provider has its own tokenizer and the relay
reports the real counts after the call. Before the call (Route's cost range,
limiter reservations, budget holds) and after an answer that came without a
usage report, it needs a cheap, documented, deterministic estimate:

* a text costs one token per 4 bytes of UTF-8, rounded up (English averages
  about 4 characters a token; CJK text, at 3 bytes a character, comes out near
  one token per character, which is close to what current tokenizers do);
* each message adds 4 tokens for its role and framing (OpenAI's documented
  per-message overhead).

`request_tokens` is THE estimate of a request's input: the router computes it
once per call (`RouteDecision.input_tokens`), and the limiter, the budget hold
and the relay's fallback usage all use that figure. The relay simulator
reports input usage with the same rule (`conversation_tokens` over the texts
it received), so estimates and simulated bills agree exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from server.domain import Part, Request, TextPart

BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def text_tokens(text: str) -> int:
    """Estimate the tokens of one text: ceil(UTF-8 bytes / 4)."""
    # len() of ASCII text is its UTF-8 size: skip encoding the common case.
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return -(-size // BYTES_PER_TOKEN)


def part_tokens(part: Part) -> int:
    """Estimate the tokens of one content part."""
    match part:
        case TextPart(text=text):
            return text_tokens(text)
        case _:
            assert_never(part)


def request_tokens(request: Request) -> int:
    """Estimate the input tokens of a request: every part of every message, plus framing."""
    total = 0
    for message in request.messages:
        total += TOKENS_PER_MESSAGE
        for part in message.parts:
            total += part_tokens(part)
    return total


def conversation_tokens(contents: Iterable[str]) -> int:
    """The same estimate over plain message texts (as the simulator receives them)."""
    return sum(text_tokens(content) + TOKENS_PER_MESSAGE for content in contents)
