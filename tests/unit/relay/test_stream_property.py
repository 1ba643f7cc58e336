"""For any split of a recorded provider stream into socket reads, the decoded events
are the same: text, tool-call and reasoning events, and the final calls, reasoning,
usage and finish reason.

The recordings are the simulator's exact bytes (tests/fixtures/streams/, one file
per wire and case: parallel tool calls, an empty-arguments call, thinking then
tool use, plain text), and the hand-written streams of test_wire_tools.py, in the
fragment shapes of the providers' own documentation. A read may end anywhere: in
the middle of a UTF-8 character, of a JSON string, between the CR and LF of a line.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.domain import StreamEvent, TextDelta
from server.relay.sse import SSEDecoder
from server.relay.wires import WIRES

from .test_wire_tools import ANTHROPIC_THINKING_TOOLS, OPENAI_PARALLEL

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "streams"
RECORDED = sorted(FIXTURES.glob("*.sse"))
STREAMS: dict[str, tuple[str, bytes]] = {
    "openai-parallel": ("openai", b"".join(OPENAI_PARALLEL)),
    "anthropic-thinking-tools": ("anthropic", b"".join(ANTHROPIC_THINKING_TOOLS)),
    "anthropic-crlf": ("anthropic", b"".join(ANTHROPIC_THINKING_TOOLS).replace(b"\n", b"\r\n")),
    **{path.stem: (path.stem.split("_", 1)[0], path.read_bytes()) for path in RECORDED},
}


def decode(wire: str, reads: list[bytes]) -> tuple[object, ...]:
    """Everything a stream decodes to, with adjacent text merged (how text is grouped
    into messages follows the reads, and is all that may differ)."""
    sse = SSEDecoder()
    decoder = WIRES[wire].stream_decoder()
    events: list[StreamEvent] = []
    for read in reads:
        text = decoder.feed(sse.feed(read))
        if text:
            events.append(TextDelta(text))
        events.extend(decoder.events)
        decoder.events.clear()
    merged: list[StreamEvent] = []
    for event in events:
        if type(event) is TextDelta and merged and type(merged[-1]) is TextDelta:
            merged[-1] = TextDelta(merged[-1].text + event.text)
        else:
            merged.append(event)
    return (
        tuple(merged),
        decoder.tool_calls,
        decoder.reasoning,
        decoder.usage,
        decoder.finish_reason,
        decoder.done,
        None if decoder.error is None else decoder.error.message,
    )


def test_the_recordings_are_there_for_both_wires():
    wires = {path.stem.split("_", 1)[0] for path in RECORDED}
    assert {"openai", "anthropic"} <= wires, f"no recorded streams in {FIXTURES}"


@pytest.mark.parametrize("name", sorted(STREAMS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_split_decodes_to_the_same_events(name, data):
    wire, body = STREAMS[name]
    whole = decode(wire, [body])
    assert whole[5], f"{name}: the recording is not a complete stream"  # done
    assert whole[6] is None, f"{name}: {whole[6]}"
    cuts = data.draw(
        st.lists(st.integers(min_value=1, max_value=len(body) - 1), max_size=40, unique=True)
    )
    edges = [0, *sorted(cuts), len(body)]
    reads = [body[a:b] for a, b in itertools.pairwise(edges)]
    assert decode(wire, reads) == whole


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_byte_by_byte_decodes_to_the_same_events(name):
    wire, body = STREAMS[name]
    assert decode(wire, [body[i : i + 1] for i in range(len(body))]) == decode(wire, [body])
