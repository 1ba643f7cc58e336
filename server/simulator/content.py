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

Requests with tools, a JSON format, reasoning or images (``features``) add,
still deterministically (see :mod:`server.simulator.features` for when each
applies):

* **Input usage** also counts each tool definition (its JSON), each tool
  call's arguments and each tool result as text (one token per 4 bytes, no
  framing), each thinking block sent back, and ``IMAGE_TOKENS`` per image.
* **Tool calls** have arguments from :func:`server.simulator.instances.instance`
  over the tool's schema, as compact JSON, streamed in fragments of 1 to 8
  characters (the first ends inside the first key, so every stream splits
  mid-token). A call counts 1 output token plus one per fragment.
* **JSON answers** are compact JSON fitting the schema (``{"answer": ...}``
  for ``json_object``), one token per chunk of 1 to 6 characters. A
  ``tokens=N`` fault directive sets the length of text answers only.
* **Thinking** (Anthropic, ``thinking`` enabled, not on a turn that carries
  tool results, as Claude thinks at the start of its turn): 12 to 32 words,
  one token each, signed with :func:`sign`; it counts toward ``max_tokens``
  and output usage. **Reasoning tokens** (OpenAI ``reasoning_effort``) are
  counted, never sent: ``REASONING_TOKENS`` by effort.
* **Prompt cache**: a cache directive reports the prompt before the last
  message; an Anthropic ``cache_control`` breakpoint the prompt up to it
  (see :mod:`server.simulator.app`). OpenAI's ``prompt_tokens`` include the
  cached tokens; Anthropic's ``input_tokens`` leave reads and writes out.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from server.simulator.faults import strip_directives
from server.simulator.features import AnswerPlan, PlannedCall
from server.simulator.instances import instance, misfit
from server.simulator.wire import ChatRequest, Features, OutputKind, SignedBlock
from server.tokens import conversation_tokens

MIN_NATURAL_TOKENS = 16
MAX_NATURAL_TOKENS = 64
ECHO_WORDS = 8
IMAGE_TOKENS = 85  # per image, whatever its size (OpenAI's low-detail figure)
MIN_THINKING_TOKENS = 12
MAX_THINKING_TOKENS = 32
REASONING_TOKENS = {"none": 0, "minimal": 8, "low": 32, "medium": 64, "high": 128, "xhigh": 256}
_REDACTED = b"sim-redacted\0"
_NO_FEATURES = Features()

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
    TOOL_CALLS = "tool_calls"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the answer makes: its arguments as written, and as a stream splits them."""

    ref: str  # 24 characters; each wire prefixes its own (``call_``, ``toolu_01``)
    name: str
    arguments: str  # JSON text; "" for an empty-arguments call
    fragments: tuple[str, ...]  # ``arguments`` in stream pieces; () when it is ""

    @property
    def input(self) -> object:
        """The arguments as a JSON value: an empty object when empty or cut short by max_tokens."""
        try:
            return orjson.loads(self.arguments) if self.arguments else {}
        except orjson.JSONDecodeError:
            return {}


@dataclass(frozen=True, slots=True)
class Reasoning:
    """An Anthropic thinking block: its words and signature, or a redacted block's data."""

    tokens: tuple[str, ...]  # empty when redacted
    signature: str = ""
    redacted: str | None = None  # redacted_thinking data
    hidden: int = 0  # tokens a redacted block stands for

    @property
    def text(self) -> str:
        """The thinking text."""
        return "".join(self.tokens)


@dataclass(frozen=True, slots=True)
class Extras:
    """What an answer to a request with features carries beyond its text."""

    reasoning: Reasoning | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    hidden_reasoning: int = 0  # OpenAI reasoning tokens: counted, never sent
    cache_read: int = 0
    cache_write: int = 0
    json: bool = False  # the text is a JSON answer

    @property
    def output_tokens(self) -> int:
        """Output usage beyond the text tokens."""
        total = self.hidden_reasoning + sum(1 + len(call.fragments) for call in self.tool_calls)
        if self.reasoning is not None:
            total += len(self.reasoning.tokens) + self.reasoning.hidden
        return total


@dataclass(frozen=True, slots=True)
class Answer:
    """The tokens a response carries and why they end where they do."""

    tokens: tuple[str, ...]
    finish: Finish
    stop_sequence: str | None = None
    extras: Extras | None = None  # None for a plain text answer to a plain text request

    @property
    def text(self) -> str:
        """The whole answer text."""
        return "".join(self.tokens)

    @property
    def output_tokens(self) -> int:
        """Output usage: text tokens, plus thinking, reasoning and tool calls."""
        if self.extras is None:
            return len(self.tokens)
        return len(self.tokens) + self.extras.output_tokens

    @property
    def steps(self) -> int:
        """Tokens a client receives (reasoning that stays hidden or redacted excluded)."""
        if self.extras is None:
            return len(self.tokens)
        hidden = self.extras.hidden_reasoning
        if self.extras.reasoning is not None:
            hidden += self.extras.reasoning.hidden
        return len(self.tokens) + self.extras.output_tokens - hidden


