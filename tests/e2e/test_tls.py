"""TLS and mutual TLS with real handshakes, on certificates the tests make (tests/certs.py).

The server's certificate names 127.0.0.1; clients trust the CA that signed
it. With a client CA configured the server requires client certificates and
SWITCHYARD_AUTH=mtls makes the certificate's SPIFFE ID (URI SAN), or its DNS
name, the tenant. Certificates are re-read without a restart: when the files
change, or on SIGHUP.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.admin.v1 import admin_pb2, admin_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.simulator import SimulatorSettings
from tests.certs import CertificateAuthority, Issued
from tests.helpers import until
from tests.leaks import SCAN

from .conftest import BANNER, RELAY_KEY, Gateway, StartGateway, query

ADMIN_KEY = "adm-" + secrets.token_urlsafe(32)
SCAN.secret(ADMIN_KEY)
SPIFFE = "spiffe://example.org/ns/prod/sa/search"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("Switchyard test CA")


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority("someone else's CA")


def server_certificate(ca: CertificateAuthority, folder: Path) -> tuple[Path, Path]:
    return ca.issue("switchyard", dns=("localhost",), ips=("127.0.0.1",)).write(folder)


def channel(
    gateway_port: int, roots: bytes | None, client: Issued | None = None
) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        roots,
        None if client is None else client.key,
        None if client is None else client.cert,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{gateway_port}", credentials)


async def healthy(ch: grpc.aio.Channel) -> bool:
    """Does a health check get through (handshake included)?"""
    try:
        answer = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # a failed handshake
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def tls_gateway(
    start_gateway: StartGateway, ca: CertificateAuthority, tmp_path: Path
) -> Gateway:
    cert, key = server_certificate(ca, tmp_path / "server")
    return await start_gateway(
        env={"SWITCHYARD_TLS_CERT": str(cert), "SWITCHYARD_TLS_KEY": str(key)}
    )


async def test_tls_serves_clients_that_trust_its_ca_and_only_them(
    tls_gateway: Gateway, ca: CertificateAuthority, other_ca: CertificateAuthority
):
    port = tls_gateway.app.port
    plaintext = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    wrong = channel(port, other_ca.pem)
    trusted = channel(port, ca.pem)
    try:
        assert not await healthy(plaintext)  # plaintext to a TLS port fails
        assert not await healthy(wrong)  # a server certificate the client cannot verify
        assert await healthy(trusted)
        answer = await gateway_pb2_grpc.GatewayServiceStub(trusted).Query(
            pb.QueryRequest(query=query("Capital of France? [[sim tokens=3]]"))
        )
        assert answer.content
    finally:
        for ch in (plaintext, wrong, trusted):
            await ch.close()


@pytest.fixture
async def mtls_gateway(
    start_gateway: StartGateway, ca: CertificateAuthority, tmp_path: Path
) -> Gateway:
    cert, key = server_certificate(ca, tmp_path / "server")
    return await start_gateway(
        env={
            "SWITCHYARD_AUTH": "mtls",
            "SWITCHYARD_ADMIN_KEY": ADMIN_KEY,
            "SWITCHYARD_TLS_CERT": str(cert),
            "SWITCHYARD_TLS_KEY": str(key),
            "SWITCHYARD_TLS_CLIENT_CA": str(ca.write(tmp_path / "clients-ca.pem")),
        }
    )


async def test_mtls_maps_the_spiffe_id_or_dns_name_to_its_tenant(
    mtls_gateway: Gateway, ca: CertificateAuthority, other_ca: CertificateAuthority
):
    port = mtls_gateway.app.port
    search = ca.issue("search", uris=(SPIFFE,))
    billing = ca.issue("billing", dns=("billing.prod.svc",))
    stranger = ca.issue("stranger", uris=("spiffe://example.org/ns/prod/sa/stranger",))
    foreign = other_ca.issue("search", uris=(SPIFFE,))
    operator = channel(port, ca.pem, search)
    admin = admin_pb2_grpc.AdminServiceStub(operator)
    bearer = (("authorization", f"Bearer {ADMIN_KEY}"),)
    for name, identity in (("search", SPIFFE), ("billing", "billing.prod.svc")):
        await admin.CreateTenant(
            admin_pb2.CreateTenantRequest(
                tenant=admin_pb2.Tenant(name=name, identities=[identity])
            ),
            metadata=bearer,
        )
    channels = {
        "none": channel(port, ca.pem),
        "foreign": channel(port, ca.pem, foreign),
        "search": operator,
        "billing": channel(port, ca.pem, billing),
        "stranger": channel(port, ca.pem, stranger),
    }
    try:
        assert not await healthy(channels["none"])  # no client certificate: no handshake
        assert not await healthy(channels["foreign"])  # a certificate from another CA
        for tenant in ("search", "billing"):
            stub = gateway_pb2_grpc.GatewayServiceStub(channels[tenant])
            spoof = (("x-switchyard-caller", "someone-else"),)
            await stub.Query(pb.QueryRequest(query=query("hi [[sim tokens=2]]")), metadata=spoof)
            usage = await stub.GetUsage(pb.GetUsageRequest())
            assert (usage.caller, usage.requests) == (tenant, 1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway_pb2_grpc.GatewayServiceStub(channels["stranger"]).GetUsage(
                pb.GetUsageRequest()
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "spiffe://example.org/ns/prod/sa/stranger" in (refused.value.details() or "")
    finally:
        for ch in channels.values():
            await ch.close()


async def test_a_renewed_certificate_is_served_to_new_connections_while_streams_go_on(
    start_gateway: StartGateway,
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    tmp_path: Path,
):
    cert, key = server_certificate(ca, tmp_path / "server")
    gateway = await start_gateway(
        env={"SWITCHYARD_TLS_CERT": str(cert), "SWITCHYARD_TLS_KEY": str(key)},
        sim_settings=SimulatorSettings(latency_scale=0, tokens_per_second=40, api_key=RELAY_KEY),
    )
    port = gateway.app.port
    before = channel(port, ca.pem)
    after = channel(port, other_ca.pem)
    try:
        stream = gateway_pb2_grpc.GatewayServiceStub(before).StreamQuery(
            pb.StreamQueryRequest(query=query("Tell a story [[sim tokens=40]]"))
        )
        first = cast("pb.StreamQueryResponse", await stream.read())
        assert first.WhichOneof("event") == "start"
        renewed = other_ca.issue("switchyard", dns=("localhost",), ips=("127.0.0.1",))
        staged = renewed.write(tmp_path / "staged")
        os.replace(staged[1], key)  # as a certificate manager does: key, then certificate
        os.replace(staged[0], cert)
        await until(lambda: healthy(after), within=10)  # a new connection: the new certificate
        rest: list[pb.StreamQueryResponse] = []
        while (message := await stream.read()) is not grpc.aio.EOF:
            rest.append(
                cast("pb.StreamQueryResponse", message)
            )  # the open stream was never disturbed
        assert rest[-1].WhichOneof("event") == "end"
        assert sum(len(m.delta.text) for m in rest if m.WhichOneof("event") == "delta") > 0
    finally:
        await before.close()
        await after.close()


async def test_sighup_rereads_the_certificate(
    ca: CertificateAuthority, other_ca: CertificateAuthority, tmp_path: Path
):
    cert, key = server_certificate(ca, tmp_path / "server")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OTEL_"))}
    log = tmp_path / "gateway.log"
    SCAN.watch(log)
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server",
            env={
                **clean, "SWITCHYARD_LISTEN": "127.0.0.1:0",
                "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
                "SWITCHYARD_TLS_CERT": str(cert), "SWITCHYARD_TLS_KEY": str(key),
            },
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    assert process.stdout is not None
    banner = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = BANNER.search(banner)
    assert match and "(TLS)" in banner, banner
    port = int(match.group(1))
    after = channel(port, other_ca.pem)
    try:
        stamps = (cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
        renewed = other_ca.issue("switchyard", dns=("localhost",), ips=("127.0.0.1",))
        renewed.write(tmp_path / "server")
        # The same modification times: only the signal can make the gateway look again.
        os.utime(cert, ns=(stamps[0], stamps[0]))
        os.utime(key, ns=(stamps[1], stamps[1]))
        assert not await healthy(after)
        process.send_signal(signal.SIGHUP)
        await until(lambda: healthy(after), within=10)
    finally:
        await after.close()
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert b"TLS: certificate re-read" in log.read_bytes()
