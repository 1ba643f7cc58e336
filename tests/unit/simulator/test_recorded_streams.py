"""The recorded streams in tests/fixtures/streams are what the simulator sends today."""

from __future__ import annotations

import pytest

from .helpers import parse_sse
from .streams import DIRECTORY, RECORDINGS, record_all, requests_json


async def test_recordings_are_up_to_date() -> None:
    recorded = await record_all()
    stale = [
        name for name, data in recorded.items() if (DIRECTORY / f"{name}.sse").read_bytes() != data
    ]
    assert stale == [], f"re-record with `python -m tests.unit.simulator.streams`: {stale}"
    assert (DIRECTORY / "requests.json").read_bytes() == requests_json()


@pytest.mark.parametrize("name", list(RECORDINGS))
def test_recordings_are_complete_event_streams(name: str) -> None:
    events = parse_sse((DIRECTORY / f"{name}.sse").read_text())
    if name.startswith("openai"):
        assert events[-1].data == "[DONE]"
        assert events[-2].json()["usage"]["completion_tokens"] > 0
    else:
        assert [events[0].event, events[-1].event] == ["message_start", "message_stop"]
