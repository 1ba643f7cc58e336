"""StreamQuery as text: deltas as they arrive, the summary once the stream ends.

:class:`TextStream` (sync) and :class:`AsyncTextStream` (asyncio) differ only
in how they read; :class:`_StreamState` follows the contract for both: one
``start``, ``delta`` messages (and tool-call and reasoning messages, in the
order produced), exactly one ``end``.

Iterating a stream yields its text; ``events()`` yields every event as a
typed value (:mod:`switchyard_client.events`). Both read the same messages,
and the text path allocates nothing beyond the text itself.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Protocol

import grpc
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.conversation import (
    Message,
    Reasoning,
    RedactedReasoning,
    Thought,
    ToolCall,
    ToolResults,
    follow_up,
)
from switchyard_client.errors import InternalError, translated
from switchyard_client.events import (
    ReasoningDelta,
    StreamEvent,
    StreamFinished,
    TextDelta,
    ToolCallArguments,
    ToolCallCompleted,
    ToolCallStarted,
)
from switchyard_client.results import Summary, stream_summary


class SyncStreamCall(Protocol):
    """A sync server-streaming call: iterable, and cancellable."""

    def __iter__(self) -> Iterator[pb.StreamQueryResponse]:
        """The messages, as they arrive."""
        ...

    def cancel(self) -> bool:
        """Cancel the call."""
        ...


class _Thinking:
    """One reasoning part as its deltas build it."""

    __slots__ = ("redacted", "signature", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.signature = ""
        self.redacted = ""

    def value(self) -> Thought:
        if self.redacted:
            return RedactedReasoning(self.redacted)
        return Reasoning("".join(self.texts), self.signature)


class _StreamState:
    """What a stream said so far; turns each message into text, an event or bookkeeping."""

    __slots__ = ("calls", "end", "parts", "start", "thinking")

    def __init__(self) -> None:
        self.start: pb.StreamStart | None = None
        self.end: pb.StreamEnd | None = None
        self.parts: list[str] = []
        self.calls: dict[int, ToolCall] = {}
        self.thinking: dict[int, _Thinking] = {}

    def feed(self, message: pb.StreamQueryResponse) -> str | StreamEvent | None:
        """The text a message carries, its event, or None for start and end."""
        kind = message.WhichOneof("event")
        if kind == "delta":  # first: nearly every message is one
            text = message.delta.text
            self.parts.append(text)
            return text
        if kind == "start":
            self.start = message.start
        elif kind == "end":
            self.end = message.end
        elif kind is not None:
            return self._event(kind, message)
        return None

    def _event(self, kind: str, message: pb.StreamQueryResponse) -> StreamEvent | None:
        if kind == "tool_call_start":
            start = message.tool_call_start
            return ToolCallStarted(start.index, start.id, start.name)
        if kind == "tool_call_delta":
            delta = message.tool_call_delta
            return ToolCallArguments(delta.index, delta.arguments)
        if kind == "tool_call_end":
            end = message.tool_call_end
            call = self.calls[end.index] = ToolCall.from_proto(end.call)
            return ToolCallCompleted(end.index, call)
        if kind == "reasoning":
            thought = message.reasoning
            part = self.thinking.get(thought.index)
            if part is None:
                part = self.thinking[thought.index] = _Thinking()
            if thought.text:
                part.texts.append(thought.text)
            part.signature += thought.signature
            part.redacted += thought.redacted_data
            return ReasoningDelta(
                thought.index, thought.text, thought.signature, thought.redacted_data
            )
        return None  # an event of a newer contract: not ours to read

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(self.calls[index] for index in sorted(self.calls))

    def reasoning(self) -> tuple[Thought, ...]:
        return tuple(self.thinking[index].value() for index in sorted(self.thinking))

    def summary(self) -> Summary:
        """The summary of the ended stream; a stream without `end` broke the contract."""
        if self.end is None:
            raise InternalError(
                grpc.StatusCode.INTERNAL, "the stream ended without its end message"
            )
        return stream_summary(self.start or pb.StreamStart(), self.end)


class _StreamView:
    """What both stream classes show about the state."""

    _state: _StreamState
    _summary: Summary | None
    _request: pb.QuerySpec | None

    @property
    def model(self) -> str | None:
        """The model that answers, known once the first text is about to arrive."""
        return self._state.start.model if self._state.start is not None else None

    @property
    def start(self) -> pb.StreamStart | None:
        """The stream's first message: model, provider, route and request id."""
        return self._state.start

    @property
    def text(self) -> str:
        """All text received so far."""
        return "".join(self._state.parts)

    @property
    def request(self) -> pb.QuerySpec | None:
        """The query this stream answers (None when the stream was made without it)."""
        return self._request

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls completed so far, in order (all of them once the stream ended)."""
        return self._state.tool_calls()

    @property
    def reasoning(self) -> tuple[Thought, ...]:
        """The model's reasoning parts so far, with their signatures once complete."""
        return self._state.reasoning()

    def next_messages(
        self, results: ToolResults | None = None, *, prompt: str | None = None
    ) -> list[Message]:
        """The conversation to send next (see Answer.next_messages); once the stream ended."""
        if self._summary is None:  # the answer is not whole yet
            raise RuntimeError("the stream has not ended yet: read it to the end first")
        return follow_up(
            self._request,
            self.text,
            self.reasoning,
            self.tool_calls,
            results=results,
            prompt=prompt,
        )

    @property
    def done(self) -> bool:
        """True once the stream ended with its summary."""
        return self._summary is not None

    @property
    def summary(self) -> Summary:
        """Usage, cost and attempts; available once every delta was read."""
        if self._summary is None:
            raise RuntimeError("the stream has not ended yet: read every delta first")
        return self._summary


