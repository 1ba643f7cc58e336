"""Who is calling: the one place a call's credentials become an `Identity`.

The RPC boundary (``server/boundary.py``) asks the resolver once per RPC,
before any handler runs; everything below it sees only the typed `Identity`
(tenant, key id, end-user label, the tenant's policy) and never reads
metadata. `SWITCHYARD_AUTH` picks the resolver (`resolver_for`):

* `none` (the default on a loopback address): the caller names itself in
  `x-switchyard-caller`, or is "anonymous"; nothing is checked. Its budgets
  are the TOML file's [budgets]; it has no limits or allowlist of its own.
* `api_key`: `authorization: Bearer sy-<key id>-<secret>`, checked against the
  directory (``server/state/directory.py``) through a cache whose entries live
  `KEY_CACHE_TTL` seconds, so a revocation reaches every replica within that.
  `x-switchyard-caller` is then only an end-user label, recorded, never trusted.
* `mtls`: the client certificate's SPIFFE ID (URI SAN), else its DNS names,
  bound to a tenant in the directory.

Refusals are UNAUTHENTICATED and say what is wrong (no key, not a Switchyard
key, unknown or wrong secret, revoked, expired) and never which keys exist:
revoked and expired are said only to a caller who holds the secret. A peer
that fails `failure_limit` times (SWITCHYARD_AUTH_FAILURE_LIMIT, 10) in
`FAILED_WINDOW` seconds is refused with RESOURCE_EXHAUSTED until the window
has passed, before any unseen key is looked up; keys this replica has seen
lately still pass, so callers sharing a load balancer's address are not
locked out by one of them.
No secret is ever logged, kept in an error, or shown in a `repr`.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Protocol

from server.clock import SYSTEM_CLOCK, Clock
from server.domain import Identity
from server.errors import AuthenticationError, AuthThrottledError, InvalidRequestError
from server.keys import ApiKey, matches, parse
from server.settings import Settings
from server.state.directory import Directory, Tenant

CALLER_HEADER = "x-switchyard-caller"
AUTHORIZATION = "authorization"
ANONYMOUS = "anonymous"
ADMIN_TENANT = "admin"  # whose spend the admin credential's own calls are, if it makes any
MAX_CALLER_LENGTH = 128
KEY_CACHE_TTL = 5.0  # seconds a looked-up key is trusted before it is read again
KEY_CACHE_SIZE = 10_000
FAILED_LIMIT = 10  # failed authentications a peer may make in FAILED_WINDOW seconds
FAILED_WINDOW = 60.0
_PEERS_KEPT = 10_000

Metadata = Iterable[tuple[str, str | bytes]]
_ANONYMOUS = Identity(ANONYMOUS)


class CallerContext(Protocol):
    """What a resolver may read of an RPC (grpc.aio's ServicerContext has it all)."""

    def invocation_metadata(self) -> Metadata | None:
        """The call's metadata."""
        ...

    def peer(self) -> str:
        """The caller's address, as gRPC names it (ipv4:1.2.3.4:5678)."""
        ...

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        """The transport's view of the caller (the client certificate's names)."""
        ...


class IdentityResolver(Protocol):
    """Turns an RPC's credentials into an Identity, or refuses the call."""

    async def resolve(self, context: CallerContext) -> Identity:
        """Who is calling; raises a SwitchyardError (with its status) to refuse."""
        ...


def caller_label(metadata: Metadata) -> str | None:
    """The `x-switchyard-caller` value (validated), or None."""
    for key, value in metadata:
        if key == CALLER_HEADER:
            caller = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if not caller or len(caller) > MAX_CALLER_LENGTH or not caller.isprintable():
                raise InvalidRequestError(
                    f"metadata {CALLER_HEADER} must be 1 to {MAX_CALLER_LENGTH} printable"
                    " characters naming the calling service"
                )
            return caller
    return None


class CallerHeaderResolver:
    """The caller names itself in `x-switchyard-caller`; no credential is checked.

    Its tenant has no policy of its own: the TOML file's [budgets] apply.
    """

    __slots__ = ()

    async def resolve(self, context: CallerContext) -> Identity:
        """The tenant named by the metadata, or "anonymous"."""
        caller = caller_label(context.invocation_metadata() or ())
        return _ANONYMOUS if caller is None else Identity(caller)


class FailureThrottle:
    """Counts failed authentications per peer address; past `limit` a window, it is throttled.

    A throttled peer is refused before its key is looked up, unless the key is
    one this replica has seen lately (see ApiKeyResolver): behind a load
    balancer every caller shares its address, and one caller's bad key must
    not lock the others out. `limit` 0 counts nothing.
    """

    __slots__ = ("_clock", "_failures", "_limit")

    def __init__(self, clock: Clock = SYSTEM_CLOCK, limit: int = FAILED_LIMIT) -> None:
        self._clock = clock
        self._limit = limit
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, peer: str) -> float | None:
        """Seconds until `peer` may fail again, or None when it is not throttled."""
        failures = self._failures.get(peer)
        if failures is None or len(failures) < self._limit or not self._limit:
            return None
        now = self._clock.monotonic()
        while failures and failures[0] <= now - FAILED_WINDOW:
            failures.popleft()
        if len(failures) < self._limit:
            return None
        return max(failures[0] + FAILED_WINDOW - now, 0.1)

    def check(self, peer: str) -> None:
        """Raise AuthThrottledError when `peer` has failed too often lately."""
        wait = self.wait(peer)
        if wait is not None:
            raise self.refusal(wait)

    def refusal(self, wait: float) -> AuthThrottledError:
        """The RESOURCE_EXHAUSTED a throttled peer gets, with its RetryInfo."""
        return AuthThrottledError(
            f"too many failed authentications from this address ({self._limit} in"
            f" {FAILED_WINDOW:g} s); retry in {wait:.0f} s with a valid key",
            wait,
        )

    def failed(self, peer: str) -> None:
        """Count one failure of `peer`."""
        if not self._limit:
            return
        failures = self._failures.get(peer)
        if failures is None:
            failures = self._failures[peer] = deque(maxlen=self._limit)
            if len(self._failures) > _PEERS_KEPT:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(peer)
        failures.append(self._clock.monotonic())


