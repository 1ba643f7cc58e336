"""What a conversation holds: messages made of parts, the tools a model may call,
and the JSON an answer must fit, as plain values that map onto the contract.

Example::

    from switchyard_client import Image, Message, Tool

    weather = Tool(
        "get_weather",
        "The weather in a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    messages = [Message.user("What is on this picture?", Image.from_file("chart.png"))]

A part is text (a ``str``), an :class:`Image`, or what an earlier answer and
your tools produced: :class:`ToolCall`, :class:`ToolResult`,
:class:`Reasoning` and :class:`RedactedReasoning`. An answer's
``next_messages()`` (see :func:`follow_up`) builds the next turn from these,
so reasoning signatures and tool-call ids go back exactly as they came.

JSON values cross the contract as ``google.protobuf.Struct``, which holds
numbers as doubles; :func:`plain` turns whole numbers back into ``int`` so a
schema's ``"type": "integer"`` argument arrives as ``3``, not ``3.0``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from switchyard.v1 import gateway_pb2 as pb

ROLES: Mapping[str, pb.Role.ValueType] = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
_ROLE_NAMES = {number: name for name, number in ROLES.items()}
# The image formats the models take, by file suffix (the gateway checks them too).
_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
_JSON_LIMIT = 2**53  # doubles hold whole numbers exactly up to here


@dataclass(frozen=True, slots=True)
class Image:
    """A picture for the model, by http(s) ``url`` or by its ``data`` with a ``media_type``."""

    url: str = ""
    data: bytes = b""
    media_type: str = ""  # "image/png", "image/jpeg", "image/gif" or "image/webp"

    def __post_init__(self) -> None:
        if bool(self.url) == bool(self.data):
            raise ValueError("an Image takes a url or data (bytes), exactly one of them")
        if self.data and not self.media_type:
            raise ValueError(
                "an Image with data needs its media_type, one of "
                + ", ".join(sorted(set(_MEDIA_TYPES.values())))
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Image:
        """The image in a file, its media type from the suffix (.png, .jpg, .gif, .webp)."""
        file = Path(path)
        media_type = _MEDIA_TYPES.get(file.suffix.lower())
        if media_type is None:
            raise ValueError(
                f"{file.name}: cannot tell the image format from its suffix; use one of "
                + ", ".join(_MEDIA_TYPES)
            )
        return cls(data=file.read_bytes(), media_type=media_type)

    def __repr__(self) -> str:  # the bytes would flood a log or a traceback
        source = f"url={self.url!r}" if self.url else f"data=<{len(self.data)} bytes>"
        return f"Image({source}, media_type={self.media_type!r})"

    def to_proto(self) -> pb.Image:
        """As the contract's Image."""
        if self.url:
            return pb.Image(url=self.url, media_type=self.media_type)
        return pb.Image(data=self.data, media_type=self.media_type)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asking for one call of one of the query's tools."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)  # a JSON object; {} for none

    def result(self, content: object, *, is_error: bool = False) -> ToolResult:
        """This call's result: text as it is, anything else as JSON."""
        return ToolResult(self.id, _result_text(content), is_error)

    def to_proto(self) -> pb.ToolCall:
        """As the contract's ToolCall."""
        return pb.ToolCall(
            id=self.id, name=self.name, arguments=struct(self.arguments, f"tool call {self.name}")
        )

    @classmethod
    def from_proto(cls, call: pb.ToolCall) -> ToolCall:
        """From the contract's ToolCall; whole numbers in the arguments are ints."""
        return cls(call.id, call.name, plain(call.arguments))


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one tool call returned; ``is_error`` when it failed and ``content`` says why."""

    tool_call_id: str
    content: str
    is_error: bool = False

    def to_proto(self) -> pb.ToolResult:
        """As the contract's ToolResult."""
        return pb.ToolResult(
            tool_call_id=self.tool_call_id, content=self.content, is_error=self.is_error
        )


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A model's thinking before its answer, with the provider's signature over it."""

    text: str
    signature: str = ""  # send it back unchanged, or the provider refuses the next turn


@dataclass(frozen=True, slots=True)
class RedactedReasoning:
    """Thinking the provider encrypted; only its opaque data, sent back unchanged."""

    data: str


Part = str | Image | ToolCall | ToolResult | Reasoning | RedactedReasoning
Thought = Reasoning | RedactedReasoning


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation: who wrote it, and its parts in order.

    ``Message.user("Describe it", Image(url=...))``, ``Message.assistant(...)``,
    ``Message.system("Be brief.")`` and ``Message.tool(call.result(...))`` build
    the usual ones; a ``(role, text)`` tuple is a text message too.
    """

    role: str  # "system", "user", "assistant" or "tool"
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role {self.role!r} is not one of {', '.join(ROLES)}")

    @classmethod
    def system(cls, text: str) -> Message:
        """Instructions that steer the model."""
        return cls("system", (text,))

    @classmethod
    def user(cls, *parts: str | Image) -> Message:
        """The person or service asking: text and images."""
        return cls("user", parts)

    @classmethod
    def assistant(cls, *parts: Part) -> Message:
        """An earlier answer: its reasoning, text and tool calls, as the answer gave them."""
        return cls("assistant", parts)

    @classmethod
    def tool(cls, *results: ToolResult) -> Message:
        """The results of the tool calls of the assistant message before it."""
        return cls("tool", results)

    @property
    def text(self) -> str:
        """The message's text parts, joined."""
        return "".join(part for part in self.parts if isinstance(part, str))

    def to_proto(self) -> pb.Message:
        """As the contract's Message: plain `content` for one text part, else parts."""
        role = ROLES[self.role]
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return pb.Message(role=role, content=self.parts[0])
        return pb.Message(role=role, parts=[_part_to_proto(part) for part in self.parts])

    @classmethod
    def from_proto(cls, message: pb.Message) -> Message:
        """From the contract's Message (its `content`, or its parts)."""
        role = _ROLE_NAMES.get(message.role)
        if role is None:
            raise ValueError(f"message role {message.role} is not one the contract names")
        if not message.parts:
            return cls(role, (message.content,))
        return cls(role, tuple(_part_from_proto(part) for part in message.parts))


