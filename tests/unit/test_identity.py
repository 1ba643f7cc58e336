"""Who is calling: the resolvers, alone, over an in-memory directory and a fake clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from server.domain import Identity, TenantPolicy
from server.errors import AuthenticationError, AuthThrottledError, InvalidRequestError
from server.identity import (
    FAILED_WINDOW,
    KEY_CACHE_TTL,
    ApiKeyResolver,
    CallerHeaderResolver,
    FailureThrottle,
    MtlsResolver,
    peer_address,
)
from server.keys import ApiKey, digest, new_secret, token
from server.state.directory import Tenant
from server.state.memory import MemoryDirectory
from tests.helpers import FakeClock

ADMIN_KEY = "a" * 40
POLICY = TenantPolicy(rpm=10, models=frozenset({"gpt-4.1"}), labels={"team": "search"})


@dataclass
class Context:
    """The parts of a grpc.aio ServicerContext a resolver reads."""

    metadata: tuple[tuple[str, str], ...] = ()
    address: str = "ipv4:10.0.0.1:5555"
    auth: Mapping[str, Iterable[bytes]] = field(default_factory=dict)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def peer(self) -> str:
        return self.address

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self.auth


def bearer(credential: str, *extra: tuple[str, str], peer: str = "ipv4:10.0.0.1:5555") -> Context:
    return Context((("authorization", f"Bearer {credential}"), *extra), peer)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def directory(clock: FakeClock) -> MemoryDirectory:
    directory = MemoryDirectory()
    await directory.create_tenant(Tenant("search", POLICY, ("spiffe://example.org/sa/search",)))
    return directory


async def add_key(
    directory: MemoryDirectory, clock: FakeClock, key_id: str = "0123456789ab", **fields: object
) -> str:
    secret = new_secret()
    key = ApiKey(key_id, "search", "prod", digest(secret), created_at=clock.wall(), **fields)  # type: ignore[arg-type]
    await directory.add_key(key)
    return token(key_id, secret)


@pytest.fixture
def resolver(directory: MemoryDirectory, clock: FakeClock) -> ApiKeyResolver:
    return ApiKeyResolver(directory, ADMIN_KEY, clock)


async def test_a_valid_key_is_its_tenant_under_its_policy(resolver, directory, clock):
    secret = await add_key(directory, clock)
    identity = await resolver.resolve(bearer(secret, ("x-switchyard-caller", "billing")))
    assert identity == Identity(
        "search", key_id="0123456789ab", user="billing", policy=POLICY, admin=False
    )


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ((), "needs an API key"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must read `Bearer sy-"),
        ((("authorization", "Bearer"),), "must read `Bearer sy-"),
        ((("authorization", "Bearer sk-live-123"),), "not a Switchyard key"),
        ((("authorization", "Bearer sy-0123456789ab-" + "A" * 43),), "no such key, or a wrong"),
        ((("authorization", "Bearer sy-ffffffffffff-" + "A" * 43),), "no such key, or a wrong"),
    ],
)
async def test_each_refusal_says_what_is_wrong_and_never_which_keys_exist(
    resolver, directory, clock, metadata, says
):
    await add_key(directory, clock)
    with pytest.raises(AuthenticationError, match=says) as refused:
        await resolver.resolve(Context(metadata))
    assert "search" not in refused.value.message  # no tenant named to a stranger


async def test_revoked_and_expired_are_said_only_to_the_holder_of_the_secret(
    resolver, directory, clock
):
    expiring = await add_key(directory, clock, "00000000000e", expires_at=clock.wall() + 60)
    revoked = await add_key(directory, clock, "00000000000f")
    await directory.revoke_key("00000000000f", clock.wall())
    with pytest.raises(AuthenticationError, match=r"sy-00000000000f-\.\.\. was revoked at 20"):
        await resolver.resolve(bearer(revoked))
    wrong = revoked[:-4] + ("AAAA" if not revoked.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationError, match="no such key, or a wrong secret"):
        await resolver.resolve(bearer(wrong))
    assert (await resolver.resolve(bearer(expiring))).tenant == "search"
    clock.advance(60)
    with pytest.raises(AuthenticationError, match=r"sy-00000000000e-\.\.\. expired at"):
        await resolver.resolve(bearer(expiring))


async def test_a_revocation_elsewhere_is_seen_within_the_cache_bound(resolver, directory, clock):
    secret = await add_key(directory, clock)
    await resolver.resolve(bearer(secret))
    await directory.revoke_key("0123456789ab", clock.wall())  # another replica's admin call
    clock.advance(KEY_CACHE_TTL - 0.01)
    assert (await resolver.resolve(bearer(secret))).tenant == "search"  # cached, within 5 s
    clock.advance(0.01)
    with pytest.raises(AuthenticationError, match="was revoked"):
        await resolver.resolve(bearer(secret))


async def test_forget_drops_a_key_from_the_cache_at_once(resolver, directory, clock):
    secret = await add_key(directory, clock)
    await resolver.resolve(bearer(secret))
    await directory.revoke_key("0123456789ab", clock.wall())
    resolver.forget("0123456789ab")
    with pytest.raises(AuthenticationError, match="was revoked"):
        await resolver.resolve(bearer(secret))


async def test_a_rotated_key_accepts_both_secrets_through_the_grace(resolver, directory, clock):
    old = await add_key(directory, clock)
    new_secret_ = new_secret()
    await directory.rotate_key("0123456789ab", digest(new_secret_), clock.wall() + 10, clock.wall())
    new = token("0123456789ab", new_secret_)
    resolver.forget()
    assert (await resolver.resolve(bearer(old))).key_id == "0123456789ab"
    assert (await resolver.resolve(bearer(new))).key_id == "0123456789ab"
    clock.advance(10)
    with pytest.raises(AuthenticationError, match="wrong secret"):
        await resolver.resolve(bearer(old))
    assert (await resolver.resolve(bearer(new))).tenant == "search"


async def test_the_admin_key_is_the_admin_and_nothing_else_is(resolver, directory, clock):
    identity = await resolver.resolve(bearer(ADMIN_KEY))
    assert identity.admin and identity.tenant == "admin"
    with pytest.raises(AuthenticationError):
        await resolver.resolve(bearer(ADMIN_KEY[:-1]))
    secret = await add_key(directory, clock)
    assert not (await resolver.resolve(bearer(secret))).admin
    admin_key = await add_key(directory, clock, "0000000000ad", admin=True)
    assert (await resolver.resolve(bearer(admin_key))).admin


async def test_a_peer_that_keeps_failing_is_throttled_but_known_keys_still_pass(directory, clock):
    resolver = ApiKeyResolver(directory, "", clock, FailureThrottle(clock, limit=3))
    good = await add_key(directory, clock)
    await resolver.resolve(bearer(good))  # seen lately: a caller sharing the balancer's address
    bad = "sy-ffffffffffff-" + "A" * 43
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await resolver.resolve(bearer(bad))
    with pytest.raises(AuthThrottledError, match="too many failed") as throttled:
        await resolver.resolve(bearer(bad))
    assert throttled.value.retry_after == pytest.approx(FAILED_WINDOW)
    with pytest.raises(AuthThrottledError):
        await resolver.resolve(Context())  # no key at all: throttled too
    assert (await resolver.resolve(bearer(good))).tenant == "search"
    other = await resolver.resolve(bearer(good, peer="ipv4:10.0.0.2:1"))
    assert other.tenant == "search"
    with pytest.raises(AuthenticationError):  # another address is not throttled
        await resolver.resolve(bearer(bad, peer="ipv4:10.0.0.2:1"))
    clock.advance(FAILED_WINDOW)
    with pytest.raises(AuthenticationError):  # the window passed: refused, not throttled
        await resolver.resolve(bearer(bad))


async def test_a_throttle_of_zero_never_throttles(directory, clock):
    resolver = ApiKeyResolver(directory, "", clock, FailureThrottle(clock, limit=0))
    for _ in range(50):
        with pytest.raises(AuthenticationError):
            await resolver.resolve(Context())


def test_peer_addresses_drop_the_port():
    assert peer_address("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert peer_address("ipv6:[::1]:5000") == "::1"
    assert peer_address("unix:/tmp/socket") == "unix:/tmp/socket"


async def test_callers_name_themselves_without_auth():
    resolver = CallerHeaderResolver()
    assert await resolver.resolve(Context()) == Identity("anonymous")
    named = await resolver.resolve(Context((("x-switchyard-caller", "billing"),)))
    assert named == Identity("billing") and named.policy is None
    with pytest.raises(InvalidRequestError, match="printable"):
        await resolver.resolve(Context((("x-switchyard-caller", "x" * 129),)))


async def test_a_client_certificate_identity_is_its_tenant(directory, clock):
    resolver = MtlsResolver(directory, clock)
    spiffe = {"peer_spiffe_id": [b"spiffe://example.org/sa/search"]}
    identity = await resolver.resolve(Context((("x-switchyard-caller", "batch-job"),), auth=spiffe))
    assert identity == Identity("search", user="batch-job", policy=POLICY)
    by_dns = {"peer_dns": [b"nobody.example.org", b"search.prod.svc"]}
    await directory.update_tenant(
        Tenant("search", POLICY, ("spiffe://example.org/sa/search", "search.prod.svc"))
    )
    assert (await resolver.resolve(Context(auth=by_dns))).tenant == "search"
    with pytest.raises(AuthenticationError, match="carried none"):
        await resolver.resolve(Context())
    with pytest.raises(AuthenticationError, match=r"'spiffe://example\.org/sa/other'.*tenants"):
        await resolver.resolve(Context(auth={"peer_spiffe_id": [b"spiffe://example.org/sa/other"]}))
