"""The Python client against a fake gateway on a real socket: what it sends and reads."""

import subprocess

import grpc
import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard_client import (
    TLS,
    AsyncClient,
    Client,
    InternalError,
    Reasoning,
    RedactedReasoning,
    Tool,
    ToolCall,
    UnavailableError,
    UnimplementedError,
    events,
)

from .fakes import Failure, start_fake

SECRET = "sk-test-0123456789abcdef"
WEATHER = Tool("get_weather", "The weather", {"type": "object", "properties": {}})


def _stream(*texts: str, end: bool = True) -> list[pb.StreamQueryResponse]:
    messages = [pb.StreamQueryResponse(start=pb.StreamStart(model="gpt-4.1", request_id="r9"))]
    messages += [pb.StreamQueryResponse(delta=pb.TextDelta(text=text)) for text in texts]
    if end:
        finished = pb.StreamEnd(usage=pb.Usage(input_tokens=3, output_tokens=len(texts)))
        messages.append(pb.StreamQueryResponse(end=finished))
    return messages


def test_caller_api_key_and_extra_metadata_are_sent_and_the_key_is_never_shown(fake):
    fake.gateway.answers["Query"] = pb.QueryResponse(content="ok")
    client = Client(fake.address, caller="search", api_key=SECRET, metadata={"x-team": "core"})
    with client:
        client.query("hi", metadata={"x-trace": "t1"})
    seen = fake.gateway.seen[0].metadata
    assert seen["x-switchyard-caller"] == "search"
    assert seen["authorization"] == f"Bearer {SECRET}"
    assert (seen["x-team"], seen["x-trace"]) == ("core", "t1")
    assert seen["user-agent"].startswith("switchyard-python/")
    assert SECRET not in repr(client) and SECRET not in repr(client._connection)


def test_generation_calls_get_a_long_deadline_and_control_calls_a_short_one(fake):
    fake.gateway.answers["Query"] = pb.QueryResponse()
    fake.gateway.answers["Route"] = pb.RouteResponse()
    with Client(fake.address) as client:
        client.query("hi")
        client.route("hi")
        client.query("hi", timeout=5)
    query, route, custom = (seen.time_remaining for seen in fake.gateway.seen)
    # gRPC sends the deadline as a timeout; allow for its rounding and the trip
    assert query == pytest.approx(120, abs=2)
    assert route == pytest.approx(10, abs=2)
    assert custom == pytest.approx(5, abs=2)


def test_a_stream_yields_text_then_keeps_the_summary(fake):
    fake.gateway.answers["StreamQuery"] = _stream("Hel", "lo")
    with Client(fake.address) as client, client.stream("hi") as stream:
        assert stream.model is None
        with pytest.raises(RuntimeError, match="not ended yet"):
            _ = stream.summary
        assert list(stream) == ["Hel", "lo"]
    assert stream.done and stream.text == "Hello" and stream.model == "gpt-4.1"
    assert (stream.summary.usage.output_tokens, stream.summary.request_id) == (2, "r9")


def test_a_stream_that_ends_without_its_end_message_is_an_error(fake):
    fake.gateway.answers["StreamQuery"] = _stream("partial", end=False)
    with Client(fake.address) as client, pytest.raises(InternalError, match="without its end"):
        list(client.stream("hi"))


def test_stream_errors_are_raised_as_client_errors(fake):
    fake.gateway.failure = Failure(grpc.StatusCode.UNAVAILABLE, "down", request_id="r1")
    with Client(fake.address) as client, pytest.raises(UnavailableError) as caught:
        list(client.stream("hi"))
    assert caught.value.request_id == "r1"


async def test_the_async_client_sends_the_same_and_streams_the_same(fake):
    fake.gateway.answers["StreamQuery"] = _stream("a", "b", "c")
    fake.gateway.answers["GetUsage"] = pb.GetUsageResponse(caller="search", requests=2)
    async with AsyncClient(fake.address, caller="search", api_key=SECRET) as client:
        async with client.stream("hi") as stream:
            texts = [text async for text in stream]
        usage = await client.usage()
    assert texts == ["a", "b", "c"] and stream.summary.usage.output_tokens == 3
    assert usage.requests == 2
    metadata = fake.gateway.seen[0].metadata
    assert metadata["authorization"] == f"Bearer {SECRET}"
    assert metadata["x-switchyard-caller"] == "search"


