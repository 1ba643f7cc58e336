"""What to ask: keyword options -> the contract's QuerySpec.

Route, Query and StreamQuery take the same spec, so every client method
takes the same keywords (:class:`QueryOptions`) and builds it here, once.
Tools, response formats and message parts are the plain values of
:mod:`switchyard_client.conversation`; a text-only query touches none of them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypedDict, TypeVar

from google.protobuf.message import Message as ProtoMessage
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.conversation import (
    ROLES,
    JsonSchema,
    Message,
    MessageLike,
    Tool,
    ToolLike,
    ToolResults,
    message_of,
    tool_of,
)


class Task(enum.StrEnum):
    """The kind of work; picks the model when no model is named."""

    REASONING = "reasoning"
    CREATIVE = "creative"
    FAST = "fast"
    BATCH = "batch"


class CacheMode(enum.StrEnum):
    """How the gateway's response cache may serve and store a query."""

    DEFAULT = "default"
    BYPASS = "bypass"
    REFRESH = "refresh"


class ReasoningEffort(enum.StrEnum):
    """How much a reasoning model may think before answering."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class QueryOptions(TypedDict, total=False):
    """Everything a query may say besides its prompt (see switchyard.v1.QuerySpec)."""

    # Message values, or (role, text) tuples: role is system, user, assistant or tool
    messages: Sequence[MessageLike]
    system: str  # instructions sent ahead of the conversation
    tools: Sequence[ToolLike]  # Tool values or {"name", "description", "parameters"} dicts
    tool_choice: str | Tool  # "auto", "none", "required", or the tool (or its name) to call
    parallel_tool_calls: bool
    # "text", "json" (any JSON object), a JSON Schema dict, or a JsonSchema value
    response_format: str | Mapping[str, Any] | JsonSchema
    strict: bool  # with a JSON Schema dict: ask the provider to enforce it (OpenAI strict mode)
    reasoning_effort: ReasoningEffort | str
    thinking_budget: int  # the most tokens a reasoning model may think for (1,024 or more)
    task: Task | str
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    stop: Sequence[str]
    disable_fallback: bool
    labels: Mapping[str, str]
    cache_mode: CacheMode | str


_TASKS = {
    Task.REASONING: pb.TASK_REASONING,
    Task.CREATIVE: pb.TASK_CREATIVE,
    Task.FAST: pb.TASK_FAST,
    Task.BATCH: pb.TASK_BATCH,
}
_CACHE_MODES = {
    CacheMode.DEFAULT: pb.CACHE_MODE_DEFAULT,
    CacheMode.BYPASS: pb.CACHE_MODE_BYPASS,
    CacheMode.REFRESH: pb.CACHE_MODE_REFRESH,
}
_EFFORTS = {
    ReasoningEffort.LOW: pb.REASONING_EFFORT_LOW,
    ReasoningEffort.MEDIUM: pb.REASONING_EFFORT_MEDIUM,
    ReasoningEffort.HIGH: pb.REASONING_EFFORT_HIGH,
}
_TOOL_CHOICE_MODES = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}
_FORMATS = {"text": pb.RESPONSE_FORMAT_TYPE_TEXT, "json": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT}
# The options that only tools, formats and reasoning use: checked only when one is given.
_STRUCTURED = frozenset(
    {
        "system",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "strict",
        "reasoning_effort",
        "thinking_budget",
    }
)
# Options whose QuerySpec field has another name.
_FIELDS = {"strict": "response_format", "thinking_budget": "thinking_budget_tokens"}
_E = TypeVar("_E", bound=enum.StrEnum)


def query_spec(prompt: str, options: QueryOptions) -> pb.QuerySpec:
    """The QuerySpec for `prompt` and `options`; ValueError names a bad option.

    The gateway validates everything else (and says why); this only maps
    Python values onto the contract.
    """
    spec = pb.QuerySpec(
        prompt=prompt,
        model=options.get("model", ""),
        max_tokens=options.get("max_tokens", 0),
        stop=list(options.get("stop", ())),
        disable_fallback=options.get("disable_fallback", False),
        labels=dict(options.get("labels", {})),
    )
    for item in options.get("messages", ()):
        if type(item) is tuple:  # the common text message: no Message value in between
            role, content = item
            if role not in ROLES:
                raise ValueError(f"message role {role!r} is not one of {', '.join(ROLES)}")
            spec.messages.append(pb.Message(role=ROLES[role], content=content))
        else:
            spec.messages.append(message_of(item).to_proto())
    if "task" in options:
        spec.task = _TASKS[_member(Task, options["task"], "task")]
    if "cache_mode" in options:
        spec.cache_mode = _CACHE_MODES[_member(CacheMode, options["cache_mode"], "cache_mode")]
    if "temperature" in options:
        spec.temperature = options["temperature"]
    if "top_p" in options:
        spec.top_p = options["top_p"]
    if not _STRUCTURED.isdisjoint(options):
        _structured(spec, options)
    return spec


def _structured(spec: pb.QuerySpec, options: QueryOptions) -> None:
    """Tools, tool choice, response format, reasoning and system instructions."""
    if "system" in options:
        spec.system = options["system"]
    tools = [tool_of(tool) for tool in options.get("tools", ())]
    spec.tools.extend(tool.to_proto() for tool in tools)
    if "tool_choice" in options:
        spec.tool_choice.CopyFrom(_tool_choice(options["tool_choice"]))
    if "parallel_tool_calls" in options:
        spec.parallel_tool_calls = options["parallel_tool_calls"]
    if "response_format" in options:
        spec.response_format.CopyFrom(
            _response_format(options["response_format"], options.get("strict"))
        )
    elif "strict" in options:
        raise ValueError("strict goes with a JSON Schema: pass response_format={...} too")
    if "reasoning_effort" in options:
        effort = _member(ReasoningEffort, options["reasoning_effort"], "reasoning_effort")
        spec.reasoning_effort = _EFFORTS[effort]
    if "thinking_budget" in options:
        spec.thinking_budget_tokens = options["thinking_budget"]


def _tool_choice(choice: str | Tool) -> pb.ToolChoice:
    """ "auto", "none" or "required", else the tool to call: a Tool or its name."""
    if isinstance(choice, Tool):
        return pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name=choice.name)
    mode = _TOOL_CHOICE_MODES.get(choice)
    if mode is not None:
        return pb.ToolChoice(mode=mode)
    if not choice:
        raise ValueError('tool_choice is empty; give "auto", "none", "required" or a tool name')
    return pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, name=choice)


def _response_format(
    value: str | Mapping[str, Any] | JsonSchema, strict: bool | None
) -> pb.ResponseFormat:
    """ "text", "json", a JSON Schema (dict) or a JsonSchema as the contract's ResponseFormat."""
    if isinstance(value, str):
        kind = _FORMATS.get(value.lower())
        if kind is None:
            raise ValueError(
                f"response_format {value!r} is not one of text, json; for a schema, pass the"
                " JSON Schema itself (a dict)"
            )
        if strict is not None:
            raise ValueError("strict goes with a JSON Schema, not with response_format=" + value)
        return pb.ResponseFormat(type=kind)
    if isinstance(value, JsonSchema):
        if strict is not None:
            value = JsonSchema(value.schema, value.name, strict)
        return value.to_proto()
    return JsonSchema(value, strict=bool(strict)).to_proto()