def sign(key: bytes, text: str) -> str:
    """The signature of a thinking block: base64 of HMAC-SHA256(key, text).

    Anthropic's signatures are opaque; the simulator's are verifiable by the
    simulator alone, which is all a round trip needs.
    """
    return base64.b64encode(hmac.digest(key, text.encode(), "sha256")).decode()


def seal_redacted(key: bytes, text: str) -> str:
    """A redacted_thinking block's data: the text, sealed so it comes back unaltered."""
    body = text.encode()
    return base64.b64encode(hmac.digest(key, _REDACTED + body, "sha256") + body).decode()


def verify(key: bytes, block: SignedBlock) -> bool:
    """Whether a thinking block sent back is one the simulator produced, unaltered."""
    if block.text is not None:
        return hmac.compare_digest(block.seal, sign(key, block.text))
    try:
        raw = base64.b64decode(block.seal, validate=True)
    except ValueError:
        return False
    mac, body = raw[:32], raw[32:]
    return hmac.compare_digest(mac, hmac.digest(key, _REDACTED + body, "sha256"))


def fingerprint(request: ChatRequest) -> bytes:
    """A digest of everything that makes two requests "the same request"."""
    parts: list[object] = [
        request.model,
        request.system,
        [[m.role, m.content] for m in request.messages],
    ]
    if request.features is not None:  # tools, results, images...: what text alone misses
        parts.append(request.features.digest.hex())
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).digest()


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
    tokens = conversation_tokens(request.contents())
    if request.features is not None:
        tokens += request.features.extra_tokens
    return tokens


def prefix_tokens(request: ChatRequest) -> int:
    """Input tokens before the last message: the part of a prompt a cache can hold."""
    if request.features is not None:
        return request.features.prefix_tokens
    return conversation_tokens(request.contents()[:-1])


def natural_length(seed: bytes) -> int:
    """The answer length, in tokens, when nothing forces or caps it."""
    span = MAX_NATURAL_TOKENS - MIN_NATURAL_TOKENS + 1
    return MIN_NATURAL_TOKENS + int(draw(seed, "length") * span)


def _quote(text: str) -> list[str]:
    """The first words of ``text``, directives left out, in quotes and ending with a colon."""
    quoted = strip_directives(text).split()[:ECHO_WORDS]
    if quoted:
        quoted[0] = '"' + quoted[0]
        quoted[-1] += '":'
    else:
        quoted = ['"":']
    return quoted


def _echo(request: ChatRequest) -> list[str]:
    """The header words, quoting the start of the last user message."""
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    return ["Simulated", "answer", "from", request.model, "to", *_quote(last_user)]


def _words(
    request: ChatRequest, seed: bytes, count: int, header: Sequence[str] | None = None
) -> list[str]:
    """The first ``count`` words of the answer: header, then filler from a seeded offset."""
    words = list(_echo(request) if header is None else header)[:count]
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

    return _stopped(request, tokens, finish)


def _stopped(request: ChatRequest, tokens: list[str], finish: Finish) -> Answer:
    """``tokens`` cut before the earliest stop sequence, if one occurs."""
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