async def test_async_errors_are_client_errors_too(fake):
    fake.gateway.failure = Failure(grpc.StatusCode.UNIMPLEMENTED, "not yet")
    async with AsyncClient(fake.address) as client:
        with pytest.raises(UnimplementedError):
            await client.usage()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[bytes, bytes]:
    """A self-signed certificate for localhost: (key, cert) in PEM."""
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return (folder / "key.pem").read_bytes(), (folder / "cert.pem").read_bytes()


def test_tls_with_custom_roots_reaches_a_tls_gateway_and_plaintext_does_not(certificate):
    key, cert = certificate
    running = start_fake(grpc.ssl_server_credentials([(key, cert)]))
    try:
        running.gateway.answers["Query"] = pb.QueryResponse(content="secure")
        tls = TLS(root_certificates=cert, server_name="localhost")
        with Client(running.address, tls=tls) as client:
            assert client.query("hi").text == "secure"
        with Client(running.address, control_timeout=2) as plain, pytest.raises(UnavailableError):
            plain.route("hi")
    finally:
        running.server.stop(None)


def _tool_stream() -> list[pb.StreamQueryResponse]:
    """claude thinking, saying a word, then calling two tools (the second with no
    arguments), as the gateway streams it."""
    weather = pb.ToolCall(id="toolu_1", name="get_weather")
    weather.arguments.update({"city": "Lisbon", "days": 2})
    return [
        pb.StreamQueryResponse(start=pb.StreamStart(model="claude-sonnet-4-20250514")),
        pb.StreamQueryResponse(reasoning=pb.ReasoningDelta(index=0, text="The user ")),
        pb.StreamQueryResponse(reasoning=pb.ReasoningDelta(index=0, text="wants weather")),
        pb.StreamQueryResponse(reasoning=pb.ReasoningDelta(index=0, signature="sig-a")),
        pb.StreamQueryResponse(reasoning=pb.ReasoningDelta(index=1, redacted_data="opaque")),
        pb.StreamQueryResponse(delta=pb.TextDelta(text="Checking.")),
        pb.StreamQueryResponse(
            tool_call_start=pb.ToolCallStart(index=0, id="toolu_1", name="get_weather")
        ),
        pb.StreamQueryResponse(tool_call_start=pb.ToolCallStart(index=1, id="toolu_2", name="now")),
        pb.StreamQueryResponse(
            tool_call_delta=pb.ToolCallDelta(index=0, arguments='{"city": "Lis')
        ),
        pb.StreamQueryResponse(
            tool_call_end=pb.ToolCallEnd(index=1, call=pb.ToolCall(id="toolu_2", name="now"))
        ),
        pb.StreamQueryResponse(
            tool_call_delta=pb.ToolCallDelta(index=0, arguments='bon", "days": 2}')
        ),
        pb.StreamQueryResponse(tool_call_end=pb.ToolCallEnd(index=0, call=weather)),
        pb.StreamQueryResponse(
            end=pb.StreamEnd(
                usage=pb.Usage(output_tokens=9), finish_reason=pb.FINISH_REASON_TOOL_CALLS
            )
        ),
    ]


EXPECTED_EVENTS = [
    events.ReasoningDelta(0, "The user "),
    events.ReasoningDelta(0, "wants weather"),
    events.ReasoningDelta(0, "", signature="sig-a"),
    events.ReasoningDelta(1, "", redacted_data="opaque"),
    events.TextDelta("Checking."),
    events.ToolCallStarted(0, "toolu_1", "get_weather"),
    events.ToolCallStarted(1, "toolu_2", "now"),
    events.ToolCallArguments(0, '{"city": "Lis'),
    events.ToolCallCompleted(1, ToolCall("toolu_2", "now", {})),
    events.ToolCallArguments(0, 'bon", "days": 2}'),
    events.ToolCallCompleted(0, ToolCall("toolu_1", "get_weather", {"city": "Lisbon", "days": 2})),
]


