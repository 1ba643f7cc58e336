"""The limiter: Switchyard's own budgets, applied to every relay try.

Each try must get, in this order:

1. a concurrency slot of its model (the catalog's `max_concurrent`) and of
   its provider (anthropic 10, openai 20, google 30, others 5 by default);
2. a unit of the global relay budget (500 requests a minute, bursts of 50);
3. a unit of its model's requests-per-minute budget and, from its model's
   tokens-per-minute budget, the call's input estimate plus its effective
   max_tokens. The unused part of that token reservation is given back when
   the try ends, from the usage the relay billed.

Slots come first because they can be handed back: a try that cannot get
one has not spent any of the scarcer rate budgets. A full cap hands its
freed slots by fair share across callers (the call's tenant, weighted by
`SWITCHYARD_TENANT_WEIGHTS`), so one caller's many calls cannot keep the
others waiting (``server/state/gates.py``). Everything taken is given
back on every path (answer, error, timeout, cancel, shutdown) by one
`finally`.

Which gates exist is decided here (`Limits`); how a gate counts, queues and
refuses is the state backend's (``server/state/gates.py``). A model's own
limits raise ModelBusyError, on which the fallback stage tries the next
model; the global relay budget raises RateLimitedError, which no other model
can avoid.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing

from server import telemetry as semconv
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import Attempt, Completion, ModelCall, ModelSpec, Outcome, StreamEvent
from server.errors import CapacityError, ModelBusyError, RateLimitedError
from server.pipeline.base import Handler, Stage
from server.settings import LimitSettings
from server.state.gates import ConcurrencyGate, GateFactory, RateGate, Ticket
from server.telemetry import Telemetry


class ModelLimits:
    """Everything one model's tries must take, in the order they take it."""

    __slots__ = ("caps", "model_cap", "provider_cap", "rpm", "tpm")

    def __init__(
        self,
        model_cap: ConcurrencyGate,
        provider_cap: ConcurrencyGate,
        rpm: RateGate | None,
        tpm: RateGate | None,
    ) -> None:
        self.model_cap = model_cap
        self.provider_cap = provider_cap
        self.caps = (model_cap, provider_cap)  # in the order they are taken
        self.rpm = rpm
        self.tpm = tpm


class Limits:
    """The global relay budget and every model's and provider's limits."""

    __slots__ = ("_models", "gates", "providers", "relay", "weights")

    def __init__(
        self, models: Iterable[ModelSpec], settings: LimitSettings, gates: GateFactory
    ) -> None:
        self.gates = gates
        self.weights = settings.tenant_weights  # tenant -> its weight in fair shares (else 1)
        self.relay = gates.rate(
            "Switchyard's relay budget",
            settings.relay_rpm,
            settings.relay_burst,
            error=RateLimitedError,
        )
        self.providers: dict[str, ConcurrencyGate] = {}
        self._models: dict[str, ModelLimits] = {}
        for model in models:
            provider = self.providers.get(model.provider)
            if provider is None:
                limit = settings.provider_concurrency.get(
                    model.provider, settings.other_provider_concurrency
                )
                provider = self.providers[model.provider] = gates.concurrency(
                    f"provider {model.provider}", limit
                )
            rpm = tpm = None
            if model.rpm:
                rpm = gates.rate(
                    f"{model.name}'s request budget", model.rpm, model.rpm, error=ModelBusyError
                )
            if model.tpm:
                tpm = gates.rate(
                    f"{model.name}'s token budget",
                    model.tpm,
                    model.tpm,
                    unit="tokens",
                    error=ModelBusyError,
                )
            self._models[model.name] = ModelLimits(
                gates.concurrency(f"model {model.name}", model.max_concurrent), provider, rpm, tpm
            )

    def of(self, model: ModelSpec) -> ModelLimits:
        """The limits of `model`."""
        return self._models[model.name]

    def provider_load(self) -> dict[str, tuple[int, int]]:
        """provider -> (tries holding a slot now, the cap), sorted by provider."""
        return {name: (cap.in_use, cap.limit) for name, cap in sorted(self.providers.items())}


class _Taken:
    """What one try holds, to give back when it ends."""

    __slots__ = ("attempts_before", "limits", "reserved", "ticket")

    def __init__(self, limits: ModelLimits, ticket: Ticket, reserved: int) -> None:
        self.limits = limits
        self.ticket = ticket
        self.reserved = reserved  # tokens taken from the model's token budget
        self.attempts_before = 0