MessageLike = Message | tuple[str, str]


def message_of(item: MessageLike) -> Message:
    """A Message from a Message or a (role, text) tuple."""
    if isinstance(item, Message):
        return item
    role, text = item
    return Message(role, (text,))


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, what it does, and its arguments' JSON Schema.

    ``parameters`` is an object schema (``{"type": "object", "properties": ...}``);
    None means the tool takes no arguments.
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, tool: Mapping[str, Any]) -> Tool:
        """From ``{"name", "description", "parameters"}``; the OpenAI shape
        (``{"type": "function", "function": {...}}``) and Anthropic's
        ``input_schema`` are taken too, so tools can be moved over as they are."""
        if tool.get("type") == "function" and isinstance(tool.get("function"), Mapping):
            tool = tool["function"]
        unknown = set(tool) - {"name", "description", "parameters", "input_schema", "strict"}
        if unknown:
            raise ValueError(
                f"tool {tool.get('name')!r} has unknown keys {sorted(unknown)}; a tool is"
                ' {"name": ..., "description": ..., "parameters": {JSON Schema}}'
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError('a tool needs a "name" (letters, digits, "_" or "-")')
        parameters = tool.get("parameters", tool.get("input_schema"))
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ValueError(f"tool {name!r}: parameters must be a JSON Schema object")
        return cls(name, str(tool.get("description", "")), parameters)

    def to_proto(self) -> pb.Tool:
        """As the contract's Tool."""
        tool = pb.Tool(name=self.name, description=self.description)
        if self.parameters is not None:
            tool.parameters.CopyFrom(struct(self.parameters, f"tool {self.name!r} parameters"))
        return tool


ToolLike = Tool | Mapping[str, Any]


def tool_of(item: ToolLike) -> Tool:
    """A Tool from a Tool or a plain dict."""
    return item if isinstance(item, Tool) else Tool.from_dict(item)


@dataclass(frozen=True, slots=True)
class JsonSchema:
    """The JSON Schema an answer must validate against (the gateway checks it).

    ``strict`` asks the provider to enforce it while generating (OpenAI's strict
    mode); ``name`` labels it for the provider (default "response").
    """

    schema: Mapping[str, Any]
    name: str = ""
    strict: bool = False

    def to_proto(self) -> pb.ResponseFormat:
        """As the contract's ResponseFormat."""
        return pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(
                name=self.name, schema=struct(self.schema, "the JSON Schema"), strict=self.strict
            ),
        )


ToolResults = Mapping[str, object] | Iterable[ToolResult]


