"""The budget stage: reserve before the relay is called, settle when the call ends.

It sits below the cache (an answer from the cache costs nothing, so it is
served even to a caller whose budget is spent) and above fallback (one
reservation covers the whole walk down the chain). See ``server/budgets.py``
for what is reserved and why concurrent calls cannot overspend.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from server.budgets import BudgetBook, largest_cost
from server.domain import Call, Completion, StreamEvent
from server.pipeline.base import Handler, Stage


class BudgetStage(Stage[Call]):
    """Holds the call's largest possible cost against its caller's budgets."""

    __slots__ = ("_book",)

    def __init__(self, next_handler: Handler[Call], book: BudgetBook) -> None:
        super().__init__(next_handler)
        self._book = book

    async def query(self, call: Call, /) -> Completion:
        """Reserve (or refuse with RESOURCE_EXHAUSTED), answer, settle."""
        assert call.route is not None, "the router runs before the budget"
        held = self._book.reserve(call.caller, largest_cost(call.route))
        try:
            return await self.next.query(call)
        finally:
            self._book.settle(held, call.cost)

    async def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Reserve before the stream starts; settle however it ends."""
        assert call.route is not None, "the router runs before the budget"
        held = self._book.reserve(call.caller, largest_cost(call.route))
        try:
            async with aclosing(self.next.stream(call)) as events:
                async for event in events:
                    yield event
        finally:
            self._book.settle(held, call.cost)
