"""Token estimates used before a model has counted anything.

Switchyard never tokenizes: each provider has its own tokenizer and the relay
reports the real counts after the call. Before the call (Route's cost range,
limiter reservations, budget holds) and after a stream that ended without a
usage report, it needs a cheap, documented, deterministic estimate:

* a text costs one token per 4 bytes of UTF-8, rounded up (English averages
  about 4 characters a token; CJK text, at 3 bytes a character, comes out near
  one token per character, which is close to what current tokenizers do);
* each message adds 4 tokens for its role and framing (OpenAI's documented
  per-message overhead).

The relay simulator reports input usage with the same rule, so estimates and
simulated bills agree exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def text_tokens(text: str) -> int:
    """Estimate the tokens of one text: ceil(UTF-8 bytes / 4)."""
    # len() of ASCII text is its UTF-8 size: skips encoding in the common case.
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return -(-size // BYTES_PER_TOKEN)


def conversation_tokens(contents: Iterable[str]) -> int:
    """Estimate the input tokens of a conversation given its message texts."""
    return sum(text_tokens(content) + TOKENS_PER_MESSAGE for content in contents)
