"""Scripted stand-ins for the stage below the one under test."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from server.catalog import default_catalog
from server.domain import (
    Attempt,
    Call,
    Completion,
    FinishReason,
    Identity,
    Message,
    ModelCall,
    Outcome,
    Request,
    Role,
    StreamEvent,
    StreamStart,
    TextDelta,
    Usage,
)
from server.errors import RelayError
from server.pipeline.router import Router
from server.settings import RoutingSettings

CATALOG = default_catalog()
ROUTER = Router(CATALOG, RoutingSettings())


def routed_call(
    text: str = "hi", deadline: float | None = None, tenant: str = "tester", **kwargs
) -> Call:
    request = Request(messages=(Message.of(Role.USER, text),), **kwargs)
    call = Call(request, "rid", Identity(tenant), time.monotonic(), deadline)
    call.route = ROUTER.decide(request)
    return call


class ScriptedModels:
    """Answers per model from a script: an error to raise, or text chunks to send.

    For streams, `fail_after` raises the error after that many chunks.
    """

    def __init__(
        self,
        script: dict[str, RelayError | list[str]],
        fail_after: dict[str, tuple[int, RelayError]] | None = None,
    ):
        self.script = script
        self.fail_after = fail_after or {}
        self.tried: list[str] = []
        self.closed: list[str] = []

    def _record(self, item: ModelCall, outcome: Outcome, usage: Usage = Usage()) -> None:
        item.call.attempts.append(
            Attempt(item.model, outcome, 0.001, usage=usage, cost=usage.output_tokens)
        )

    async def query(self, item: ModelCall, /) -> Completion:
        self.tried.append(item.model.name)
        answer = self.script[item.model.name]
        if isinstance(answer, RelayError):
            self._record(item, Outcome.RETRYABLE_ERROR if answer.retryable else Outcome.FINAL_ERROR)
            raise answer
        usage = Usage(1, len(answer))
        self._record(item, Outcome.SUCCESS, usage)
        return Completion(item.model, "".join(answer), usage, FinishReason.STOP)

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        self.tried.append(item.model.name)
        try:
            answer = self.script[item.model.name]
            if isinstance(answer, RelayError):
                self._record(item, Outcome.RETRYABLE_ERROR)
                raise answer
            limit, error = self.fail_after.get(item.model.name, (len(answer) + 1, None))
            yield StreamStart(item.model)
            for index, chunk in enumerate(answer):
                if index == limit and error is not None:
                    raise error
                yield TextDelta(chunk)
            usage = Usage(1, len(answer))
            self._record(item, Outcome.SUCCESS, usage)
            yield Completion(item.model, "", usage, FinishReason.STOP)
        finally:
            self.closed.append(item.model.name)
