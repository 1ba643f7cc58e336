"""Circuit breakers: the state machine, and the registry contract on every backend."""

import pytest

from server.domain import CircuitState, CircuitStatus
from server.errors import CircuitOpenError
from server.settings import BreakerSettings
from server.state.breakers import CircuitBreaker
from tests.helpers import FakeClock

from ..pipeline.fakes import CATALOG

SETTINGS = BreakerSettings(failures=3, cooldown=10.0)
GPT = "gpt-4.1"


def test_opens_after_consecutive_failures_then_probes_once():
    breaker = CircuitBreaker("m", SETTINGS)
    for now in (1.0, 2.0):
        breaker.admit(now)
        breaker.failed(now)
    assert breaker.status(2.0) == CircuitStatus(CircuitState.CLOSED, 0.0)
    breaker.admit(3.0)
    breaker.failed(3.0)
    assert breaker.status(4.0) == CircuitStatus(CircuitState.OPEN, 9.0)
    with pytest.raises(CircuitOpenError, match="3 failures in a row"):
        breaker.admit(4.0)
    assert breaker.status(13.0).state is CircuitState.HALF_OPEN
    breaker.admit(13.0)  # the probe
    with pytest.raises(CircuitOpenError):
        breaker.admit(13.5)  # only one probe at a time
    breaker.failed(14.0)  # the probe failed: open again for a full cooldown
    assert breaker.status(14.0) == CircuitStatus(CircuitState.OPEN, 10.0)
    breaker.admit(24.0)
    breaker.succeeded()
    assert breaker.status(24.0) == CircuitStatus(CircuitState.CLOSED, 0.0)


def test_a_success_resets_the_count():
    breaker = CircuitBreaker("m", SETTINGS)
    for now in (1.0, 2.0):
        breaker.failed(now)
    breaker.succeeded()
    breaker.failed(3.0)
    assert breaker.status(3.0).state is CircuitState.CLOSED


async def test_the_registry_opens_cools_down_and_probes_on_its_clock(backend):
    clock = FakeClock()
    breakers = backend.breakers(CATALOG.models.values(), SETTINGS, clock)
    for _ in range(3):
        await breakers.admit(GPT)
        await breakers.failed(GPT)
    assert await breakers.status(GPT) == CircuitStatus(CircuitState.OPEN, 10.0)
    assert breakers.snapshot(GPT).state is CircuitState.OPEN
    assert (await breakers.status("gemini-2.5-flash")).state is CircuitState.CLOSED
    with pytest.raises(CircuitOpenError):
        await breakers.admit(GPT)
    clock.advance(10.0)
    await breakers.admit(GPT)  # the probe
    with pytest.raises(CircuitOpenError):
        await breakers.admit(GPT)
    await breakers.neutral(GPT)  # the probe said nothing: another may go
    await breakers.admit(GPT)
    await breakers.succeeded(GPT)
    assert await breakers.status(GPT) == CircuitStatus(CircuitState.CLOSED, 0.0)
