"""API keys and tenants end to end: the CLI against a running gateway, as an operator works.

Every gateway here runs with SWITCHYARD_AUTH=api_key and an admin key; keys
are made with `switchyard keys create` and used by the Python client and raw
gRPC stubs. The secrets met here are registered with the suite's leak scan.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from switchyard.admin.v1 import admin_pb2, admin_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb

from server.identity import KEY_CACHE_TTL
from tests.helpers import until
from tests.leaks import SCAN

from .conftest import Gateway, StartGateway, details, nanos, query, switchyard

ADMIN_KEY = "adm-" + secrets.token_urlsafe(32)
SCAN.secret(ADMIN_KEY)
KEY_SHAPE = re.compile(r"sy-([0-9a-f]{12})-[A-Za-z0-9_-]{43}")
SIMPLE = "What is the capital of France? [[sim tokens=4]]"
AUTH = {"SWITCHYARD_AUTH": "api_key", "SWITCHYARD_ADMIN_KEY": ADMIN_KEY}


def bearer(key: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"), *extra)


async def admin(gateway: Gateway, *args: str) -> str:
    """A `switchyard tenants|keys ...` command with the admin key from the environment."""
    code, out, err = await switchyard(
        *args, "--address", gateway.address, env={"SWITCHYARD_ADMIN_KEY": ADMIN_KEY}
    )
    assert code == 0, err
    return out


async def new_key(gateway: Gateway, tenant: str, *options: str) -> str:
    """`KEY=$(switchyard keys create --tenant T)`: the whole key, registered with the scan."""
    out = await admin(gateway, "keys", "create", "--tenant", tenant, *options)
    key = out.strip()
    assert KEY_SHAPE.fullmatch(key), "stdout holds the key and nothing else"
    SCAN.secret(key)
    return key


async def call(gateway: Gateway, key: str, *extra: tuple[str, str], **fields: object):
    return await gateway.stub.Query(
        pb.QueryRequest(query=query(SIMPLE, **fields)), metadata=bearer(key, *extra)
    )


async def refusal(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await awaitable
    return failed.value


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    # Not throttled: these tests fail on purpose more often than a peer may (see the last test).
    return await start_gateway(
        env={**AUTH, "SWITCHYARD_CACHE_ENABLED": "false", "SWITCHYARD_AUTH_FAILURE_LIMIT": "0"}
    )


async def test_from_bootstrap_to_a_first_authenticated_call_through_the_cli(gateway: Gateway):
    out = await admin(
        gateway, "tenants", "create", "search", "--daily-budget", "20", "--rpm", "600"
    )
    assert out.startswith("search: daily budget $20.00;") and "rpm 600" in out
    key = await new_key(gateway, "search", "--name", "search-prod", "--expires", "30d")
    code, answer, summary = await switchyard(
        "query", SIMPLE, "--address", gateway.address, env={"SWITCHYARD_API_KEY": key}
    )
    assert code == 0 and answer.startswith("Simulated answer"), summary
    code, usage, _ = await switchyard(
        "usage", "--address", gateway.address, env={"SWITCHYARD_API_KEY": key}
    )
    assert code == 0 and "caller     search" in usage and "requests   1 (0 failed)" in usage
    assert "budget     day: $0.000" in usage and "of $20.000000000" in usage
    listing = await admin(gateway, "keys", "list")
    key_id = KEY_SHAPE.fullmatch(key)[1]  # type: ignore[index]
    assert key_id in listing and "search-prod" in listing and "active" in listing
    assert key.split("-", 2)[2] not in listing  # the secret is never listed
    as_json = json.loads(await admin(gateway, "keys", "list", "--json", "--tenant", "search"))
    assert as_json["keyId"] == key_id and "secret" not in json.dumps(as_json).lower()


async def test_without_a_valid_key_every_call_is_unauthenticated_saying_why(gateway: Gateway):
    await admin(gateway, "tenants", "create", "search")
    key = await new_key(gateway, "search")
    cases = {
        (): "needs an API key",
        bearer("sk-proj-123"): "not a Switchyard key",
        (("authorization", "Token abc"),): "must read `Bearer sy-",
        bearer(key[:-1] + ("A" if key[-1] != "A" else "B")): "no such key, or a wrong secret",
        bearer("sy-ffffffffffff-" + "A" * 43): "no such key, or a wrong secret",
    }
    for metadata, says in cases.items():
        error = await refusal(
            gateway.stub.Query(pb.QueryRequest(query=query(SIMPLE)), metadata=metadata)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert says in details(error) and "search" not in details(error)
        route = gateway.stub.Route(pb.RouteRequest(query=query(SIMPLE)), metadata=metadata)
        usage = gateway.stub.GetUsage(pb.GetUsageRequest(), metadata=metadata)
        for failed in (await refusal(route), await refusal(usage)):
            assert failed.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await call(gateway, key)).model == "gemini-2.5-flash"


async def test_health_and_reflection_answer_without_a_key(gateway: Gateway):
    health = health_pb2_grpc.HealthStub(gateway.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    stream = reflection.ServerReflectionInfo()
    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await stream.read()
    await stream.done_writing()
    names = {service.name for service in listed.list_services_response.service}
    assert {"switchyard.v1.GatewayService", "switchyard.admin.v1.AdminService"} <= names


async def test_rotation_keeps_the_key_id_and_the_old_secret_only_through_the_grace(
    gateway: Gateway,
):
    await admin(gateway, "tenants", "create", "search")
    old = await new_key(gateway, "search")
    key_id = KEY_SHAPE.fullmatch(old)[1]  # type: ignore[index]
    code, out, err = await switchyard(
        "keys", "rotate", key_id, "--grace", "2s", "--address", gateway.address,
        env={"SWITCHYARD_ADMIN_KEY": ADMIN_KEY},
    )  # fmt: skip
    assert code == 0 and "the old secret works until" in err
    new = out.strip()
    SCAN.secret(new)
    assert KEY_SHAPE.fullmatch(new)[1] == key_id and new != old  # type: ignore[index]
    assert (await call(gateway, old)).model and (await call(gateway, new)).model
    rotated_at = time.monotonic()

    async def old_refused() -> bool:
        try:
            await call(gateway, old)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            return True
        return False

    await until(old_refused, within=10)
    assert time.monotonic() - rotated_at >= 1.5  # it worked through (most of) its grace
    assert (await call(gateway, new)).model == "gemini-2.5-flash"


async def test_an_expired_key_is_refused_saying_it_expired(gateway: Gateway):
    await admin(gateway, "tenants", "create", "search")
    key = await new_key(gateway, "search", "--expires", "1s")
    assert (await call(gateway, key)).model

    async def expired() -> bool:
        try:
            await call(gateway, key)
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in details(error)
        return False

    await until(expired, within=KEY_CACHE_TTL + 3)


async def test_a_revocation_reaches_a_second_replica_within_5_s(
    start_gateway: StartGateway, postgres_url: str
):
    shared = {**AUTH, "SWITCHYARD_DATABASE_URL": postgres_url}
    first = await start_gateway(env=shared)
    second = await start_gateway(env=shared)
    await admin(first, "tenants", "create", "search")
    key = await new_key(first, "search")
    assert (await call(second, key)).model  # the second replica knows the key now (cached)
    key_id = KEY_SHAPE.fullmatch(key)[1]  # type: ignore[index]
    await admin(first, "keys", "revoke", key_id)
    revoked_at = time.monotonic()
    error = await refusal(call(first, key))  # the replica that revoked: at once
    assert "was revoked" in details(error)

    async def refused_on_second() -> bool:
        try:
            await call(second, key)
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    await until(refused_on_second, within=KEY_CACHE_TTL + 2)
    assert time.monotonic() - revoked_at <= KEY_CACHE_TTL + 0.5


async def test_a_spoofed_caller_header_changes_neither_the_tenant_charged_nor_the_usage_read(
    gateway: Gateway,
):
    await admin(gateway, "tenants", "create", "search")
    await admin(gateway, "tenants", "create", "billing")
    key = await new_key(gateway, "search")
    spoof = ("x-switchyard-caller", "billing")
    answer = await call(gateway, key, spoof)
    usage = await gateway.stub.GetUsage(pb.GetUsageRequest(), metadata=bearer(key, spoof))
    assert usage.caller == "search" and usage.requests == 1
    assert nanos(usage.cost) == nanos(answer.cost) > 0
    billing = await gateway.stub.GetUsage(
        pb.GetUsageRequest(caller="billing"), metadata=bearer(ADMIN_KEY)
    )
    assert billing.caller == "billing" and billing.requests == 0
    error = await refusal(
        gateway.stub.GetUsage(pb.GetUsageRequest(caller="billing"), metadata=bearer(key))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "only the admin credential" in details(error)
    pages = gateway.stub.ExportUsage(
        pb.ExportUsageRequest(start=Timestamp(seconds=int(time.time()) - 60), caller="search"),
        metadata=bearer(ADMIN_KEY),
    )
    calls = [record async for page in pages for record in page.calls]
    assert [(c.caller, c.end_user, c.key_id) for c in calls] == [
        ("search", "billing", KEY_SHAPE.fullmatch(key)[1])  # type: ignore[index]
    ]


async def test_the_allowlist_refuses_other_models_and_routes_among_the_allowed(gateway: Gateway):
    await admin(gateway, "tenants", "create", "search", "--models", "deepseek-v3.2")
    key = await new_key(gateway, "search")
    error = await refusal(call(gateway, key, model="gpt-4.1"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may use only: deepseek-v3.2" in details(error)
    route = await gateway.stub.Route(
        pb.RouteRequest(query=query("Write a poem", task=pb.TASK_CREATIVE)), metadata=bearer(key)
    )
    assert route.route.model == "deepseek-v3.2" and not route.route.fallback_models
    assert "may not use gpt-4.1" in route.route.reason  # CREATIVE's default, served by others
    simple = await gateway.stub.Route(pb.RouteRequest(query=query(SIMPLE)), metadata=bearer(key))
    assert simple.route.model == "deepseek-v3.2"  # no allowed model serves FAST: its own
    assert "may use none of the models that serve FAST" in simple.route.reason
    answer = await call(gateway, key)
    assert answer.model == "deepseek-v3.2"


async def test_a_tenants_own_limits_and_budget_apply_to_it_alone(gateway: Gateway):
    await admin(gateway, "tenants", "create", "small", "--rpm", "2")
    await admin(gateway, "tenants", "create", "broke", "--daily-budget", "0.000001")
    await admin(gateway, "tenants", "create", "free")
    small, broke, free = [await new_key(gateway, t) for t in ("small", "broke", "free")]
    await call(gateway, small)
    await call(gateway, small)
    error = await refusal(
        gateway.stub.Query(pb.QueryRequest(query=query(SIMPLE)), metadata=bearer(small), timeout=2)
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the request budget of tenant 'small'" in details(error)
    error = await refusal(call(gateway, broke))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "budget" in details(error)
    for _ in range(3):
        assert (await call(gateway, free)).model


async def test_labels_of_the_tenant_are_added_to_its_calls(gateway: Gateway):
    await admin(gateway, "tenants", "create", "search", "--label", "cost-center=42")
    key = await new_key(gateway, "search")
    await call(gateway, key)
    pages = gateway.stub.ExportUsage(
        pb.ExportUsageRequest(start=Timestamp(seconds=int(time.time()) - 60)), metadata=bearer(key)
    )
    calls = [record async for page in pages for record in page.calls]
    assert [dict(c.labels) for c in calls] == [{"cost-center": "42"}]


async def test_the_admin_api_takes_the_admin_credential_only(gateway: Gateway):
    stub = admin_pb2_grpc.AdminServiceStub(gateway.channel)
    error = await refusal(stub.ListTenants(admin_pb2.ListTenantsRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    await admin(gateway, "tenants", "create", "search")
    key = await new_key(gateway, "search")
    error = await refusal(stub.ListTenants(admin_pb2.ListTenantsRequest(), metadata=bearer(key)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call the admin API" in details(error)
    code, _, err = await switchyard(
        "tenants", "list", "--address", gateway.address, env={"SWITCHYARD_API_KEY": key}
    )
    assert code == 7 and "PERMISSION_DENIED" in err
    operator = await new_key(gateway, "search", "--admin")
    listed = await stub.ListTenants(admin_pb2.ListTenantsRequest(), metadata=bearer(operator))
    assert [t.name for t in listed.tenants] == ["search"]


async def test_admin_mistakes_get_precise_statuses(gateway: Gateway):
    async def run(*args: str) -> tuple[int, str]:
        code, _, err = await switchyard(
            *args, "--address", gateway.address, env={"SWITCHYARD_ADMIN_KEY": ADMIN_KEY}
        )
        return code, err

    await admin(gateway, "tenants", "create", "search")
    assert (await run("tenants", "create", "search"))[0] == 6  # ALREADY_EXISTS
    code, err = await run("tenants", "create", "x", "--models", "gpt-5-imaginary")
    assert code == 3 and "not served" in err  # INVALID_ARGUMENT naming the served models
    assert (await run("tenants", "delete", "ghost"))[0] == 5  # NOT_FOUND
    assert (await run("keys", "create", "--tenant", "ghost"))[0] == 5
    assert (await run("keys", "revoke", "ffffffffffff"))[0] == 5
    code, err = await run("tenants", "create", "admin")
    assert code == 3 and "reserved" in err
    key = await new_key(gateway, "search")
    key_id = KEY_SHAPE.fullmatch(key)[1]  # type: ignore[index]
    await admin(gateway, "keys", "revoke", key_id)
    code, err = await run("keys", "rotate", key_id)
    assert code == 9 and "make a new key" in err  # FAILED_PRECONDITION
    code, err = await run("tenants", "create", "y", "--daily-budget", "lots")
    assert code == 64 and "not an amount of dollars" in err
    code, err = await run("keys", "create", "--tenant", "search", "--expires", "soon")
    assert code == 64 and "not a duration" in err


async def test_deleting_a_tenant_revokes_its_keys(gateway: Gateway):
    await admin(gateway, "tenants", "create", "search")
    key = await new_key(gateway, "search")
    await call(gateway, key)
    await admin(gateway, "tenants", "delete", "search")
    error = await refusal(call(gateway, key))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details(error)


async def test_failed_attempts_from_one_address_are_throttled_with_retry_info(
    start_gateway: StartGateway,
):
    gateway = await start_gateway(env={**AUTH, "SWITCHYARD_AUTH_FAILURE_LIMIT": "3"})
    bad = bearer("sy-ffffffffffff-" + "A" * 43)
    for _ in range(3):
        error = await refusal(call_raw(gateway, bad))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refusal(call_raw(gateway, bad))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many failed authentications" in details(error)
    status = next(
        status_pb2.Status.FromString(value)
        for key, value in error.trailing_metadata() or ()
        if key == "grpc-status-details-bin" and isinstance(value, bytes)
    )
    info = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    assert 0 < info.retry_delay.seconds <= 60


async def test_the_admin_api_without_gateway_auth_keeps_the_configured_failure_limit(
    start_gateway: StartGateway,
):
    # SWITCHYARD_AUTH=none: the admin API has a throttle of its own, at the configured limit.
    gateway = await start_gateway(
        env={"SWITCHYARD_ADMIN_KEY": ADMIN_KEY, "SWITCHYARD_AUTH_FAILURE_LIMIT": "2"}
    )
    stub = admin_pb2_grpc.AdminServiceStub(gateway.channel)
    wrong = bearer("adm-" + "x" * 43)
    for _ in range(2):
        error = await refusal(stub.ListTenants(admin_pb2.ListTenantsRequest(), metadata=wrong))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refusal(stub.ListTenants(admin_pb2.ListTenantsRequest(), metadata=wrong))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many failed authentications" in details(error)


def call_raw(gateway: Gateway, metadata: tuple[tuple[str, str], ...]):
    return gateway.stub.Query(pb.QueryRequest(query=query(SIMPLE)), metadata=metadata)


async def test_a_gateway_on_a_non_loopback_address_without_auth_refuses_to_start():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        env={"PATH": "/usr/bin:/bin", "SWITCHYARD_LISTEN": "0.0.0.0:0"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert b"SWITCHYARD_AUTH" in err and b"SWITCHYARD_AUTH=none" in err
