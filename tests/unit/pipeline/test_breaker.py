"""The breaker stage: only passing failures count, open circuits are skipped, probes are freed."""

import pytest

from server.domain import CircuitState, ModelCall, Outcome
from server.errors import CircuitOpenError, RelayAuthError, RelayUnavailableError
from server.pipeline.breaker import BreakerStage
from server.settings import BreakerSettings
from server.state.memory import MemoryBreakers
from tests.helpers import FakeClock

from .fakes import CATALOG, ScriptedModels, routed_call

SETTINGS = BreakerSettings(failures=3, cooldown=10.0)
GPT = CATALOG.models["gpt-4.1"]


async def test_stage_counts_only_passing_failures_and_records_skips():
    breakers = MemoryBreakers(CATALOG.models.values(), SETTINGS, FakeClock())
    failing = BreakerStage(
        ScriptedModels({"gpt-4.1": RelayUnavailableError("down", 503)}), breakers
    )
    refused = BreakerStage(ScriptedModels({"gpt-4.1": RelayAuthError("bad key", 401)}), breakers)
    for _ in range(5):  # a bad key says nothing about the model's health
        with pytest.raises(RelayAuthError):
            await refused.query(ModelCall(routed_call(), GPT, 10))
    assert (await breakers.status(GPT.name)).state is CircuitState.CLOSED
    for _ in range(3):
        with pytest.raises(RelayUnavailableError):
            await failing.query(ModelCall(routed_call(), GPT, 10))
    call = routed_call()
    with pytest.raises(CircuitOpenError):
        await failing.query(ModelCall(call, GPT, 10))
    assert [a.outcome for a in call.attempts] == [Outcome.SKIPPED]
    assert "cooling down" in call.attempts[0].error
    with pytest.raises(CircuitOpenError):
        async for _ in failing.stream(ModelCall(routed_call(), GPT, 10)):
            pass


async def test_a_cancelled_stream_releases_the_probe():
    clock = FakeClock()
    breakers = MemoryBreakers(
        CATALOG.models.values(), BreakerSettings(failures=1, cooldown=1.0), clock
    )
    await breakers.failed(GPT.name)  # open
    clock.advance(1.0)  # cooled down: the next try is the probe
    stage = BreakerStage(ScriptedModels({"gpt-4.1": ["a", "b"]}), breakers)
    stream = stage.stream(ModelCall(routed_call(), GPT, 10))
    await anext(stream)
    await stream.aclose()  # the caller went away mid-probe
    stage_again = BreakerStage(ScriptedModels({"gpt-4.1": ["a"]}), breakers)
    await stage_again.query(ModelCall(routed_call(), GPT, 10))  # a new probe was allowed
    assert (await breakers.status(GPT.name)).state is CircuitState.CLOSED
