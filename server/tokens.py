"""Token estimates used before a model has counted anything.

Switchyard never tokenizes: each provider has its own tokenizer and the relay
reports the real counts after the call. Before the call (Route's cost range,
limiter reservations, budget holds) and after an answer that came without a
usage report, it needs a cheap, documented, deterministic estimate:

* a text costs one token per 4 bytes of UTF-8, rounded up (English averages
  about 4 characters a token; CJK text, at 3 bytes a character, comes out near
  one token per character, which is close to what current tokenizers do);
* each message adds 4 tokens for its role and framing (OpenAI's documented
  per-message overhead);
* an image counts `IMAGE_TOKENS`; tool calls, tool definitions and a response
  schema count as the text of their JSON.

`request_tokens` is THE estimate of a request's input: the router computes it
once per call (`RouteDecision.input_tokens`), and the limiter, the budget hold
and the relay's fallback usage all use that figure. The relay simulator
reports input usage with the same rule (`conversation_tokens` over the texts
it received), so estimates and simulated bills agree exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

import orjson

from server.domain import (
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    RedactedReasoningPart,
    Request,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
# An image costs what its pixels do, which only the provider measures; this is
# Anthropic's figure for an image at its largest recommended size (1.15 MP).
IMAGE_TOKENS = 1_600


def text_bytes(text: str) -> int:
    """The UTF-8 size of `text` (what the per-call text limit counts), cheap for ASCII."""
    # len() of ASCII text is its UTF-8 size: skip encoding the common case.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def text_tokens(text: str) -> int:
    """Estimate the tokens of one text: ceil(UTF-8 bytes / 4)."""
    return -(-text_bytes(text) // BYTES_PER_TOKEN)


def part_tokens(part: Part) -> int:
    """Estimate the tokens of one content part."""
    match part:
        case TextPart(text=text):
            return text_tokens(text)
        case ImagePart():
            return IMAGE_TOKENS
        case ToolCallPart(name=name, arguments=arguments):
            return text_tokens(name) + text_tokens(orjson.dumps(arguments).decode())
        case ToolResultPart(content=content):
            return text_tokens(content)
        case ReasoningPart(text=text):
            return text_tokens(text)
        case RedactedReasoningPart(data=data):
            return text_tokens(data)
        case _:
            assert_never(part)


def request_tokens(request: Request) -> int:
    """Estimate the input tokens of a request: every part of every message, plus framing."""
    return definition_tokens(request) + message_tokens(request.messages)


def message_tokens(messages: Iterable[Message]) -> int:
    """The estimate of `messages` with their framing: `request_tokens` without the
    definitions, so a long conversation can be counted a slice of messages at a time."""
    total = 0
    for message in messages:
        parts = message.parts
        if len(parts) == 1 and type(parts[0]) is TextPart:  # the common case: one text
            total += TOKENS_PER_MESSAGE + text_tokens(parts[0].text)
            continue
        total += TOKENS_PER_MESSAGE
        for part in parts:
            total += part_tokens(part)
    return total


def definition_tokens(request: Request) -> int:
    """Tool definitions and a response schema are sent as input too: their JSON (none for
    a plain request)."""
    if request.plain:
        return 0
    total = 0
    for tool in request.tools:
        total += text_tokens(tool.name) + text_tokens(tool.description)
        total += text_tokens(orjson.dumps(tool.parameters).decode())
    fmt = request.response_format
    if fmt is not None and fmt.schema is not None:
        total += text_tokens(orjson.dumps(fmt.schema).decode())
    return total


def conversation_tokens(contents: Iterable[str]) -> int:
    """The same estimate over plain message texts (as the simulator receives them)."""
    return sum(text_tokens(content) + TOKENS_PER_MESSAGE for content in contents)