def follow_up(
    request: pb.QuerySpec | None,
    text: str,
    reasoning: Sequence[Thought],
    tool_calls: Sequence[ToolCall],
    *,
    results: ToolResults | None = None,
    prompt: str | None = None,
) -> list[Message]:
    """The conversation after an answer: what was sent, the answer, then the tool results.

    The answer becomes an assistant message with its reasoning first (signature
    kept: Anthropic refuses a next turn without it), then its text, then its tool
    calls; `results` (by call id: text, any JSON value, an exception for a failed
    call, or ToolResult values) becomes one tool message in the calls' order;
    `prompt` is a new user message after them.
    """
    if request is None:
        raise ValueError("this answer does not know the query it answered; pass messages yourself")
    messages = [Message.from_proto(message) for message in request.messages]
    if request.prompt:
        messages.append(Message.user(request.prompt))
    parts: list[Part] = [*reasoning]
    if text:
        parts.append(text)
    parts.extend(tool_calls)
    if parts:
        messages.append(Message("assistant", tuple(parts)))
    if tool_calls:
        if results is None:
            names = ", ".join(f"{call.name} ({call.id})" for call in tool_calls)
            raise ValueError(f"the answer asked for tool calls; give a result for each: {names}")
        messages.append(Message("tool", _results_in_order(tool_calls, results)))
    elif results:
        raise ValueError("the answer asked for no tool call; there is nothing to give results for")
    if prompt:
        messages.append(Message.user(prompt))
    return messages


def _results_in_order(calls: Sequence[ToolCall], results: ToolResults) -> tuple[ToolResult, ...]:
    """One result per call, in the calls' order; an unknown or missing id is named."""
    if isinstance(results, Mapping):
        by_id = {
            key: value if isinstance(value, ToolResult) else _result(key, value)
            for key, value in results.items()
        }
    else:
        by_id = {result.tool_call_id: result for result in results}
    ids = {call.id for call in calls}
    unknown = [key for key in by_id if key not in ids]
    if unknown:
        raise ValueError(
            f"results for tool calls the answer did not make: {', '.join(unknown)};"
            f" its calls are {', '.join(call.id for call in calls)}"
        )
    missing = [f"{call.name} ({call.id})" for call in calls if call.id not in by_id]
    if missing:
        raise ValueError(
            f"no result for tool calls {', '.join(missing)}; the providers need one for"
            " every call (report a failure with is_error, or pass the exception)"
        )
    return tuple(by_id[call.id] for call in calls)


def _result(call_id: str, value: object) -> ToolResult:
    if isinstance(value, BaseException):
        return ToolResult(call_id, str(value) or type(value).__name__, is_error=True)
    return ToolResult(call_id, _result_text(value))


def _result_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def struct(value: Mapping[str, Any], what: str) -> struct_pb2.Struct:
    """A JSON object as a Struct; ValueError names `what` when a value is not JSON."""
    built = struct_pb2.Struct()
    try:
        built.update(value)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{what} is not a JSON object: {exc}") from None
    return built


def plain(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; whole numbers as ints."""
    return {key: _plain_value(item) for key, item in value.fields.items()}


def _plain_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < _JSON_LIMIT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return plain(value.struct_value)
    if kind == "list_value":
        return [_plain_value(item) for item in value.list_value.values]
    return None


def thought_from_proto(part: pb.Part) -> Thought:
    """A reasoning part of an answer (QueryResponse.reasoning) as a plain value."""
    if part.WhichOneof("kind") == "redacted_reasoning":
        return RedactedReasoning(part.redacted_reasoning.data)
    return Reasoning(part.reasoning.text, part.reasoning.signature)


def _part_to_proto(part: Part) -> pb.Part:
    match part:
        case str():
            return pb.Part(text=part)
        case Image():
            return pb.Part(image=part.to_proto())
        case ToolCall():
            return pb.Part(tool_call=part.to_proto())
        case ToolResult():
            return pb.Part(tool_result=part.to_proto())
        case Reasoning():
            return pb.Part(reasoning=pb.Reasoning(text=part.text, signature=part.signature))
        case RedactedReasoning():
            return pb.Part(redacted_reasoning=pb.RedactedReasoning(data=part.data))
    raise ValueError(f"{type(part).__name__} is not a message part; see conversation.Part")


def _part_from_proto(part: pb.Part) -> Part:
    kind = part.WhichOneof("kind")
    if kind == "text":
        return part.text
    if kind == "image":
        image = part.image
        if image.WhichOneof("source") == "data":
            return Image(data=image.data, media_type=image.media_type)
        return Image(url=image.url, media_type=image.media_type)
    if kind == "tool_call":
        return ToolCall.from_proto(part.tool_call)
    if kind == "tool_result":
        result = part.tool_result
        return ToolResult(result.tool_call_id, result.content, result.is_error)
    if kind in ("reasoning", "redacted_reasoning"):
        return thought_from_proto(part)
    raise ValueError("an empty message part; set text, image, tool_call or another")
