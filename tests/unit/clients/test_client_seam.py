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
    UnavailableError,
    UnimplementedError,
)

from .fakes import Failure, start_fake

SECRET = "sk-test-0123456789abcdef"


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
