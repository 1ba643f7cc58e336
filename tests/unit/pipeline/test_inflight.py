import asyncio
from typing import cast

import pytest

from server.domain import ModelCall
from server.errors import RelayUnavailableError
from server.pipeline.base import Handler
from server.pipeline.inflight import InFlightStage, ProviderLoad

from .fakes import CATALOG, ScriptedModels, routed_call

GPT = CATALOG.models["gpt-4.1"]


async def test_a_try_counts_for_its_provider_while_it_runs():
    load = ProviderLoad(["openai", "anthropic"], {"openai": 20})
    gate = asyncio.Event()

    class Waits:
        async def query(self, item):
            await gate.wait()

    task = asyncio.create_task(
        InFlightStage(cast(Handler[ModelCall], Waits()), load).query(
            ModelCall(routed_call(), GPT, 10)
        )
    )
    await asyncio.sleep(0)
    assert load.snapshot() == {"anthropic": (0, 0), "openai": (1, 20)}
    gate.set()
    await task
    assert load.in_flight("openai") == 0


async def test_failures_and_closed_streams_stop_counting():
    load = ProviderLoad(["openai"])
    models = ScriptedModels({"gpt-4.1": RelayUnavailableError("x", 503)})
    stage = InFlightStage(models, load)
    with pytest.raises(RelayUnavailableError):
        await stage.query(ModelCall(routed_call(), GPT, 10))
    stage = InFlightStage(ScriptedModels({"gpt-4.1": ["a", "b"]}), load)
    stream = stage.stream(ModelCall(routed_call(), GPT, 10))
    await anext(stream)
    assert load.in_flight("openai") == 1
    await stream.aclose()
    assert load.in_flight("openai") == 0