class LimiterStage(Stage[ModelCall]):
    """Takes every limit a try needs before it, and gives it all back after."""

    __slots__ = ("_clock", "_gates", "_limits", "_telemetry")

    def __init__(
        self,
        next_handler: Handler[ModelCall],
        limits: Limits,
        telemetry: Telemetry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(next_handler)
        self._limits = limits
        self._gates = limits.gates
        self._telemetry = telemetry or Telemetry.disabled()
        self._clock = clock

    def _needs(self, item: ModelCall) -> tuple[ModelLimits, list[tuple[RateGate, float]], int]:
        """The model's limits, the rate amounts the try takes, and its token reservation."""
        limits = self._limits.of(item.model)
        rates: list[tuple[RateGate, float]] = [(self._limits.relay, 1)]
        if limits.rpm is not None:
            rates.append((limits.rpm, 1))
        reserved = 0
        if limits.tpm is not None:
            route = item.call.route
            assert route is not None
            reserved = route.input_tokens + item.max_tokens
            rates.append((limits.tpm, reserved))
        return limits, rates, reserved

    def _take_now(self, item: ModelCall) -> _Taken | None:
        """What `item` needs, taken at once when nothing has to wait (most tries: no
        coroutine per gate); None when the gates must be awaited (`_take`)."""
        limits, rates, reserved = self._needs(item)
        ticket = self._gates.admit_now(limits.caps, rates, item.call.identity.tenant)
        if ticket is None:
            return None
        return self._admitted(item, limits, ticket, reserved, 0.0)

    async def _take(self, item: ModelCall) -> _Taken:
        """Take what `item` needs (in one `admit`); the result says what to give back."""
        limits, rates, reserved = self._needs(item)
        clock = self._clock
        started = clock.monotonic()
        try:
            tenant = item.call.identity.tenant
            ticket = await self._gates.admit(
                limits.caps,
                rates,
                item.call.deadline,
                tenant,
                self._limits.weights.get(tenant, 1),
            )
        except CapacityError as exc:  # reported like any try that did not happen
            waited = clock.monotonic() - started
            item.call.attempts.append(
                Attempt(item.model, Outcome.SKIPPED, waited, error=exc.reason)
            )
            self._telemetry.instruments.limiter_rejections.add(
                1, {semconv.GEN_AI_REQUEST_MODEL: item.model.name}
            )
            # No span of its own: the refusal and its wait are an event of the SERVER span.
            item.call.span.add_event(
                semconv.EVENT_LIMITER_REFUSED,
                {
                    semconv.SWITCHYARD_MODEL: item.model.name,
                    semconv.SWITCHYARD_REASON: exc.reason,
                    semconv.ERROR_TYPE: type(exc).__name__,
                    semconv.SWITCHYARD_LIMITER_WAIT_MS: round(waited * 1000, 3),
                },
            )
            raise
        return self._admitted(item, limits, ticket, reserved, clock.monotonic() - started)

    def _admitted(
        self, item: ModelCall, limits: ModelLimits, ticket: Ticket, reserved: int, waited: float
    ) -> _Taken:
        if self._telemetry.tracing:
            self._telemetry.instruments.limiter_wait.record(
                waited, {semconv.GEN_AI_REQUEST_MODEL: item.model.name}
            )
            # The wait goes on the CLIENT span of the try it admits (no span of its own).
            self._telemetry.limiter_waited(item.call.span, waited, ticket.waited > 0)
        taken = _Taken(limits, ticket, reserved)
        taken.attempts_before = len(item.call.attempts)
        return taken

    async def query(self, item: ModelCall, /) -> Completion:
        """Take the limits, try, give them back."""
        taken = self._take_now(item) or await self._take(item)
        try:
            return await self.next.query(item)
        finally:
            refunds = _refunds(taken, item.call.attempts)
            if not self._gates.give_back_now(taken.ticket, refunds):
                await self._gates.give_back(taken.ticket, refunds)

    async def stream(self, item: ModelCall, /) -> AsyncGenerator[StreamEvent, None]:
        """Take the limits, stream, give them back when the stream ends."""
        taken = self._take_now(item) or await self._take(item)
        try:
            async with aclosing(self.next.stream(item)) as events:
                async for event in events:
                    yield event
        finally:
            refunds = _refunds(taken, item.call.attempts)
            if not self._gates.give_back_now(taken.ticket, refunds):
                await self._gates.give_back(taken.ticket, refunds)


def _refunds(taken: _Taken, attempts: list[Attempt]) -> tuple[tuple[RateGate, float], ...]:
    """The unused part of the try's token reservation, to refund to the model's TPM."""
    tpm = taken.limits.tpm
    if tpm is None or not taken.reserved:
        return ()
    used = sum(
        a.usage.input_tokens + a.usage.output_tokens for a in attempts[taken.attempts_before :]
    )
    return ((tpm, taken.reserved - used),)
