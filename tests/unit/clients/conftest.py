"""Fixtures for the client's tests at the gRPC seam."""

from collections.abc import Iterator

import pytest

from .fakes import RunningFake, start_fake


@pytest.fixture
def fake() -> Iterator[RunningFake]:
    """A FakeGateway on a free loopback port, stopped after the test."""
    running = start_fake()
    yield running
    running.server.stop(None)
