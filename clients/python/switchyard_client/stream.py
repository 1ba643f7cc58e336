"""StreamQuery as text: deltas as they arrive, the summary once the stream ends.

:class:`TextStream` (sync) and :class:`AsyncTextStream` (asyncio) differ only
in how they read; :class:`_StreamState` follows the contract for both: one
``start``, ``delta`` messages, exactly one ``end``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Protocol

import grpc
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.errors import InternalError, translated
from switchyard_client.results import Summary, stream_summary


class SyncStreamCall(Protocol):
    """A sync server-streaming call: iterable, and cancellable."""

    def __iter__(self) -> Iterator[pb.StreamQueryResponse]:
        """The messages, as they arrive."""
        ...

    def cancel(self) -> bool:
        """Cancel the call."""
        ...


class _StreamState:
    """What a stream said so far; turns each message into text or bookkeeping."""

    __slots__ = ("end", "parts", "start")

    def __init__(self) -> None:
        self.start: pb.StreamStart | None = None
        self.end: pb.StreamEnd | None = None
        self.parts: list[str] = []

    def feed(self, message: pb.StreamQueryResponse) -> str | None:
        """The text a message carries, or None for start and end."""
        kind = message.WhichOneof("event")
        if kind == "delta":
            self.parts.append(message.delta.text)
            return message.delta.text
        if kind == "start":
            self.start = message.start
        elif kind == "end":
            self.end = message.end
        return None

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

    def __init__(self, call: SyncStreamCall) -> None:
        self._call = call
        self._state = _StreamState()
        self._summary = None
        self._texts = self._read()

    def _read(self) -> Generator[str, None, None]:
        with translated():
            for message in self._call:
                text = self._state.feed(message)
                if text is not None:
                    yield text
        self._summary = self._state.summary()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._texts)

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
        self._texts.close()


class AsyncTextStream(_StreamView):
    """The text of a StreamQuery, delta by delta, as it arrives (asyncio).

    Example::

        async with client.stream("Explain CRDTs in two sentences") as stream:
            async for text in stream:
                print(text, end="", flush=True)
        print(stream.summary.cost)
    """

    def __init__(
        self, call: grpc.aio.UnaryStreamCall[pb.StreamQueryRequest, pb.StreamQueryResponse]
    ) -> None:
        self._call = call
        self._state = _StreamState()
        self._summary = None
        self._texts = self._read()

    async def _read(self) -> AsyncGenerator[str, None]:
        with translated():
            async for message in self._call:
                text = self._state.feed(message)
                if text is not None:
                    yield text
        self._summary = self._state.summary()

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        return await anext(self._texts)

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
        await self._texts.aclose()
