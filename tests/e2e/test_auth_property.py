"""Any `authorization` value at all, against the real gateway: UNAUTHENTICATED, never INTERNAL.

One gateway serves every example (the throttle of failed attempts is off, or
it would answer RESOURCE_EXHAUSTED after ten); the values are what gRPC lets
a client send as ASCII metadata: printable characters, shaped by hypothesis
from nothing at all to near-misses of a real key and of the admin key.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchyard.admin.v1 import admin_pb2, admin_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb

from tests.leaks import SCAN

from .conftest import Gateway, StartGateway, query

ADMIN_KEY = "adm-" + secrets.token_urlsafe(32)
SCAN.secret(ADMIN_KEY)
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
HEX = st.text(alphabet="0123456789abcdef", min_size=0, max_size=14)
SECRETISH = st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=50)


def values() -> st.SearchStrategy[str]:
    key = st.builds(lambda i, s: f"sy-{i}-{s}", HEX, SECRETISH)
    scheme = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "", "Bearer:"])
    spaced = st.builds(lambda a, b, c: f"{a}{b}{c}", scheme, st.sampled_from([" ", "  ", ""]), key)
    near_admin = st.builds(
        lambda cut, extra: f"Bearer {ADMIN_KEY[:cut]}{extra}",
        st.integers(0, len(ADMIN_KEY) - 1),
        st.text(alphabet=PRINTABLE, max_size=3),
    )
    return st.one_of(st.text(alphabet=PRINTABLE, max_size=200), spaced, near_admin)


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway(
        env={
            "SWITCHYARD_AUTH": "api_key",
            "SWITCHYARD_ADMIN_KEY": ADMIN_KEY,
            "SWITCHYARD_AUTH_FAILURE_LIMIT": "0",
        }
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one gateway for all
)
@given(value=values(), method=st.sampled_from(["Query", "Route", "GetUsage", "ListTenants"]))
async def test_any_authorization_value_is_unauthenticated_never_internal(
    gateway: Gateway, value: str, method: str
):
    metadata = (("authorization", value),)
    admin = admin_pb2_grpc.AdminServiceStub(gateway.channel)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "Query": lambda: gateway.stub.Query(pb.QueryRequest(query=query("hi")), metadata=metadata),
        "Route": lambda: gateway.stub.Route(pb.RouteRequest(query=query("hi")), metadata=metadata),
        "GetUsage": lambda: gateway.stub.GetUsage(pb.GetUsageRequest(), metadata=metadata),
        "ListTenants": lambda: admin.ListTenants(admin_pb2.ListTenantsRequest(), metadata=metadata),
    }
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await calls[method]()
    error = refused.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (value, error.details())
    text = error.details() or ""
    assert text and "Traceback" not in text and "request id" not in text
    assert ADMIN_KEY not in text
