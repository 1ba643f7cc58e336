"""Accounting: every call's billed attempts, entered once in the ledger.

The stage records a call when it ends, however it ends (answer, error,
caller cancel), from the call's attempt records: each try's usage and exact
cost, so failed tries the relay billed and half-received streams are
counted, and nothing is counted twice.

The ledger sits behind a small protocol so a shared store can replace the
in-memory one without touching any stage.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from server.domain import Call, Completion, Outcome, StreamEvent
from server.pipeline.base import Handler, Stage


@dataclass(slots=True)
class Totals:
    """Running totals for one (caller, model) pair."""

    attempts: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: int = 0  # nano-dollars


class Ledger(Protocol):
    """Where finished calls are entered."""

    def record(self, call: Call) -> None:
        """Enter every attempt of `call`."""
        ...

    def totals(self, caller: str) -> dict[str, Totals]:
        """The caller's totals per model (a copy)."""
        ...


class InMemoryLedger:
    """A ledger in this process's memory; lost on restart."""

    __slots__ = ("_calls", "_totals")

    def __init__(self) -> None:
        self._totals: dict[tuple[str, str], Totals] = {}
        self._calls = 0

    @property
    def calls(self) -> int:
        """Calls entered so far."""
        return self._calls

    def record(self, call: Call) -> None:
        """Enter every attempt of `call` under its caller and model."""
        self._calls += 1
        for attempt in call.attempts:
            if attempt.outcome is Outcome.SKIPPED:
                continue
            key = (call.caller, attempt.model.name)
            totals = self._totals.get(key)
            if totals is None:
                totals = self._totals[key] = Totals()
            totals.attempts += 1
            totals.failures += attempt.outcome is not Outcome.SUCCESS
            totals.input_tokens += attempt.usage.input_tokens
            totals.output_tokens += attempt.usage.output_tokens
            totals.cost += attempt.cost

    def totals(self, caller: str) -> dict[str, Totals]:
        """The caller's totals per model, copied."""
        return {
            model: Totals(t.attempts, t.failures, t.input_tokens, t.output_tokens, t.cost)
            for (who, model), t in self._totals.items()
            if who == caller
        }


class AccountingStage(Stage[Call]):
    """Enters each call in the ledger when it ends."""

    __slots__ = ("_ledger",)

    def __init__(self, next_handler: Handler[Call], ledger: Ledger) -> None:
        super().__init__(next_handler)
        self._ledger = ledger

    async def query(self, call: Call, /) -> Completion:
        """Answer, then account (also on failure)."""
        try:
            return await self.next.query(call)
        finally:
            self._ledger.record(call)

    async def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Stream, then account (also on failure or cancel)."""
        try:
            async with aclosing(self.next.stream(call)) as events:
                async for event in events:
                    yield event
        finally:
            self._ledger.record(call)