class TextStream(_StreamView):
    """The text of a StreamQuery, delta by delta, as it arrives (sync).

    Example::

        with client.stream("Explain CRDTs in two sentences") as stream:
            for text in stream:
                print(text, end="", flush=True)
        print(stream.summary.cost)

    Leaving the ``with`` block early cancels the call, which stops the model.
    Errors are raised as :class:`~switchyard_client.errors.SwitchyardError`.
    """

    def __init__(self, call: SyncStreamCall, request: pb.QuerySpec | None = None) -> None:
        self._call = call
        self._request = request
        self._state = _StreamState()
        self._summary = None
        self._items = self._read()

    def _read(self) -> Generator[str | StreamEvent, None, None]:
        with translated():
            for message in self._call:
                item = self._state.feed(message)
                if item is not None:
                    yield item
        self._summary = self._state.summary()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            item = next(self._items)
            if isinstance(item, str):
                return item

    def events(self) -> Iterator[StreamEvent]:
        """Every event, typed: text, tool calls, reasoning, then StreamFinished."""
        for item in self._items:
            yield TextDelta(item) if isinstance(item, str) else item
        yield StreamFinished(self.summary)

    def cancel(self) -> None:
        """Stop the stream (and the model); a no-op once it ended."""
        self._call.cancel()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.done:
            self.cancel()
        self._items.close()


class AsyncTextStream(_StreamView):
    """The text of a StreamQuery, delta by delta, as it arrives (asyncio).

    Example::

        async with client.stream("Explain CRDTs in two sentences") as stream:
            async for text in stream:
                print(text, end="", flush=True)
        print(stream.summary.cost)
    """

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[pb.StreamQueryRequest, pb.StreamQueryResponse],
        request: pb.QuerySpec | None = None,
    ) -> None:
        self._call = call
        self._request = request
        self._state = _StreamState()
        self._summary = None
        self._items = self._read()

    async def _read(self) -> AsyncGenerator[str | StreamEvent, None]:
        with translated():
            async for message in self._call:
                item = self._state.feed(message)
                if item is not None:
                    yield item
        self._summary = self._state.summary()

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while True:
            item = await anext(self._items)
            if isinstance(item, str):
                return item

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event, typed: text, tool calls, reasoning, then StreamFinished."""
        async for item in self._items:
            yield TextDelta(item) if isinstance(item, str) else item
        yield StreamFinished(self.summary)

    def cancel(self) -> None:
        """Stop the stream (and the model); a no-op once it ended."""
        self._call.cancel()

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.done:
            self.cancel()
        await self._items.aclose()
