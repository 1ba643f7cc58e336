"""Fallback: walk the route's chain of models until one answers.

A model is left for the next one when its failure `falls_back`: overload,
rate limit, 5xx, network trouble (after the retry stage gave up on it), a
busy or cooling-down model, or a conversation too long for it (then only
models with a larger context window are tried). Any other failure (bad key,
bad request, the caller's deadline) ends the walk at once: another model
would fail the same way. When more than one model was tried, the caller
gets one error naming each and why, with the status of the decisive one.

Streams fall back only before their first text reaches the caller: once a
model's StreamStart has been passed on, its failure ends the stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing

from server import telemetry as semconv
from server.domain import Attempt, Call, Completion, ModelCall, ModelSpec, Outcome, StreamEvent
from server.errors import AllModelsFailedError, ContextLengthError, SwitchyardError
from server.pipeline.base import Handler


class FallbackStage:
    """Turns a Call into ModelCalls, one model of the chain at a time."""

    __slots__ = ("next",)

    def __init__(self, next_handler: Handler[ModelCall]) -> None:
        self.next = next_handler

    async def query(self, call: Call, /) -> Completion:
        """Answer with the first model of the chain that can."""
        failures: list[tuple[str, SwitchyardError]] = []
        for item in _candidates(call, failures):
            try:
                return await self.next.query(item)
            except SwitchyardError as error:
                failures.append((item.model.name, error))
        raise _exhausted(failures)

    async def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream from the first model of the chain that starts answering."""
        failures: list[tuple[str, SwitchyardError]] = []
        for item in _candidates(call, failures):
            async with aclosing(self.next.stream(item)) as events:
                try:
                    first = await anext(events, None)
                except SwitchyardError as error:
                    failures.append((item.model.name, error))
                    continue
                if first is None:
                    return
                # Committed: from here on, failures belong to this model.
                yield first
                async for event in events:
                    yield event
                return
        raise _exhausted(failures)


def _candidates(call: Call, failures: list[tuple[str, SwitchyardError]]) -> Iterator[ModelCall]:
    """Yield the chain's ModelCalls while the failures so far allow going on."""
    route = call.route
    assert route is not None, "the router runs before fallback"
    min_context = 0
    for model, max_tokens in zip(route.chain, route.chain_max_tokens, strict=True):
        if failures:
            last = failures[-1][1]
            if isinstance(last, ContextLengthError):
                min_context = max(min_context, _window(call, failures[-1][0]) + 1)
            elif not last.falls_back:
                return
        if model.context_window < min_context:
            call.attempts.append(
                Attempt(model, Outcome.SKIPPED, 0.0, error="context window too small")
            )
            continue
        if failures:
            call.span.add_event(
                semconv.EVENT_FALLBACK,
                {
                    semconv.SWITCHYARD_FALLBACK_FROM: failures[-1][0],
                    semconv.SWITCHYARD_FALLBACK_TO: model.name,
                    semconv.SWITCHYARD_REASON: failures[-1][1].reason,
                },
            )
        yield ModelCall(call, model, max_tokens)


def _window(call: Call, name: str) -> int:
    route = call.route
    assert route is not None
    model: ModelSpec = next(m for m in route.chain if m.name == name)
    return model.context_window


def _exhausted(failures: list[tuple[str, SwitchyardError]]) -> SwitchyardError:
    assert failures, "a chain has at least one model, and skips follow a failure"
    if len(failures) == 1:
        return failures[0][1]
    return AllModelsFailedError(failures)
