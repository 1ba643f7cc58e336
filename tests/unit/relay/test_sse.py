from hypothesis import given
from hypothesis import strategies as st

from server.relay.sse import ServerSentEvent, SSEDecoder


def test_events_split_across_reads_are_reassembled():
    decoder = SSEDecoder()
    assert decoder.feed(b"event: message_start\nda") == []
    assert decoder.has_partial_event
    assert decoder.feed(b'ta: {"a":1}\n') == []
    assert decoder.feed(b"\n") == [ServerSentEvent("message_start", b'{"a":1}')]
    assert not decoder.has_partial_event


def test_one_read_with_many_events_returns_them_all_in_order():
    events = SSEDecoder().feed(b"data: 1\n\ndata: 2\n\n: keep-alive\n\ndata: [DONE]\n\n")
    assert [e.data for e in events] == [b"1", b"2", b"[DONE]"]


def test_crlf_multiline_data_and_ignored_fields():
    events = SSEDecoder().feed(b"id: 7\r\nretry: 10\r\ndata: a\r\ndata: b\r\n\r\n")
    assert events == [ServerSentEvent("", b"a\nb")]


def test_comments_are_dropped_and_event_type_resets():
    decoder = SSEDecoder()
    events = decoder.feed(b": ping\n\nevent: x\ndata: 1\n\ndata: 2\n\n")
    assert events == [ServerSentEvent("x", b"1"), ServerSentEvent("", b"2")]


@given(
    st.lists(
        st.binary(min_size=0, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
        max_size=8,
    ),
    st.data(),
)
def test_any_split_of_a_stream_gives_the_same_events(payloads, data):
    stream = b"".join(b"data: " + p + b"\n\n" for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = SSEDecoder()
    events = []
    last = 0
    for cut in [*cuts, len(stream)]:
        events += decoder.feed(stream[last:cut])
        last = cut
    assert [e.data for e in events] == payloads
