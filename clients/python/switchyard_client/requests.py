"""What to ask: keyword options -> the contract's QuerySpec.

Route, Query and StreamQuery take the same spec, so every client method
takes the same keywords (:class:`QueryOptions`) and builds it here, once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import TypedDict, TypeVar

from switchyard.v1 import gateway_pb2 as pb


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


class QueryOptions(TypedDict, total=False):
    """Everything a query may say besides its prompt (see switchyard.v1.QuerySpec)."""

    messages: Sequence[tuple[str, str]]  # (role, content): role is system, user or assistant
    task: Task | str
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    stop: Sequence[str]
    disable_fallback: bool
    labels: Mapping[str, str]
    cache_mode: CacheMode | str


_ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}
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
    for role, content in options.get("messages", ()):
        if role not in _ROLES:
            raise ValueError(f"message role {role!r} is not one of {', '.join(_ROLES)}")
        spec.messages.append(pb.Message(role=_ROLES[role], content=content))
    if "task" in options:
        spec.task = _TASKS[_member(Task, options["task"], "task")]
    if "cache_mode" in options:
        spec.cache_mode = _CACHE_MODES[_member(CacheMode, options["cache_mode"], "cache_mode")]
    if "temperature" in options:
        spec.temperature = options["temperature"]
    if "top_p" in options:
        spec.top_p = options["top_p"]
    return spec


def _member(kind: type[_E], value: _E | str, option: str) -> _E:
    try:
        return kind(value.lower())
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ValueError(f"{option} {value!r} is not one of {choices}") from None