def _member(kind: type[_E], value: _E | str, option: str) -> _E:
    try:
        return kind(value.lower())
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ValueError(f"{option} {value!r} is not one of {choices}") from None


class Turn(Protocol):
    """An answer to follow up: an Answer, or a stream read to its end."""

    @property
    def request(self) -> pb.QuerySpec | None:
        """The query it answered."""
        ...

    def next_messages(
        self, results: ToolResults | None = None, *, prompt: str | None = None
    ) -> list[Message]:
        """The conversation after it."""
        ...


def reply_spec(
    previous: Turn, results: ToolResults | None, prompt: str | None, overrides: QueryOptions
) -> pb.QuerySpec:
    """The query that follows `previous` up: the same spec (model, tools, format, system,
    labels...), its messages grown by the answer, the tool results and `prompt`, and
    the options in `overrides` set anew."""
    if previous.request is None:
        raise ValueError("this answer does not know the query it answered; call query() instead")
    if "messages" in overrides:
        raise ValueError("reply() builds the messages itself; call query(messages=...) instead")
    messages = previous.next_messages(results, prompt=prompt)
    spec = pb.QuerySpec()
    spec.CopyFrom(previous.request)
    spec.ClearField("prompt")
    del spec.messages[:]
    spec.messages.extend(turn.to_proto() for turn in messages)
    if overrides:
        changed: ProtoMessage = query_spec("", overrides)  # untyped field names below
        fields = {_FIELDS.get(key, key) for key in overrides}
        for descriptor, _ in changed.ListFields():
            if descriptor.name not in fields:
                changed.ClearField(descriptor.name)
        whole: ProtoMessage = spec
        for name in fields:
            whole.ClearField(name)  # a field set to its default now means unset, as asked
        whole.MergeFrom(changed)
    return spec
