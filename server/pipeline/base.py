"""The stage protocol every step of the pipeline follows.

A stage holds the next handler and takes ONE typed input, so fields can be
added to the input without changing any signature (the shape of Temporal's
interceptors). Unary and streaming calls go through the same stages: a
stage has one method for each, and `Stage` passes both through, so a stage
overrides only what it changes.

Two inputs exist: a `Call` (the whole RPC) above the fallback stage, and a
`ModelCall` (one try of one model) below it::

    class Stamp(Stage[Call]):
        async def query(self, call: Call) -> Completion:
            call.saved_cost = 0          # do something, then hand on
            return await self.next.query(call)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Generic, Protocol, TypeVar

from server.domain import Completion, StreamEvent

In_contra = TypeVar("In_contra", contravariant=True)
StageIn = TypeVar("StageIn")


class Handler(Protocol[In_contra]):
    """Anything that can answer an input, unary or streamed."""

    async def query(self, item: In_contra, /) -> Completion:
        """Answer in one piece."""
        ...

    def stream(self, item: In_contra, /) -> AsyncGenerator[StreamEvent, None]:
        """Answer as a stream: StreamStart, text deltas, then one Completion."""
        ...


class Stage(Generic[StageIn]):
    """A pass-through stage: subclasses override the methods they change."""

    __slots__ = ("next",)

    def __init__(self, next_handler: Handler[StageIn]) -> None:
        self.next = next_handler

    async def query(self, item: StageIn, /) -> Completion:
        """Hand the input to the next handler."""
        return await self.next.query(item)

    def stream(self, item: StageIn, /) -> AsyncGenerator[StreamEvent, None]:
        """Hand the input to the next handler."""
        return self.next.stream(item)
