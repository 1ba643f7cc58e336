"""A tenant's own request and token budgets a minute (its policy's `rpm` and `tpm`).

Applied once per call, after the cache (an answer from the cache reaches no
model, so it is not counted) and before the budget. The token budget holds the
call's input estimate plus its effective max_tokens and gives back what the
call did not use, like a model's token budget in the limiter. The gates come
from the state backend (``server/state/gates.py``), one per tenant and limit,
so a shared backend holds them across replicas. A refusal is
RESOURCE_EXHAUSTED with a retry-after, naming the tenant's limit; no other
model can avoid it, so there is no fallback.

At most `max_tenants` tenants' gates are kept (SWITCHYARD_MAX_CALLERS); the
tenant seen least recently loses its gates first (a memory gate of a tenant
back later starts full; a Redis gate keeps its state in Redis).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing

from server.domain import Call, Completion, StreamEvent
from server.errors import RateLimitedError
from server.pipeline.base import Handler, Stage
from server.state.gates import GateFactory, RateGate, Ticket


class TenantLimitStage(Stage[Call]):
    """Takes a unit of the tenant's request budget and its tokens, gives back the unused."""

    __slots__ = ("_factory", "_gates", "_max_gates")

    def __init__(
        self, next_handler: Handler[Call], gates: GateFactory, max_tenants: int = 10_000
    ) -> None:
        super().__init__(next_handler)
        self._factory = gates
        self._gates: OrderedDict[tuple[str, str, int], RateGate] = OrderedDict()
        self._max_gates = 2 * max_tenants  # a request and a token budget each

    def _gate(self, tenant: str, kind: str, per_minute: int) -> RateGate:
        key = (tenant, kind, per_minute)  # a new limit is a new gate
        gate = self._gates.get(key)
        if gate is None:
            unit = "requests" if kind == "rpm" else "tokens"
            gate = self._gates[key] = self._factory.rate(
                f"the {'request' if kind == 'rpm' else 'token'} budget of tenant {tenant!r}",
                per_minute,
                per_minute,
                unit=unit,
                error=RateLimitedError,
            )
            if len(self._gates) > self._max_gates:
                self._gates.popitem(last=False)
        else:
            self._gates.move_to_end(key)
        return gate

    async def _take(self, call: Call) -> tuple[Ticket, RateGate | None, int]:
        policy, tenant = call.identity.policy, call.identity.tenant
        assert policy is not None, "only called for a tenant with limits"
        rates: list[tuple[RateGate, float]] = []
        if policy.rpm:
            rates.append((self._gate(tenant, "rpm", policy.rpm), 1))
        tpm, amount = None, 0
        if policy.tpm:
            route = call.route
            assert route is not None, "the router runs before the tenant's limits"
            amount = route.input_tokens + route.max_tokens
            tpm = self._gate(tenant, "tpm", policy.tpm)
            rates.append((tpm, amount))
        return await self._factory.admit((), rates, call.deadline), tpm, amount

    async def _give_back(
        self, call: Call, ticket: Ticket, tpm: RateGate | None, amount: int
    ) -> None:
        if tpm is None:
            await self._factory.give_back(ticket)
            return
        usage = call.usage
        unused = amount - usage.input_tokens - usage.output_tokens
        await self._factory.give_back(ticket, ((tpm, unused),))

    async def query(self, call: Call, /) -> Completion:
        """Take the tenant's limits (when it has any), answer, give back the unused."""
        policy = call.identity.policy
        if policy is None or not (policy.rpm or policy.tpm):
            return await self.next.query(call)
        ticket, tpm, amount = await self._take(call)
        try:
            return await self.next.query(call)
        finally:
            await self._give_back(call, ticket, tpm, amount)

    def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """The same for a stream; a tenant without limits passes straight through."""
        policy = call.identity.policy
        if policy is None or not (policy.rpm or policy.tpm):
            return self.next.stream(call)
        return self._stream(call)

    async def _stream(self, call: Call) -> AsyncGenerator[StreamEvent, None]:
        ticket, tpm, amount = await self._take(call)
        try:
            async with aclosing(self.next.stream(call)) as events:
                async for event in events:
                    yield event
        finally:
            await self._give_back(call, ticket, tpm, amount)
