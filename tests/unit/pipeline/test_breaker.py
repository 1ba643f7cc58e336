import pytest

from server.domain import ModelCall, Outcome
from server.errors import CircuitOpenError, RelayAuthError, RelayUnavailableError
from server.pipeline.breaker import Breakers, BreakerStage, CircuitBreaker, CircuitState
from server.settings import BreakerSettings

from .fakes import CATALOG, ScriptedModels, routed_call

SETTINGS = BreakerSettings(failures=3, cooldown=10.0)


def test_opens_after_consecutive_failures_then_probes_once():
    breaker = CircuitBreaker("m", SETTINGS)
    for now in (1.0, 2.0):
        breaker.admit(now)
        breaker.failed(now)
    assert breaker.state(2.0) == (CircuitState.CLOSED, 0.0)
    breaker.admit(3.0)
    breaker.failed(3.0)
    assert breaker.state(4.0) == (CircuitState.OPEN, 9.0)
    with pytest.raises(CircuitOpenError, match="3 failures in a row"):
        breaker.admit(4.0)
    assert breaker.state(13.0)[0] is CircuitState.HALF_OPEN
    breaker.admit(13.0)  # the probe
    with pytest.raises(CircuitOpenError):
        breaker.admit(13.5)  # only one probe at a time
    breaker.failed(14.0)  # the probe failed: open again for a full cooldown
    assert breaker.state(14.0) == (CircuitState.OPEN, 10.0)
    breaker.admit(24.0)
    breaker.succeeded()
    assert breaker.state(24.0) == (CircuitState.CLOSED, 0.0)


def test_a_success_resets_the_count():
    breaker = CircuitBreaker("m", SETTINGS)
    for now in (1.0, 2.0):
        breaker.failed(now)
    breaker.succeeded()
    breaker.failed(3.0)
    assert breaker.state(3.0)[0] is CircuitState.CLOSED


async def test_stage_counts_only_passing_failures_and_records_skips():
    gpt = CATALOG.models["gpt-4.1"]
    breakers = Breakers(CATALOG.models.values(), SETTINGS)
    failing = BreakerStage(
        ScriptedModels({"gpt-4.1": RelayUnavailableError("down", 503)}), breakers
    )
    refused = BreakerStage(ScriptedModels({"gpt-4.1": RelayAuthError("bad key", 401)}), breakers)
    for _ in range(5):  # a bad key says nothing about the model's health
        with pytest.raises(RelayAuthError):
            await refused.query(ModelCall(routed_call(), gpt, 10))
    assert breakers.state(gpt)[0] is CircuitState.CLOSED
    for _ in range(3):
        with pytest.raises(RelayUnavailableError):
            await failing.query(ModelCall(routed_call(), gpt, 10))
    call = routed_call()
    with pytest.raises(CircuitOpenError):
        await failing.query(ModelCall(call, gpt, 10))
    assert [a.outcome for a in call.attempts] == [Outcome.SKIPPED]
    assert "cooling down" in call.attempts[0].error
    with pytest.raises(CircuitOpenError):
        async for _ in failing.stream(ModelCall(routed_call(), gpt, 10)):
            pass


async def test_a_cancelled_stream_releases_the_probe():
    gpt = CATALOG.models["gpt-4.1"]
    breakers = Breakers(CATALOG.models.values(), BreakerSettings(failures=1, cooldown=0.0))
    breaker = breakers.of(gpt)
    breaker.failed(0.0)  # open; with no cooldown the next try is the probe
    stage = BreakerStage(ScriptedModels({"gpt-4.1": ["a", "b"]}), breakers)
    stream = stage.stream(ModelCall(routed_call(), gpt, 10))
    await anext(stream)
    await stream.aclose()  # the caller went away mid-probe
    stage_again = BreakerStage(ScriptedModels({"gpt-4.1": ["a"]}), breakers)
    await stage_again.query(ModelCall(routed_call(), gpt, 10))  # a new probe was allowed
    assert breakers.state(gpt)[0] is CircuitState.CLOSED