def compose_feature_answer(
    request: ChatRequest,
    plan: AnswerPlan,
    *,
    key: bytes,
    forced_length: int | None = None,
    cache_read: int = 0,
    cache_write: int = 0,
) -> Answer:
    """The answer to a request with features (see the module docstring for the rules).

    Generation runs in the order a model's does: thinking (or hidden
    reasoning), then tool calls or text. ``max_tokens`` bounds the sum; a
    budget spent before the end finishes with ``length`` / ``max_tokens``,
    cutting a tool call's arguments or a JSON answer short as a real model
    would. Raises ValueError when ``[[json:invalid]]`` cannot break the schema.
    """
    seed = fingerprint(request)
    features = request.features or _NO_FEATURES
    spent = 0
    reasoning = None
    if features.thinking_budget is not None and not features.tool_results:
        span = MAX_THINKING_TOKENS - MIN_THINKING_TOKENS + 1
        count = min(
            MIN_THINKING_TOKENS + int(draw(seed, "thinking") * span), features.thinking_budget
        )
        about = ["Thinking", "about", *_quote(features.last_text)]
        words = tuple(word + " " for word in _words(request, seed + b"thinking", count, about))
        text = "".join(words)
        if plan.redacted:
            reasoning = Reasoning((), redacted=seal_redacted(key, text), hidden=count)
        else:
            reasoning = Reasoning(words, sign(key, text))
        spent += count
    hidden = 0
    if features.reasoning_effort is not None:
        hidden = REASONING_TOKENS[features.reasoning_effort]
        if request.max_tokens is not None:
            hidden = max(0, min(hidden, request.max_tokens - spent))
        spent += hidden
    room = None if request.max_tokens is None else request.max_tokens - spent
    extras = Extras(reasoning, (), hidden, cache_read, cache_write)
    if room is not None and room <= 0:
        return Answer((), Finish.LENGTH, extras=extras)
    if plan.calls:
        calls, finish = _tool_calls(plan.calls, seed, room)
        return Answer((), finish, extras=replace(extras, tool_calls=calls))

    output = features.output
    if output is not None:
        tokens = _json_tokens(_json_text(request, plan, seed), seed)
        kept = tokens if room is None else tokens[:room]
        finish = Finish.LENGTH if len(kept) < len(tokens) else Finish.END
        extras = replace(extras, json=True)
    else:
        header: list[str] | None = None
        if features.tool_results:
            quoted = _quote(" ".join(features.tool_results))
            header = [
                "Simulated",
                "answer",
                "from",
                request.model,
                "given",
                "tool",
                "result",
                *quoted,
            ]
        natural = natural_length(seed) if forced_length is None else forced_length
        length = natural if room is None else min(natural, room)
        kept = [word + " " for word in _words(request, seed, length, header)]
        finish = Finish.LENGTH if length < natural else Finish.END
    answer = _stopped(request, kept, finish)
    return Answer(answer.tokens, answer.finish, answer.stop_sequence, extras)


def _json_text(request: ChatRequest, plan: AnswerPlan, seed: bytes) -> str:
    """The JSON answer: fitting the requested format (or not, for ``[[json:invalid]]``)."""
    output = request.features.output if request.features is not None else None
    assert output is not None
    if output.kind is OutputKind.JSON_OBJECT:
        schema: object = {"type": "object"}
        value: object = {"answer": " ".join(_words(request, seed, natural_length(seed)))}
    else:
        schema = output.schema if output.schema is not None else {}
        value = None
    if plan.json_invalid:
        value = misfit(schema, seed)
    elif value is None:
        value = instance(schema, seed)
    return orjson.dumps(value).decode()


def _chunks(text: str, seed: bytes, label: str, first: int, largest: int) -> tuple[str, ...]:
    """``text`` in pieces: the first ``first`` characters, then 1 to ``largest`` at a time."""
    pieces = [text[:first]]
    position, index = first, 0
    while position < len(text):
        size = 1 + int(draw(seed, f"{label}{index}") * largest)
        pieces.append(text[position : position + size])
        position += size
        index += 1
    return tuple(piece for piece in pieces if piece)


def _json_tokens(text: str, seed: bytes) -> list[str]:
    """A JSON answer as stream tokens; the first is ``{"``, so a key is always split."""
    return list(_chunks(text, seed, "json", 2, 6))


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _ref(seed: bytes, index: int) -> str:
    """A tool call id's 24 characters, fixed by the request and the call's place."""
    number = int.from_bytes(hashlib.blake2b(seed + b"call%d" % index, digest_size=18).digest())
    chars = []
    for _ in range(24):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


def _tool_calls(
    planned: Sequence[PlannedCall], seed: bytes, room: int | None
) -> tuple[tuple[ToolCall, ...], Finish]:
    """The calls, arguments fitting each tool's schema, cut short if ``room`` runs out."""
    calls: list[ToolCall] = []
    for index, plan in enumerate(planned):
        if plan.empty:
            arguments = ""
        else:
            schema = plan.tool.parameters or {"type": "object"}
            arguments = orjson.dumps(instance(schema, seed + b"args%d" % index)).decode()
        # The first fragment ends inside the first key (`{"k`): streams split mid-token.
        fragments = _chunks(arguments, seed, f"args{index}.", 3, 8) if arguments else ()
        calls.append(ToolCall(_ref(seed, index), plan.tool.name, arguments, fragments))
    if room is None or sum(1 + len(call.fragments) for call in calls) <= room:
        return tuple(calls), Finish.TOOL_CALLS
    kept: list[ToolCall] = []
    for call in calls:
        if room <= 0:
            break
        fragments = call.fragments[: room - 1]
        room -= 1 + len(fragments)
        kept.append(replace(call, arguments="".join(fragments), fragments=fragments))
    return tuple(kept), Finish.LENGTH
