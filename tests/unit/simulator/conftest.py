"""Fixtures: a real simulator on a free port (no delays) and an httpx client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from server.simulator import RelaySimulator, SimulatorSettings


@pytest.fixture
async def simulator() -> AsyncIterator[RelaySimulator]:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def client(simulator: RelaySimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.url, timeout=5) as http:
        yield http