def test_stream_events_are_typed_in_order_and_the_text_iterator_yields_only_text(fake):
    fake.gateway.answers["StreamQuery"] = _tool_stream()
    with Client(fake.address) as client:
        with client.stream("Weather?") as stream:
            seen = list(stream.events())
        with client.stream("Weather?") as texts:
            assert list(texts) == ["Checking."]  # today's text-only loop, unchanged
    *middle, finished = seen
    assert middle == EXPECTED_EVENTS
    assert finished == events.StreamFinished(stream.summary)
    assert stream.summary.finish_reason == "TOOL_CALLS"
    for done in (stream, texts):  # both ways of reading keep the calls and the reasoning
        assert [call.id for call in done.tool_calls] == ["toolu_1", "toolu_2"]  # by index
        assert done.reasoning == (
            Reasoning("The user wants weather", "sig-a"),
            RedactedReasoning("opaque"),
        )


def test_stream_reply_sends_the_answer_back_with_its_signature_and_the_results(fake):
    fake.gateway.answers["StreamQuery"] = _tool_stream()
    with Client(fake.address) as client:
        with client.stream("Weather?", model="claude-sonnet-4-20250514", tools=[WEATHER]) as first:
            with pytest.raises(RuntimeError, match="not ended yet"):
                first.next_messages()
            list(first)
        fake.gateway.answers["StreamQuery"] = _stream("It is sunny.")
        results = {"toolu_1": "sunny", "toolu_2": "noon"}
        with client.stream_reply(first, results) as second:
            assert "".join(second) == "It is sunny."
    spec = fake.gateway.seen[1].request.query
    assert spec.model == "claude-sonnet-4-20250514" and [t.name for t in spec.tools] == [
        "get_weather"
    ]
    question, answer, tool = spec.messages
    assert question == pb.Message(role=pb.ROLE_USER, content="Weather?")
    assert answer.role == pb.ROLE_ASSISTANT
    assert answer.parts[0].reasoning == pb.Reasoning(
        text="The user wants weather", signature="sig-a"
    )
    assert answer.parts[1].redacted_reasoning.data == "opaque"
    assert answer.parts[2].text == "Checking."
    assert [p.tool_call.id for p in answer.parts[3:]] == ["toolu_1", "toolu_2"]
    assert [(p.tool_result.tool_call_id, p.tool_result.content) for p in tool.parts] == [
        ("toolu_1", "sunny"),
        ("toolu_2", "noon"),
    ]


def test_reply_sends_the_same_query_with_the_conversation_grown(fake):
    call = pb.ToolCall(id="call_1", name="get_weather")
    fake.gateway.answers["Query"] = pb.QueryResponse(
        tool_calls=[call], finish_reason=pb.FINISH_REASON_TOOL_CALLS
    )
    with Client(fake.address) as client:
        first = client.query("Weather?", tools=[WEATHER], tool_choice="get_weather")
        fake.gateway.answers["Query"] = pb.QueryResponse(content="Sunny.")
        final = client.reply(first, {"call_1": {"sky": "clear"}}, tool_choice="none")
    assert final.text == "Sunny." and final.request is not None
    spec = fake.gateway.seen[1].request.query
    assert spec.tool_choice.mode == pb.TOOL_CHOICE_MODE_NONE  # forced once, then free
    assert spec.messages[2].parts[0].tool_result.content == '{"sky": "clear"}'


async def test_the_async_stream_has_the_same_events_and_reply(fake):
    fake.gateway.answers["StreamQuery"] = _tool_stream()
    async with AsyncClient(fake.address) as client:
        async with client.stream("Weather?") as stream:
            seen = [event async for event in stream.events()]
        fake.gateway.answers["Query"] = pb.QueryResponse(content="Sunny.")
        final = await client.reply(stream, {"toolu_1": "sunny", "toolu_2": "noon"})
    assert seen[:-1] == EXPECTED_EVENTS and isinstance(seen[-1], events.StreamFinished)
    assert final.text == "Sunny."
    assert len(fake.gateway.seen[1].request.query.messages) == 3
