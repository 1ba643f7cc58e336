"""Deterministic answer text and honest usage for a simulated completion.

The rules, so a test can predict every number:

* **Answer.** The text reads ``Simulated answer from <model> to "<first 8
  words of the last user message>": ...`` followed by filler words. Each
  token is exactly one word plus a trailing space, so the number of tokens
  is the number of words. Simulator directives (``[[sim ...]]``) are left out
  of the echoed words.
* **Length.** The natural length is 16 to 64 tokens, derived from a hash of
  the request; a ``tokens=N`` directive forces it to N. ``max_tokens`` caps
  it (finish reason ``length`` / ``max_tokens``).
* **Stop sequences.** The capped text is cut just before the earliest
  occurrence of any stop sequence (finish reason ``stop`` /
  ``stop_sequence``). A token the cut falls inside is sent up to the cut and
  still counts as one token.
* **Input usage** is :func:`server.tokens.conversation_tokens` over every
  message content, system included, exactly as sent: directives are text
  and count like any text.
* **Output usage** is the number of tokens actually generated, i.e. the
  number of content deltas a stream carries.

The same request (model, system and messages) always yields the same text,
length and latency draw: the hash of the request seeds them all.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

import orjson

from server.simulator.faults import strip_directives
from server.simulator.wire import ChatRequest
from server.tokens import conversation_tokens

MIN_NATURAL_TOKENS = 16
MAX_NATURAL_TOKENS = 64
ECHO_WORDS = 8

# One sentence reads better than forty one-word literals.
_FILLER = (  # noqa: SIM905
    "this reply was written by the Switchyard relay simulator, one word per token, "
    "so that every count a test makes is plain to see; the words carry no meaning "
    "beyond that, and the same request always receives the same words in the same order."
).split()


class Finish(enum.Enum):
    """Why generation ended; each wire names these its own way."""

    END = "end"
    LENGTH = "length"
    STOP_SEQUENCE = "stop_sequence"


@dataclass(frozen=True, slots=True)
class Answer:
    """The tokens a response carries and why they end where they do."""

    tokens: tuple[str, ...]
    finish: Finish
    stop_sequence: str | None = None

    @property
    def text(self) -> str:
        """The whole answer text."""
        return "".join(self.tokens)


def fingerprint(request: ChatRequest) -> bytes:
    """A digest of everything that makes two requests "the same request"."""
    canonical = orjson.dumps(
        [request.model, request.system, [[m.role, m.content] for m in request.messages]]
    )
    return hashlib.blake2b(canonical, digest_size=16).digest()


def conversation_key(request: ChatRequest) -> bytes:
    """A digest of the conversation without directives or model.

    ``times=N`` counts per directive and per conversation, so tests running
    in parallel with different prompts never share a counter, while a retry
    or a fallback to another model (same prompt) does.
    """
    canonical = orjson.dumps(
        [
            strip_directives(request.system or ""),
            [[m.role, strip_directives(m.content)] for m in request.messages],
        ]
    )
    return hashlib.blake2b(canonical, digest_size=16).digest()


def draw(seed: bytes, label: str) -> float:
    """A number strictly between 0 and 1, fixed by ``seed`` and distinct per ``label``."""
    digest = hashlib.blake2b(label.encode() + seed, digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def input_tokens(request: ChatRequest) -> int:
    """Input usage: the shared estimate over every content, system included."""
    return conversation_tokens(request.contents())


def natural_length(seed: bytes) -> int:
    """The answer length, in tokens, when nothing forces or caps it."""
    span = MAX_NATURAL_TOKENS - MIN_NATURAL_TOKENS + 1
    return MIN_NATURAL_TOKENS + int(draw(seed, "length") * span)


def _echo(request: ChatRequest) -> list[str]:
    """The header words, quoting the start of the last user message."""
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    quoted = strip_directives(last_user).split()[:ECHO_WORDS]
    if quoted:
        quoted[0] = '"' + quoted[0]
        quoted[-1] += '":'
    else:
        quoted = ['"":']
    return ["Simulated", "answer", "from", request.model, "to", *quoted]


def _words(request: ChatRequest, seed: bytes, count: int) -> list[str]:
    """The first ``count`` words of the answer: header, then filler from a seeded offset."""
    words = _echo(request)[:count]
    offset = int(draw(seed, "filler") * len(_FILLER))
    words.extend(_FILLER[(offset + i) % len(_FILLER)] for i in range(count - len(words)))
    return words


def compose_answer(request: ChatRequest, *, forced_length: int | None = None) -> Answer:
    """The deterministic answer to ``request`` (see the module docstring for the rules)."""
    seed = fingerprint(request)
    natural = natural_length(seed) if forced_length is None else forced_length
    length = natural if request.max_tokens is None else min(natural, request.max_tokens)
    tokens = [word + " " for word in _words(request, seed, length)]
    finish = Finish.LENGTH if length < natural else Finish.END

    text = "".join(tokens)
    hits = [(text.find(s), i) for i, s in enumerate(request.stop) if s and s in text]
    if not hits:
        return Answer(tuple(tokens), finish)
    cut, which = min(hits)  # earliest occurrence; the first listed breaks a tie
    kept: list[str] = []
    position = 0
    for token in tokens:
        if position + len(token) > cut:
            if cut > position:
                kept.append(token[: cut - position])
            break
        kept.append(token)
        position += len(token)
    return Answer(tuple(kept), Finish.STOP_SEQUENCE, request.stop[which])
