"""The limiter stage: every gate a try needs, taken in order and given back on every path."""

import asyncio
import dataclasses

import pytest

from server.catalog import default_catalog
from server.domain import ModelCall, Outcome
from server.errors import ModelBusyError, RateLimitedError, RelayUnavailableError
from server.pipeline.limiter import LimiterStage, Limits
from server.settings import ConfigError, LimitSettings, load_settings
from server.state.memory import MemoryGates
from tests.helpers import FakeClock, until

from .fakes import CATALOG, ScriptedModels, routed_call

CLOCK = FakeClock()  # read-only here: limits and deadlines share its time


def limits_for(models=None, **limit_fields) -> Limits:
    settings = LimitSettings(**limit_fields)
    models = models or default_catalog().models
    gates = MemoryGates(settings.max_waiters, settings.max_wait, CLOCK)
    return Limits(models.values(), settings, gates)


async def test_limiter_stage_refuses_before_calling_the_relay_and_records_the_skip():
    models = ScriptedModels({"gpt-4.1": ["ok"]})
    stage = LimiterStage(models, limits_for(relay_rpm=60, relay_burst=1), clock=CLOCK)
    call = routed_call(model="gpt-4.1", deadline=CLOCK.monotonic() + 0.2)
    item = ModelCall(call, CATALOG.models["gpt-4.1"], 10)
    await stage.query(item)
    with pytest.raises(RateLimitedError):
        await stage.query(item)
    with pytest.raises(RateLimitedError):
        async for _ in stage.stream(item):
            pass
    assert models.tried == ["gpt-4.1"]
    skipped = [a for a in call.attempts if a.outcome is Outcome.SKIPPED]
    assert len(skipped) == 2 and "relay budget" in skipped[0].error


async def test_model_and_provider_caps_are_released_on_success_error_and_cancel():
    limits = limits_for()
    gpt = CATALOG.models["gpt-4.1"]
    gate = limits.of(gpt)
    models = ScriptedModels(
        {"gpt-4.1": ["a", "b"], "gemini-2.5-flash": RelayUnavailableError("down", 503)}
    )
    stage = LimiterStage(models, limits)
    await stage.query(ModelCall(routed_call(model="gpt-4.1"), gpt, 10))
    gemini = CATALOG.models["gemini-2.5-flash"]
    with pytest.raises(RelayUnavailableError):
        await stage.query(ModelCall(routed_call(model="gemini-2.5-flash"), gemini, 10))
    stream = stage.stream(ModelCall(routed_call(model="gpt-4.1"), gpt, 10))
    await anext(stream)
    assert (gate.model_cap.in_use, gate.provider_cap.in_use) == (1, 1)
    await stream.aclose()
    for cap in (gate.model_cap, gate.provider_cap, limits.of(gemini).model_cap):
        assert cap.in_use == 0


async def test_token_budget_reserves_input_plus_max_tokens_and_refunds_the_unused_part():
    models = dict(default_catalog().models)
    models["gpt-4.1"] = dataclasses.replace(models["gpt-4.1"], tpm=1000)
    limits = limits_for(models)
    gpt = models["gpt-4.1"]
    scripted = ScriptedModels({"gpt-4.1": ["x"] * 7})  # bills 1 input + 7 output tokens
    stage = LimiterStage(scripted, limits)
    call = routed_call(model="gpt-4.1")  # "hi": 5 estimated input tokens
    assert call.route is not None
    call.route = dataclasses.replace(call.route, model=gpt)
    tpm = limits.of(gpt).tpm
    assert tpm is not None
    await stage.query(ModelCall(call, gpt, 995))  # reserves 5 + 995 = 1000, the whole budget
    # the unused 1000 - 8 = 992 came back: 900 more are taken without waiting
    assert await tpm.acquire(900, deadline=CLOCK.monotonic()) == 0.0
    with pytest.raises(ModelBusyError, match="at most 1000 tokens at once"):
        await stage.query(ModelCall(call, gpt, 2000))


async def test_a_full_provider_hands_its_slots_by_the_tenants_weighted_shares():
    # Three openai slots, all held by `heavy` (weight 2): its share is 2 of the 3 against
    # `light` (weight 1). The call's tenant and its weight reach the gates.
    limits = limits_for(provider_concurrency={"openai": 3}, tenant_weights={"heavy": 2})
    gpt = CATALOG.models["gpt-4.1"]
    stage = LimiterStage(ScriptedModels({"gpt-4.1": ["a", "b"]}), limits, clock=CLOCK)
    provider = limits.of(gpt).provider_cap

    async def open_stream(tenant: str):
        """A stream holding its slots: it has yielded its first event and is not read on."""
        stream = stage.stream(ModelCall(routed_call(model="gpt-4.1", tenant=tenant), gpt, 10))
        await anext(stream)
        return stream

    heavy = [await open_stream("heavy") for _ in range(3)]
    light_waiting = [asyncio.create_task(open_stream("light")) for _ in range(2)]
    await until(lambda: provider.waiters == 2)
    heavy_waiting = [asyncio.create_task(open_stream("heavy")) for _ in range(2)]
    await until(lambda: provider.waiters == 4)
    await heavy.pop(0).aclose()  # heavy 2 of 3, light 0: light's first waiter
    await until(lambda: provider.holding("light") == 1)
    await heavy.pop(0).aclose()  # heavy 1 (half its weight), light 1: heavy, though light
    await until(lambda: provider.holding("heavy") == 2)  # queued first
    assert provider.holding("light") == 1 and not light_waiting[1].done()
    for task in light_waiting[1:] + heavy_waiting[1:]:
        task.cancel()
    for task in (light_waiting[0], heavy_waiting[0]):
        heavy.append(await task)
    for stream in heavy:
        await stream.aclose()
    assert (provider.in_use, provider.waiters) == (0, 0)


def test_tenant_weights_come_from_the_environment_or_the_file_and_are_checked(tmp_path):
    assert load_settings(
        {"SWITCHYARD_TENANT_WEIGHTS": "search=3, batch=1"}
    ).limits.tenant_weights == {
        "search": 3,
        "batch": 1,
    }
    config = tmp_path / "switchyard.toml"
    config.write_text('[limits.tenant_weights]\n"billing-svc" = 4\n')
    limits = load_settings({"SWITCHYARD_CONFIG": str(config)}).limits
    assert limits.tenant_weights == {"billing-svc": 4}
    assert Limits(CATALOG.models.values(), limits, MemoryGates(1, 1.0)).weights["billing-svc"] == 4
    for bad in ("search=0", "search=2.5", "search", "=2"):
        with pytest.raises(
            ConfigError,
            match=r"^SWITCHYARD_TENANT_WEIGHTS: expected name=count pairs, each count a whole",
        ):
            load_settings({"SWITCHYARD_TENANT_WEIGHTS": bad})
    with pytest.raises(ConfigError, match="from 1 to 1000"):
        load_settings({"SWITCHYARD_TENANT_WEIGHTS": "search=5000"})