def peer_address(peer: str) -> str:
    """The address of a gRPC peer string, without its port (ipv4:1.2.3.4:5 -> 1.2.3.4)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]") if "]" in rest else rest.rsplit(":", 1)[0]
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    return peer


class _Cached:
    __slots__ = ("at", "key", "tenant")

    def __init__(self, at: float, key: ApiKey | None, tenant: Tenant | None) -> None:
        self.at = at
        self.key = key
        self.tenant = tenant


class ApiKeyResolver:
    """`authorization: Bearer sy-...` checked against the directory (see the module docstring).

    The admin credential (SWITCHYARD_ADMIN_KEY) is accepted too, as an admin
    identity: it may read any tenant's usage and call the admin API.
    """

    __slots__ = ("_admin_key", "_cache", "_clock", "_directory", "_throttle")

    def __init__(
        self,
        directory: Directory,
        admin_key: str = "",
        clock: Clock = SYSTEM_CLOCK,
        throttle: FailureThrottle | None = None,
    ) -> None:
        self._directory = directory
        self._admin_key = admin_key.encode()
        self._clock = clock
        self._throttle = throttle or FailureThrottle(clock)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()

    def forget(self, key_id: str | None = None) -> None:
        """Drop a key (or every key) from the cache: the admin API changed it here."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    async def resolve(self, context: CallerContext) -> Identity:
        """The key's tenant, or UNAUTHENTICATED (RESOURCE_EXHAUSTED for a throttled peer)."""
        peer = peer_address(context.peer())
        metadata = tuple(context.invocation_metadata() or ())
        presented = None
        for name, value in metadata:
            if name == AUTHORIZATION:
                presented = value if isinstance(value, str) else value.decode("latin-1")
                break
        if presented is None:
            raise self._refuse(
                peer,
                "this gateway needs an API key: send metadata `authorization: Bearer"
                " sy-...`, the key `switchyard keys create` printed",
            )
        scheme, _, credential = presented.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise self._refuse(
                peer, "the authorization metadata must read `Bearer sy-<key id>-<secret>`"
            )
        if self._admin_key and hmac.compare_digest(credential.encode(), self._admin_key):
            return Identity(ADMIN_TENANT, user=caller_label(metadata), admin=True)
        parsed = parse(credential)
        if parsed is None:
            raise self._refuse(
                peer,
                "the API key is not a Switchyard key (they read sy-<key id>-<secret>);"
                " check that the whole key was sent",
            )
        key_id, secret = parsed
        if key_id not in self._cache:  # a throttled peer gets no lookup of an unseen key
            self._throttle.check(peer)
        found = await self._lookup(key_id)
        key, tenant = found.key, found.tenant
        now = self._clock.wall()
        if key is None or not matches(key, secret, now):
            raise self._refuse(
                peer,
                "the API key is not valid (no such key, or a wrong secret); use the key"
                " exactly as `switchyard keys create` or `rotate` printed it",
            )
        state = key.state(now)
        if state != "active" or tenant is None:
            when = key.revoked_at if state == "revoked" else key.expires_at
            done = "was revoked" if state != "expired" else "expired"
            at = "" if when is None else f" at {_iso(when)}"
            raise self._refuse(
                peer,
                f"the API key sy-{key_id}-... {done}{at}; ask the operator for a new one",
            )
        return Identity(
            tenant.name,
            key_id=key_id,
            user=caller_label(metadata),
            policy=tenant.policy,
            admin=key.admin,
        )

    async def _lookup(self, key_id: str) -> _Cached:
        now = self._clock.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached.at < KEY_CACHE_TTL:
            return cached
        key = await self._directory.key(key_id)
        tenant = None if key is None else await self._directory.tenant(key.tenant)
        cached = self._cache[key_id] = _Cached(now, key, tenant)
        self._cache.move_to_end(key_id)
        if len(self._cache) > KEY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return cached

    def _refuse(self, peer: str, message: str) -> AuthenticationError | AuthThrottledError:
        """The refusal, counted; a peer already throttled is told to wait instead."""
        wait = self._throttle.wait(peer)
        if wait is not None:
            return self._throttle.refusal(wait)
        self._throttle.failed(peer)
        return AuthenticationError(message)


