"""The budget stage: reserve before the relay is called, settle when the call ends.

It sits below the cache (an answer from the cache costs nothing, so it is
served even to a tenant whose budget is spent) and above fallback (one
reservation covers the whole walk down the chain). What is reserved is
`server.pricing.largest_cost` of the route; the store makes the check and
the hold one atomic step (``server/state/budgets.py``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from server.domain import Call, Completion, StreamEvent
from server.pipeline.base import Handler, Stage
from server.pricing import largest_cost
from server.state.budgets import BudgetStore


class BudgetStage(Stage[Call]):
    """Holds the call's largest possible cost against its tenant's budgets."""

    __slots__ = ("_store",)

    def __init__(self, next_handler: Handler[Call], store: BudgetStore) -> None:
        super().__init__(next_handler)
        self._store = store

    async def query(self, call: Call, /) -> Completion:
        """Reserve (or refuse with RESOURCE_EXHAUSTED), answer, settle."""
        assert call.route is not None, "the router runs before the budget"
        identity = call.identity
        held = await self._store.reserve(identity.tenant, largest_cost(call.route), identity.policy)
        try:
            return await self.next.query(call)
        finally:
            await self._store.settle(held, call.cost)

    async def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Reserve before the stream starts; settle however it ends."""
        assert call.route is not None, "the router runs before the budget"
        identity = call.identity
        held = await self._store.reserve(identity.tenant, largest_cost(call.route), identity.policy)
        try:
            async with aclosing(self.next.stream(call)) as events:
                async for event in events:
                    yield event
        finally:
            await self._store.settle(held, call.cost)
