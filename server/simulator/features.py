"""Answer directives: how a test asks for tool calls, broken JSON, redacted thinking, cache hits.

Fault directives (:mod:`server.simulator.faults`) make the relay fail; these
shape a *successful* answer. A directive is ``[[KIND:VALUE]]`` and is read
from the **last message's own text** only (its text parts; never from tool
results), so a tool round trip ends by itself: the turn that carries the
tool's result has no directive, and the model answers text.

=========================  ===================================================
``[[tool:NAME]]``          call the offered tool NAME, with arguments that fit
                           its JSON Schema (a tool without parameters gets
                           ``{}``)
``[[tool:NAME:empty]]``    call NAME with empty arguments: OpenAI sends
                           ``"arguments": ""``, Anthropic ``"input": {}``
``[[tools:A,B,...]]``      call several tools in one answer (parallel calls);
                           a name may repeat, and take ``:empty`` (``A:empty``)
``[[json:invalid]]``       answer JSON that does NOT fit the requested schema
                           (a required property left out, a property of the
                           wrong type, or a value of the wrong type)
``[[json:invalid:MODEL]]`` the same, from model MODEL only (the others fit
                           it: a fallback that ends in a valid answer)
``[[thinking:redacted]]``  Anthropic, thinking enabled: a ``redacted_thinking``
                           block instead of a ``thinking`` block
``[[cache:write]]``        report the prompt before the last message as written
                           to the prompt cache (Anthropic
                           ``cache_creation_input_tokens``; OpenAI reports no
                           writes)
``[[cache:read]]``         report it as read from the cache (Anthropic
                           ``cache_read_input_tokens``, OpenAI
                           ``prompt_tokens_details.cached_tokens``)
=========================  ===================================================

What the model does, in order:

1. ``tool_choice`` none: never a tool call (tool directives are ignored).
2. ``tool_choice`` naming a tool (OpenAI ``{type: function}``, Anthropic
   ``{type: tool}``): a call to that tool, on every turn, as a forced choice is.
3. Tool directives: those calls (only the first when ``parallel_tool_calls``
   is false or ``disable_parallel_tool_use`` is true).
4. ``tool_choice`` required (Anthropic ``any``): a call to the first tool.
5. Otherwise text: JSON fitting the schema when one is asked for (a JSON
   object for ``json_object``), else the usual simulated sentence; when the
   conversation ends with tool results, the sentence quotes them.

A directive that cannot apply is a 400 naming it: a tool directive without
tools or naming a tool not offered, ``[[json:invalid]]`` without a JSON
format, ``[[thinking:redacted]]`` without thinking. Like fault directives,
these stay in the prompt and count as input.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from server.simulator.faults import DirectiveError
from server.simulator.instances import misfit
from server.simulator.wire import ChatRequest, Features, OutputKind, Tool, ToolChoiceKind

ANSWER_DIRECTIVE = re.compile(r"\[\[(tool|tools|json|thinking|cache):([^\[\]]*)\]\]")
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NO_FEATURES = Features()


class CacheMode(enum.Enum):
    """What a ``[[cache:...]]`` directive reports."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One tool call the answer will make."""

    tool: Tool
    empty: bool = False  # empty arguments, whatever the tool's schema


@dataclass(frozen=True, slots=True)
class AnswerPlan:
    """What the directives and the request's settings ask of a successful answer."""

    calls: tuple[PlannedCall, ...] = ()
    json_invalid: bool = False
    redacted: bool = False
    cache: CacheMode | None = None


def last_text(request: ChatRequest) -> str:
    """The text answer directives are read from: the last message's own text."""
    if request.features is not None:
        return request.features.last_text
    return request.messages[-1].content


def plan_answer(request: ChatRequest) -> AnswerPlan | None:
    """The plan for ``request``; None for plain text without directives (the fast path)."""
    text = last_text(request)
    matches = list(ANSWER_DIRECTIVE.finditer(text)) if "[[" in text else []
    features = request.features
    if features is None and not matches:
        return None
    features = features or _NO_FEATURES
    asked: list[PlannedCall] = []
    json_invalid = redacted = False
    cache = None
    for match in matches:
        kind, value, shown = match.group(1), match.group(2), match.group(0)
        if kind in ("tool", "tools"):
            items = [value] if kind == "tool" else value.split(",")
            asked.extend(_call(shown, item.strip(), features) for item in items)
        elif kind == "json":
            verb, _, only = value.partition(":")
            if verb != "invalid":
                raise DirectiveError(
                    f"{shown}: the only json directives are [[json:invalid]] and"
                    " [[json:invalid:MODEL]]"
                )
            if only and only != request.model:
                continue  # another model's: this one answers JSON that fits
            if features.output is None:
                raise DirectiveError(f"{shown}: the request asks for no JSON output format")
            if features.output.kind is OutputKind.JSON_SCHEMA:
                try:
                    misfit(features.output.schema or {}, b"")
                except ValueError as exc:
                    raise DirectiveError(f"{shown}: {exc}, so no answer can break it") from None
            json_invalid = True
        elif kind == "thinking":
            if value != "redacted":
                raise DirectiveError(
                    f"{shown}: the only thinking directive is [[thinking:redacted]]"
                )
            if features.thinking_budget is None:
                raise DirectiveError(
                    f"{shown}: applies only to Anthropic requests with thinking enabled"
                )
            redacted = True
        else:
            try:
                cache = CacheMode(value)
            except ValueError:
                raise DirectiveError(f"{shown}: use [[cache:read]] or [[cache:write]]") from None
    return AnswerPlan(_calls(features, asked), json_invalid, redacted, cache)


def _call(shown: str, item: str, features: Features) -> PlannedCall:
    name, _, mode = item.partition(":")
    if mode not in ("", "empty"):
        raise DirectiveError(f"{shown}: {item!r}: the only call mode is NAME:empty")
    if not _NAME.fullmatch(name):
        raise DirectiveError(f"{shown}: {name!r} is not a tool name")
    if not features.tools:
        raise DirectiveError(f"{shown}: the request offers no tools")
    for tool in features.tools:
        if tool.name == name:
            return PlannedCall(tool, empty=mode == "empty")
    offered = ", ".join(tool.name for tool in features.tools)
    raise DirectiveError(f"{shown}: no offered tool is named {name!r} (offered: {offered})")


def _calls(features: Features, asked: list[PlannedCall]) -> tuple[PlannedCall, ...]:
    """The calls the answer makes, by the rules of the module docstring."""
    choice = features.tool_choice
    calls: tuple[PlannedCall, ...]
    if not features.tools or choice.kind is ToolChoiceKind.NONE:
        calls = ()
    elif choice.kind is ToolChoiceKind.NAMED:
        named = next(tool for tool in features.tools if tool.name == choice.name)
        calls = tuple(c for c in asked if c.tool.name == choice.name) or (PlannedCall(named),)
    elif asked:
        calls = tuple(asked)
    elif choice.kind is ToolChoiceKind.REQUIRED:
        calls = (PlannedCall(features.tools[0]),)
    else:
        calls = ()
    return calls if features.parallel_tool_calls else calls[:1]