class MtlsResolver:
    """The client certificate's SPIFFE ID (else a DNS name) bound to a tenant."""

    __slots__ = ("_cache", "_clock", "_directory")

    def __init__(self, directory: Directory, clock: Clock = SYSTEM_CLOCK) -> None:
        self._directory = directory
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Tenant | None]] = OrderedDict()

    async def resolve(self, context: CallerContext) -> Identity:
        """The tenant of the certificate, or UNAUTHENTICATED naming what it carried."""
        auth = context.auth_context()
        names = [
            value.decode("utf-8", "replace")
            for field in ("peer_spiffe_id", "peer_uri", "peer_dns")
            for value in auth.get(field, ())
        ]
        if not names:
            raise AuthenticationError(
                "this gateway identifies callers by their client certificate, and the"
                " connection carried none; connect with a certificate its CA issued"
            )
        for name in dict.fromkeys(names):  # in order, once each
            tenant = await self._tenant(name)
            if tenant is not None:
                user = caller_label(context.invocation_metadata() or ())
                return Identity(tenant.name, key_id=None, user=user, policy=tenant.policy)
        raise AuthenticationError(
            f"no tenant is bound to the client certificate's identity {names[0]!r}; the"
            " operator binds it with `switchyard tenants update NAME --identity ...`"
        )

    async def _tenant(self, name: str) -> Tenant | None:
        now = self._clock.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < KEY_CACHE_TTL:
            return cached[1]
        tenant = await self._directory.tenant_for_identity(name)
        self._cache[name] = (now, tenant)
        if len(self._cache) > KEY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return tenant


def resolver_for(
    settings: Settings, directory: Directory, clock: Clock = SYSTEM_CLOCK
) -> IdentityResolver:
    """The resolver `SWITCHYARD_AUTH` asks for."""
    mode = settings.auth.effective_mode
    if mode == "api_key":
        throttle = FailureThrottle(clock, settings.auth.failure_limit)
        return ApiKeyResolver(directory, settings.auth.admin_key, clock, throttle)
    if mode == "mtls":
        return MtlsResolver(directory, clock)
    return CallerHeaderResolver()


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
