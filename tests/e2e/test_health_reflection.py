"""Standard health checking and reflection, as grpcurl and buf curl use them."""

import asyncio
import json
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .conftest import Gateway

BUF = str(Path(sys.executable).parent / "buf")
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
SERVICE = "switchyard.v1.GatewayService"


async def test_health_reports_serving_for_the_server_and_the_service(gateway: Gateway):
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service_and_serves_its_comments(gateway: Gateway):
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    names = {service.name for service in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
    found = await call.read()
    await call.done_writing()
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    gateway_file = next(f for f in files if f.name == "switchyard/v1/gateway.proto")
    comments = [location.leading_comments for location in gateway_file.source_code_info.location]
    assert any("decides which model would answer" in c for c in comments)
    assert "google/type/money.proto" in {f.name for f in files}  # dependencies come along


async def run(tool: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        tool, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_buf_curl_lists_and_streams_without_a_local_proto(gateway: Gateway):
    base = f"http://{gateway.address}"
    listed = await run(
        BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", base
    )
    assert f"{SERVICE}/StreamQuery" in listed and f"{SERVICE}/Route" in listed
    out = await run(
        BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge",
        "-d", '{"query": {"prompt": "Hello from buf [[sim tokens=6]]"}}',
        f"{base}/{SERVICE}/StreamQuery",
    )  # fmt: skip
    messages = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00")]
    assert messages[0]["start"]["model"] == "gemini-2.5-flash"
    assert messages[-1]["end"]["usage"]["outputTokens"] == 6
    assert all("delta" in m for m in messages[1:-1])


async def test_grpcurl_describes_with_comments_and_calls(gateway: Gateway):
    described = await run(GRPCURL, "-plaintext", gateway.address, "describe", SERVICE)
    assert "// Route decides which model would answer the query" in described
    spec = await run(GRPCURL, "-plaintext", gateway.address, "describe", "switchyard.v1.QuerySpec")
    assert "// A model from the catalog" in spec
    out = await run(
        GRPCURL, "-plaintext", "-d", '{"query": {"prompt": "hi [[sim tokens=4]]", "task": "TASK_BATCH"}}',
        gateway.address, f"{SERVICE}/Query",
    )  # fmt: skip
    answer = json.loads(out)
    assert answer["model"] == "deepseek-v3.2"
    assert answer["usage"]["outputTokens"] == 4
